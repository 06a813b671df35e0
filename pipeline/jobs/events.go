package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Event is one entry of the change feed (stream sjs.StreamEvents).
type Event struct {
	// Seq is the entry's stream sequence: resume after it with Follow(ctx, Seq, …).
	Seq uint64 `json:"seq"`
	// Subject is sjs.MutationEventSubject(key) or sjs.JobEventSubject(id).
	Subject string `json:"subject"`
	// Type is the payload's "type": "mutation" (a MutationEvent) or "job" (a JobEvent).
	Type string `json:"type"`
	// Time is when the stream stored it.
	Time time.Time `json:"time"`
	// Data is the payload, a JSON object.
	Data json.RawMessage `json:"data"`
}

// JobEvent is the change-feed payload of a job's change, published on sjs.JobEventSubject.
type JobEvent struct {
	// Type is "job".
	Type string `json:"type"`
	Job  Job    `json:"job"`
}

// EventFeed reads the change feed. It is safe for concurrent use; each Follow has its own
// ordered consumer.
type EventFeed struct {
	js jetstream.JetStream
}

// NewEventFeed returns a feed over js (the stream comes from sjs.ProvisionCommands).
func NewEventFeed(js jetstream.JetStream) *EventFeed { return &EventFeed{js: js} }

// FeedFromNow, as Follow's since, follows only events stored from now on.
const FeedFromNow int64 = -1

const (
	// feedInactiveThreshold is how long the server keeps a feed's consumer after its client
	// stopped pulling, should the explicit delete at the end of Follow fail (broker away):
	// nats.go's default is 5 minutes, long enough for a stream of short requests to reach
	// the server's consumer limit. Follow pulls continuously, so a live feed never idles
	// this long.
	feedInactiveThreshold = 30 * time.Second
	// feedCreateTimeout bounds creating a feed's consumer, nats.go's default API timeout. The
	// create does not end with Follow's ctx (see Follow), so a client that leaves while the
	// broker is slow to answer holds its handler this long at most.
	feedCreateTimeout = 5 * time.Second
	// feedDeleteTimeout bounds deleting a feed's consumer when Follow ends.
	feedDeleteTimeout = 2 * time.Second
)

// Follow calls fn, from one goroutine, with every event whose sequence is above since (0:
// every event the stream still holds; FeedFromNow: only new ones), in stream order, until fn
// returns an error (which Follow returns) or ctx ends (ctx's error). Events older than the
// stream's retention (7 days) are gone; following resumes at the oldest one kept. It blocks.
func (f *EventFeed) Follow(ctx context.Context, since int64, fn func(Event) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{sjs.EventSubjects}, InactiveThreshold: feedInactiveThreshold}
	switch {
	case since < 0:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	case since == 0:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	default:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = uint64(since) + 1
	}
	if err := ctx.Err(); err != nil {
		return err // the client left before anything was created
	}
	// The create runs under its own deadline, not ctx: a create request cancelled in flight
	// (an HTTP client that drops its connection right after the response head) returns
	// context.Canceled here while the broker still creates the consumer, which nothing would
	// then delete until the server's InactiveThreshold. Completed, it is deleted below.
	cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), feedCreateTimeout)
	cons, err := f.js.OrderedConsumer(cctx, sjs.StreamEvents, cfg)
	ccancel()
	if err != nil {
		return fmt.Errorf("follow change feed: %w", err)
	}
	// Each Follow creates a server-side consumer; delete it as soon as the feed ends (the
	// ordered consumer's Stop only unsubscribes), whatever ended it.
	defer f.deleteConsumer(ctx, cons)
	if err := ctx.Err(); err != nil {
		return err // the client left while the consumer was being created
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("follow change feed: %w", err)
	}
	stopped := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			it.Stop()
		case <-stopped:
		}
	}()
	defer func() { close(stopped); <-done; it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow change feed: %w", err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("follow change feed: metadata: %w", err)
		}
		var head struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(m.Data(), &head)
		ev := Event{Seq: meta.Sequence.Stream, Subject: m.Subject(), Type: head.Type, Time: meta.Timestamp.UTC(), Data: json.RawMessage(m.Data())}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// deleteConsumer deletes the ordered consumer cons currently uses (an ordered consumer
