package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// deadLetterer publishes dead letters: the original message whole, with why and when it
// failed (DESIGN.md invariant 8). Safe for concurrent use.
type deadLetterer struct {
	js  jetstream.JetStream
	now func() time.Time

	mu    sync.Mutex // guards first and order
	first map[string]time.Time
	order []string
}

// maxFailureMemory bounds the first-failure times remembered for messages being retried.
const maxFailureMemory = 1 << 16

func newDeadLetterer(js jetstream.JetStream) *deadLetterer {
	return &deadLetterer{js: js, now: time.Now, first: map[string]time.Time{}}
}

func msgKey(meta *jetstream.MsgMetadata) string {
	return meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
}

// noteFailure remembers when a message first failed, for its dead letter.
func (d *deadLetterer) noteFailure(meta *jetstream.MsgMetadata) {
	k := msgKey(meta)
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.first[k]; ok {
		return
	}
	if len(d.order) >= maxFailureMemory {
		delete(d.first, d.order[0])
		d.order = d.order[1:]
	}
	d.first[k] = d.now().UTC()
	d.order = append(d.order, k)
}

func (d *deadLetterer) forget(meta *jetstream.MsgMetadata) {
	d.mu.Lock()
	delete(d.first, msgKey(meta))
	d.mu.Unlock()
}

// send publishes the dead letter of m and returns once JetStream stored it. Its Nats-Msg-Id is
// derived from the original's stream position, so a redelivery that dead-letters again within
// the duplicate window stores nothing new.
func (d *deadLetterer) send(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) (schemas.DeadLetterEnvelope, error) {
	now := d.now().UTC()
	d.mu.Lock()
	first, ok := d.first[msgKey(meta)]
	d.mu.Unlock()
	if !ok {
		first = now
	}
	env := schemas.DeadLetterEnvelope{
		ID:             fmt.Sprintf("%s-%d", meta.Stream, meta.Sequence.Stream),
		Subject:        m.Subject(),
		Headers:        map[string][]string(m.Headers()),
		Payload:        m.Data(),
		Error:          schemas.DeadLetterError{Class: string(fault.ClassOf(cause)), Message: cause.Error(), Sink: sink},
		Attempts:       int(max(meta.NumDelivered, 1)),
		FirstFailure:   first,
		LastFailure:    now,
		Stream:         meta.Stream,
		StreamSeq:      meta.Sequence.Stream,
		Consumer:       meta.Consumer,
		TraceID:        traceID(m.Headers().Get(schemas.HeaderTraceparent)),
		JobID:          m.Headers().Get(schemas.HeaderJob),
		DeadLetteredAt: now,
	}
	// A replayed message that fails again carries its replay count forward (the DLQ's loop
	// guard reads it).
	if n, err := strconv.Atoi(m.Headers().Get("Sluice-Replay")); err == nil && n > 0 {
		env.Replays = n
	}
	if s := m.Headers().Get(schemas.HeaderItem); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			env.Item = &n
		}
	}
	body, err := json.Marshal(env)
	if err != nil {
		return env, fmt.Errorf("encode dead letter: %w", err)
	}
	out := nats.NewMsg(schemas.DLQSubject(m.Subject()))
	out.Data = body
	out.Header.Set(nats.MsgIdHdr, "dlq/"+env.ID)
	out.Header.Set(schemas.HeaderSchema, string(schemas.DeadLetter))
	if env.JobID != "" {
		out.Header.Set(schemas.HeaderJob, env.JobID)
	}
	out.Header.Set("Sluice-Error-Class", env.Error.Class)
	if _, err := d.js.PublishMsg(ctx, out); err != nil {
		return env, fmt.Errorf("publish dead letter %s: %w", env.ID, err)
	}
	d.forget(meta)
	return env, nil
}

// traceID extracts the trace id from a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>").
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}
