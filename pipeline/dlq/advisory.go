package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Advisory subjects JetStream publishes (core NATS) for a consumer's message that hit
// MaxDeliver or was terminated; the tokens after the prefix are stream and consumer.
const (
	advisoryMaxDeliveries = sjs.AdvisoryMaxDeliveriesPrefix
	advisoryTerminated    = sjs.AdvisoryTerminatedPrefix
)

// AdvisoryStream keeps those advisories until a capture has handled them: the server only
// publishes them, so without a stream the ones sent while no capture runs would be lost. It is
// a work queue (a handled advisory is deleted), bounded by sjs.AdvisoryMaxMsgs and sjs.AdvisoryMaxAge.
const AdvisoryStream = sjs.StreamAdvisories

const (
	// advisoryRetry spaces attempts at an advisory whose capture failed (the DLQ stream
	// unavailable, say); it is retried until it succeeds.
	advisoryRetry = 10 * time.Second
)

// advisory is the part of JetStream's max_deliver and terminated advisories we use.
type advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

// CaptureParams describes a dead letter that CaptureAdvisories stored.
type CaptureParams struct {
	// Envelope is the stored dead letter.
	Envelope schemas.DeadLetterEnvelope
}

// Capture turns max-deliveries and terminated advisories into dead letters. Make one with
// Store.SubscribeAdvisories, then call Run.
type Capture struct {
	s     *Store
	cons  jetstream.Consumer
	onCap func(context.Context, CaptureParams) error
	w     *Writer

	// mu guards streams.
	mu      sync.Mutex
	streams map[string]jetstream.Stream
}

// SubscribeAdvisories makes sure the advisory stream (AdvisoryStream) keeps the
// max-deliveries and terminated advisories of Config.AdvisoryStreams, with the durable
// consumer captures share, as Config.Provision's mode allows (sources/jetstream.ProvisionAdvisories;
// conflicts are logged), and returns once both exist: every advisory published after it
// returns is captured, by this capture's Run or by any other's, even if none runs at the time.
// onCapture, when not nil, is called (serially, from Run) after each dead letter the capture
// stores — for example to count it against its job; its error is logged.
func (s *Store) SubscribeAdvisories(ctx context.Context, onCapture func(context.Context, CaptureParams) error) (*Capture, error) {
	a, err := sjs.ProvisionAdvisories(ctx, s.js, s.cfg.Provision, s.cfg.AdvisoryStreams)
	if err != nil {
		return nil, fmt.Errorf("advisory stream %s: %w", AdvisoryStream, err)
	}
	for _, c := range a.Report.Conflicts {
		s.log.Warn("advisory stream setting conflicts with what Sluice needs", "conflict", c.String())
	}
	cons := a.Consumer
	return &Capture{s: s, cons: cons, onCap: onCapture, w: NewWriter(s.js, s.name), streams: map[string]jetstream.Stream{}}, nil
}

// Run handles advisories until ctx ends, then returns nil, or the error that kept it from
// consuming. An advisory for a message that already has a dead letter (the worker dead-letters
// before it terminates) is ignored; otherwise the original message is read back from its
// stream by sequence and dead-lettered with class "exhausted" (max deliveries) or "transient"
// (terminated), deduplicated by the same Nats-Msg-Id the worker uses. An advisory is removed
// from AdvisoryStream once handled; one whose capture failed is logged and retried every 10 s.
func (c *Capture) Run(ctx context.Context) error {
	it, err := c.cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return fmt.Errorf("consume advisories: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return nil
			}
			c.s.log.Warn("consume advisories", "err", err)
			continue
		}
		if err := c.handle(ctx, m.Subject(), m.Data()); err != nil {
			if ctx.Err() != nil {
				_ = m.Nak()
				return nil
			}
			// The original stays in its stream: the reclaimer does not purge past an advisory
			// still waiting here (sources/jetstream.Reclaim).
			c.s.log.Error("could not capture advisory as a dead letter; the message is kept and the capture retried", "subject", m.Subject(), "retry_in", advisoryRetry, "err", err)
			_ = m.NakWithDelay(advisoryRetry)
			continue
		}
		_ = m.Ack()
	}
}

// CaptureAdvisories subscribes to the advisories and handles them until ctx ends
// (SubscribeAdvisories then Run). It blocks and returns nil when ctx ends. A failure to
// subscribe or consume (the broker away, a network cut: the JetStream API call times out) is
// logged and retried with backoff, up to 30 s apart: it once ended the whole worker process
// (issue 11), and the advisories wait in their stream meanwhile.
func (s *Store) CaptureAdvisories(ctx context.Context, onCapture func(context.Context, CaptureParams) error) error {
	delay := time.Second
	for {
		c, err := s.SubscribeAdvisories(ctx, onCapture)
		if err == nil {
			err = c.Run(ctx)
		}
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("advisory consumer stopped")
		}
		s.log.Warn("advisory capture not running; retrying", "retry_in", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		delay = min(2*delay, 30*time.Second)
	}
}