// replaces its server-side consumer after a gap, so the name is read at the end). It waits at
// most feedDeleteTimeout, even after ctx ended; a failure leaves the consumer to the server's
// InactiveThreshold.
func (f *EventFeed) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || info.Name == "" {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), feedDeleteTimeout)
	defer cancel()
	_ = f.js.DeleteConsumer(dctx, sjs.StreamEvents, info.Name)
}

// ForwardJobEvents puts job progress on the change feed: it watches the jobs bucket
// (sjs.BucketJobs) and publishes every change of a job record as a JobEvent on
// sjs.JobEventSubject(id), until ctx ends (then it returns nil). Each event's Nats-Msg-Id is
// the record's revision, so several processes forwarding the same bucket store each change
// once (within the duplicate window). Changes made while no forwarder runs are not replayed.
// A publish that fails is logged by the caller through onErr (may be nil) and skipped.
func ForwardJobEvents(ctx context.Context, js jetstream.JetStream, jobs jetstream.KeyValue, onErr func(error)) error {
	w, err := jobs.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("forward job events: watch: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("forward job events: watcher stopped")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut || strings.Contains(e.Key(), ".") || !schemas.ValidKey(e.Key()) {
				continue // the initial-values marker, deletions, and the ".issues"/"idem." side keys
			}
			if err := publishJobEvent(ctx, js, e.Key(), e.Revision(), e.Value()); err != nil && onErr != nil && ctx.Err() == nil {
				onErr(err)
			}
		}
	}
}

// PublishJob puts job's current state on the change feed (sjs.JobEventSubject). It is the
// direct alternative to ForwardJobEvents for a caller that has the job at hand; rev, when not
// 0, deduplicates repeated publishes of the same revision. It blocks for the stream's ack.
func PublishJob(ctx context.Context, js jetstream.JetStream, job Job, rev uint64) error {
	raw, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode job %s: %w", job.JobID, err)
	}
	return publishJobEvent(ctx, js, job.JobID, rev, raw)
}

func publishJobEvent(ctx context.Context, js jetstream.JetStream, id string, rev uint64, record []byte) error {
	// The record may hold more than Job (its item sets); keep only Job's fields.
	var job Job
	if err := json.Unmarshal(record, &job); err != nil {
		return fmt.Errorf("decode job %s: %w", id, err)
	}
	body, err := json.Marshal(JobEvent{Type: "job", Job: job})
	if err != nil {
		return fmt.Errorf("encode job event %s: %w", id, err)
	}
	m := nats.NewMsg(sjs.JobEventSubject(id))
	m.Data = body
	if rev > 0 {
		m.Header.Set(nats.MsgIdHdr, "job/"+id+"/"+strconv.FormatUint(rev, 10))
	}
	for attempt := 1; ; attempt++ {
		_, err := js.PublishMsg(ctx, m)
		if err == nil {
			return nil
		}
		// Every worker forwards every revision under the same message id. On a replicated
		// stream, a publish that arrives while another worker's copy is still being
		// replicated is answered 10158 ("duplicate message id is in process") instead of as
		// a duplicate; the other copy may yet fail, so ask again, which then answers
		// "duplicate" (stored) or stores this one. Issue 15: every R3 worker logged these.
		var apiErr *jetstream.APIError
		if attempt >= dupInProcessAttempts || !errors.As(err, &apiErr) || apiErr.ErrorCode != jsErrCodeDuplicateInProcess {
			return fmt.Errorf("publish job event %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("publish job event %s: %w", id, ctx.Err())
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		}
	}
}

// jsErrCodeDuplicateInProcess is JetStream's 10158: a message with the same id is being
// stored by a replicated stream right now (nats.go names no constant for it).
const jsErrCodeDuplicateInProcess jetstream.ErrorCode = 10158

// dupInProcessAttempts bounds the publishes of one job event answered 10158: replication of the
// other copy takes milliseconds, and the waits between attempts (20, 40, 60, 80 ms) outlast it.
const dupInProcessAttempts = 5
