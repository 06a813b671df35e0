package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// Advisory subjects JetStream publishes (core NATS, not persisted) for a consumer's message
// that hit MaxDeliver or was terminated; the tokens after the prefix are stream and consumer.
const (
	advisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
	advisoryTerminated    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."
)

// advisoryBuffer bounds the advisories waiting to be handled. When it is full the NATS client
// drops further advisories (a slow consumer) and reports it on the connection's error handler.
const advisoryBuffer = 4096

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
// Store.SubscribeAdvisories, then call Run (or Close to drop it unused).
type Capture struct {
	s     *Store
	ch    chan *nats.Msg
	subs  []*nats.Subscription
	once  sync.Once
	onCap func(context.Context, CaptureParams) error

	// mu guards streams.
	mu      sync.Mutex
	streams map[string]jetstream.Stream
}

// SubscribeAdvisories subscribes to the max-deliveries and terminated advisories of
// Config.AdvisoryStreams on the Store's connection, and returns once the server has the
// subscriptions, so advisories published after it returns are captured. onCapture, when not
// nil, is called (serially, from Run) after each dead letter the capture stores — for example to
// count it against its job; its error is logged. The caller must call Run or Close.
func (s *Store) SubscribeAdvisories(ctx context.Context, onCapture func(context.Context, CaptureParams) error) (*Capture, error) {
	nc := s.js.Conn()
	c := &Capture{s: s, ch: make(chan *nats.Msg, advisoryBuffer), onCap: onCapture, streams: map[string]jetstream.Stream{}}
	for _, stream := range s.cfg.AdvisoryStreams {
		for _, prefix := range []string{advisoryMaxDeliveries, advisoryTerminated} {
			sub, err := nc.ChanSubscribe(prefix+stream+".*", c.ch)
			if err != nil {
				c.Close()
				return nil, fmt.Errorf("subscribe to advisories %s%s.*: %w", prefix, stream, err)
			}
			c.subs = append(c.subs, sub)
		}
	}
	fctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(fctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("subscribe to advisories: flush: %w", err)
	}
	return c, nil
}

// Close drops the subscriptions. It is idempotent and safe for concurrent use; Run calls it.
func (c *Capture) Close() {
	c.once.Do(func() {
		for _, sub := range c.subs {
			_ = sub.Unsubscribe()
		}
	})
}

// Run handles advisories until ctx ends, then closes the subscriptions and returns nil. An
// advisory for a message that already has a dead letter (the worker dead-letters before it
// terminates) is ignored; otherwise the original message is read back from its stream by
// sequence and dead-lettered with class "exhausted" (max deliveries) or "transient"
// (terminated), deduplicated by the same Nats-Msg-Id the worker uses. Failures are logged and
// do not stop Run. Advisories are not persisted: those published while nothing runs are lost.
func (c *Capture) Run(ctx context.Context) error {
	defer c.Close()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-c.ch:
			if err := c.handle(ctx, m); err != nil && ctx.Err() == nil {
				c.s.log.Warn("could not capture advisory as a dead letter", "subject", m.Subject, "error", err)
			}
		}
	}
}

// CaptureAdvisories subscribes to the advisories and handles them until ctx ends
// (SubscribeAdvisories then Run). It blocks and returns nil when ctx ends, or the subscription
// error.
func (s *Store) CaptureAdvisories(ctx context.Context, onCapture func(context.Context, CaptureParams) error) error {
	c, err := s.SubscribeAdvisories(ctx, onCapture)
	if err != nil {
		return err
	}
	return c.Run(ctx)
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

// handle captures one advisory.
func (c *Capture) handle(ctx context.Context, m *nats.Msg) error {
	var adv advisory
	if err := json.Unmarshal(m.Data, &adv); err != nil {
		return fmt.Errorf("decode advisory: %w", err)
	}
	if adv.Stream == "" || adv.StreamSeq == 0 {
		return fmt.Errorf("advisory %q names no stream message", adv.Type)
	}
	var class fault.Class
	var why string
	switch {
	case len(m.Subject) > len(advisoryMaxDeliveries) && m.Subject[:len(advisoryMaxDeliveries)] == advisoryMaxDeliveries:
		class = fault.Exhausted
		why = fmt.Sprintf("delivered %d times to consumer %s without being acknowledged (max deliveries)", adv.Deliveries, adv.Consumer)
	default:
		class = fault.Transient
		why = fmt.Sprintf("terminated by consumer %s after %d deliveries", adv.Consumer, adv.Deliveries)
		if adv.Reason != "" {
			why += ": " + adv.Reason
		}
	}
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
				"stream", adv.Stream, "seq", adv.StreamSeq, "consumer", adv.Consumer, "reason", why)
			return nil
		}
		return fmt.Errorf("read %s message %d: %w", adv.Stream, adv.StreamSeq, err)
	}
	now := time.Now().UTC()
	env := schemas.DeadLetterEnvelope{
		ID:             id,
		Subject:        orig.Subject,
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
	body, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("encode dead letter %s: %w", id, err)
	}
	out := nats.NewMsg(schemas.DLQSubject(orig.Subject))
	out.Data = body
	out.Header.Set(nats.MsgIdHdr, "dlq/"+id)
	out.Header.Set(schemas.HeaderSchema, string(schemas.DeadLetter))
	if env.JobID != "" {
		out.Header.Set(schemas.HeaderJob, env.JobID)
	}
	out.Header.Set(HeaderErrorClass, env.Error.Class)
	ack, err := c.s.js.PublishMsg(ctx, out, jetstream.WithExpectStream(c.s.name))
	if err != nil {
		return fmt.Errorf("publish dead letter %s: %w", id, err)
	}
	if ack.Duplicate {
		return nil // the worker (or another capture) stored it first
	}
	c.s.log.Warn("captured dead letter from advisory", "id", id, "class", env.Error.Class, "consumer", adv.Consumer)
	if c.onCap != nil {
		if err := c.onCap(ctx, CaptureParams{Envelope: env}); err != nil {
			c.s.log.Warn("capture callback failed", "id", id, "error", err)
		}
	}
	return nil
}