func (c *Capture) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	c.mu.Lock()
	st, ok := c.streams[name]
	c.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := c.s.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", name, err)
	}
	c.mu.Lock()
	c.streams[name] = st
	c.mu.Unlock()
	return st, nil
}

// handle captures one advisory. An advisory that cannot be understood is logged and dropped
// (retrying it cannot help); other errors are worth a retry.
func (c *Capture) handle(ctx context.Context, subject string, data []byte) error {
	var adv advisory
	if err := json.Unmarshal(data, &adv); err != nil || adv.Stream == "" || adv.StreamSeq == 0 {
		c.s.log.Error("dropping an advisory that names no stream message", "subject", subject, "type", adv.Type, "err", err)
		return nil
	}
	class, why := adv.classify(subject)
	id := adv.Stream + "-" + strconv.FormatUint(adv.StreamSeq, 10)
	have, err := c.s.locate(ctx, id)
	if err != nil {
		return fmt.Errorf("check for dead letter %s: %w", id, err)
	}
	if len(have) > 0 {
		return nil
	}
	st, err := c.stream(ctx, adv.Stream)
	if err != nil {
		return err
	}
	orig, err := st.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			c.s.log.Error("message hit max deliveries or was terminated but is no longer in its stream; no dead letter written",
				"stream", adv.Stream, "stream_seq", adv.StreamSeq, "consumer", adv.Consumer, "reason", why)
			return nil
		}
		return fmt.Errorf("read %s message %d: %w", adv.Stream, adv.StreamSeq, err)
	}
	env := adv.envelope(id, orig, class, why, time.Now().UTC())
	written, err := c.w.Write(ctx, env)
	if err != nil {
		return err
	}
	if written.Duplicate {
		return nil // the worker (or another capture) stored it first
	}
	env = written.Envelope
	c.s.log.Warn("captured dead letter from advisory", "dead_letter_id", id, "job_id", env.JobID,
		"stream_seq", adv.StreamSeq, "class", env.Error.Class, "consumer", adv.Consumer)
	if c.onCap != nil {
		if err := c.onCap(ctx, CaptureParams{Envelope: env}); err != nil {
			c.s.log.Warn("capture callback failed", "dead_letter_id", id, "err", err)
		}
	}
	return nil
}

// classify gives the class and the message of the dead letter for adv, which came on subject:
// a max-deliveries advisory is exhausted, a terminated one transient (with the consumer's
// reason when it gave one).
func (adv advisory) classify(subject string) (fault.Class, string) {
	if strings.HasPrefix(subject, advisoryMaxDeliveries) {
		return fault.Exhausted, fmt.Sprintf("delivered %d times to consumer %s without being acknowledged (max deliveries)", adv.Deliveries, adv.Consumer)
	}
	why := fmt.Sprintf("terminated by consumer %s after %d deliveries", adv.Consumer, adv.Deliveries)
	if adv.Reason != "" {
		why += ": " + adv.Reason
	}
	return fault.Transient, why
}

// envelope builds dead letter id for orig, the stream message adv is about, failed at now: the
// job, item, trace and replay count come from orig's headers.
func (adv advisory) envelope(id string, orig *jetstream.RawStreamMsg, class fault.Class, why string, now time.Time) schemas.DeadLetterEnvelope {
	// A command is stored under a partitioned subject; its dead letter names the one it was
	// published on, so a replay lands in the command stream again.
	origSubject := orig.Subject
	if adv.Stream == sjs.StreamCommands {
		origSubject = sjs.OriginalCommandSubject(origSubject)
	}
	env := schemas.DeadLetterEnvelope{
		ID:             id,
		Subject:        origSubject,
		Headers:        map[string][]string(orig.Header),
		Payload:        orig.Data,
		Error:          schemas.DeadLetterError{Class: string(class), Message: why},
		Attempts:       int(max(adv.Deliveries, 1)),
		FirstFailure:   now,
		LastFailure:    now,
		Stream:         adv.Stream,
		StreamSeq:      adv.StreamSeq,
		Consumer:       adv.Consumer,
		JobID:          orig.Header.Get(schemas.HeaderJob),
		DeadLetteredAt: now,
	}
	if tid, ok := schemas.TraceIDFromTraceparent(orig.Header.Get(schemas.HeaderTraceparent)); ok {
		env.TraceID = tid
	}
	if n, ok := schemas.ParseItem(orig.Header.Get(schemas.HeaderItem)); ok && env.JobID != "" {
		env.Item = &n
	}
	if n, err := strconv.Atoi(orig.Header.Get(HeaderReplay)); err == nil && n > 0 {
		env.Replays = n
	}
	return env
}
