package pipeline

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// deadLetterer publishes dead letters: the original message whole (by reference when it is too
// large to embed, see dlq.Writer), with why and when it failed (DESIGN.md invariant 8). It also
// keeps the messages whose dead letter could not be stored, for Health and the metrics. Safe for
// concurrent use.
type deadLetterer struct {
	w   *dlq.Writer
	now func() time.Time
	// failures counts dead letters that could not be stored, if set.
	failures func()

	mu    sync.Mutex // guards first, order and unresolved
	first map[string]time.Time
	order []string
	// unresolved holds, by message, the last failure to store its dead letter, until the
	// message is dead-lettered or applied, or failureTTL passes; at most maxFailureMemory.
	unresolved map[string]deadLetterFailure
}

// deadLetterFailure is one message that could neither be applied nor dead-lettered.
type deadLetterFailure struct {
	at  time.Time
	err error
}

// maxFailureMemory bounds the first-failure times remembered for messages being retried, and
// the unresolved dead-letter failures.
const maxFailureMemory = 1 << 16

// failureTTL is how long a failure to store a dead letter keeps the worker unhealthy when
// nothing more is heard of the message. A message still failing is redelivered (retry delays
// are at most a minute by default) and reported again well within it; one past its last
// delivery is the advisory capture's, which logs and retries its own failures.
const failureTTL = 10 * time.Minute

func newDeadLetterer(js jetstream.JetStream) *deadLetterer {
	return &deadLetterer{w: dlq.NewWriter(js, ""), now: time.Now, first: map[string]time.Time{},
		unresolved: map[string]deadLetterFailure{}}
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

// forget drops what is remembered of a message that was applied or dead-lettered.
func (d *deadLetterer) forget(meta *jetstream.MsgMetadata) {
	k := msgKey(meta)
	d.mu.Lock()
	delete(d.first, k)
	if len(d.unresolved) > 0 {
		delete(d.unresolved, k)
	}
	d.mu.Unlock()
}

// failed records that the dead letter of a message could not be stored.
func (d *deadLetterer) failed(meta *jetstream.MsgMetadata, err error) {
	k := msgKey(meta)
	d.mu.Lock()
	if _, ok := d.unresolved[k]; !ok && len(d.unresolved) >= maxFailureMemory {
		d.pruneLocked(d.now().Add(failureTTL)) // full of live failures: keep the newest
	}
	d.unresolved[k] = deadLetterFailure{at: d.now(), err: err}
	d.mu.Unlock()
	if d.failures != nil {
		d.failures()
	}
}

// pruneLocked drops unresolved failures older than failureTTL at now. d.mu must be held.
func (d *deadLetterer) pruneLocked(now time.Time) {
	for k, f := range d.unresolved {
		if now.Sub(f.at) >= failureTTL {
			delete(d.unresolved, k)
		}
	}
}

// unresolvedCount returns how many messages could neither be applied nor dead-lettered within
// failureTTL.
func (d *deadLetterer) unresolvedCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked(d.now())
	return len(d.unresolved)
}

// health returns nil, or an error naming how many messages could neither be applied nor
// dead-lettered within failureTTL and the latest failure.
func (d *deadLetterer) health() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked(d.now())
	if len(d.unresolved) == 0 {
		return nil
	}
	var lk string
	var last deadLetterFailure
	for k, f := range d.unresolved {
		if lk == "" || f.at.After(last.at) {
			lk, last = k, f
		}
	}
	return fmt.Errorf("%d message(s) could neither be applied nor dead-lettered (kept in their streams, retried); latest %s: %w",
		len(d.unresolved), lk, last.err)
}

// send publishes the dead letter of m and returns once JetStream stored it. Its Nats-Msg-Id is
// derived from the original's stream position ("<stream>-<seq>", plus "-i<index>" for an item
// of a bundle), so a redelivery that dead-letters again within the duplicate window stores
// nothing new.
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
	bi, bundled := m.(*bundleItemMsg)
	if bundled {
		env.ID += "-i" + strconv.Itoa(bi.index)
	}
	written, err := d.w.Write(ctx, env)
	if err != nil {
		return env, err
	}
	if !bundled { // the bundle is forgotten once all its items are settled
		d.forget(meta)
	}
	return written.Envelope, nil
}

// traceID extracts the trace id from a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>").
func traceID(tp string) string {
	parts := strings.Split(tp, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		return ""
	}
	return parts[1]
}
