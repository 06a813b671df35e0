package dlq

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

// Sender publishes dead letters: the original message whole (by reference when it is too
// large to embed, see dlq.Writer), with why and when it failed (DESIGN.md invariant 8). It also
// keeps the messages whose dead letter could not be stored, for Health and the metrics. Safe for
// concurrent use.
type Sender struct {
	w   *Writer
	now func() time.Time
	// Failures counts dead letters that could not be stored, if set.
	Failures func()

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

// NewSender returns a Sender that stores dead letters through js (NewWriter) in the
// SLUICE_DLQ stream. Set Failures before the first use.
func NewSender(js jetstream.JetStream) *Sender {
	return &Sender{w: NewWriter(js, ""), now: time.Now, first: map[string]time.Time{},
		unresolved: map[string]deadLetterFailure{}}
}

// MsgKey names a message by its stream and stream sequence ("stream:seq"): the key under which
// its failures are remembered.
func MsgKey(meta *jetstream.MsgMetadata) string {
	return meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
}

// NoteFailure remembers when a message first failed, for its dead letter.
func (d *Sender) NoteFailure(meta *jetstream.MsgMetadata) {
	k := MsgKey(meta)
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

// Forget drops what is remembered of a message that was applied or dead-lettered.
func (d *Sender) Forget(meta *jetstream.MsgMetadata) {
	k := MsgKey(meta)
	d.mu.Lock()
	delete(d.first, k)
	if len(d.unresolved) > 0 {
		delete(d.unresolved, k)
	}
	d.mu.Unlock()
}

// Failed records that the dead letter of a message could not be stored.
func (d *Sender) Failed(meta *jetstream.MsgMetadata, err error) {
	k := MsgKey(meta)
	d.mu.Lock()
	if _, ok := d.unresolved[k]; !ok && len(d.unresolved) >= maxFailureMemory {
		d.pruneLocked(d.now().Add(failureTTL)) // full of live failures: keep the newest
	}
	d.unresolved[k] = deadLetterFailure{at: d.now(), err: err}
	d.mu.Unlock()
	if d.Failures != nil {
		d.Failures()
	}
}

// pruneLocked drops unresolved failures older than failureTTL at now. d.mu must be held.
func (d *Sender) pruneLocked(now time.Time) {
	for k, f := range d.unresolved {
		if now.Sub(f.at) >= failureTTL {
			delete(d.unresolved, k)
		}
	}
}

// Unresolved returns how many messages could neither be applied nor dead-lettered within
// failureTTL.
func (d *Sender) Unresolved() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked(d.now())
	return len(d.unresolved)
}

// Health returns nil, or an error naming how many messages could neither be applied nor
// dead-lettered within failureTTL and the latest failure.
func (d *Sender) Health() error {
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

// Send publishes the dead letter of m and returns once JetStream stored it. Its Nats-Msg-Id is
// derived from the original's stream position ("<stream>-<seq>", plus "-i<index>" for an item
// of a bundle), so a redelivery that dead-letters again within the duplicate window stores
// nothing new.
func (d *Sender) Send(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) (schemas.DeadLetterEnvelope, error) {
	now := d.now().UTC()
	d.mu.Lock()
	first, ok := d.first[MsgKey(meta)]
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
		JobID:          m.Headers().Get(schemas.HeaderJob),
		DeadLetteredAt: now,
	}
	// One parser for traceparent (schemas.TraceIDFromTraceparent): a malformed one gives no
	// trace id rather than a wrong one.
	if tid, ok := schemas.TraceIDFromTraceparent(m.Headers().Get(schemas.HeaderTraceparent)); ok {
		env.TraceID = tid
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
	bi, bundled := m.(BundleItem)
	if bundled {
		env.ID += "-i" + strconv.Itoa(bi.BundleIndex())
	}
	written, err := d.w.Write(ctx, env)
	if err != nil {
		return env, err
	}
	if !bundled { // the bundle is forgotten once all its items are settled
		d.Forget(meta)
	}
	return written.Envelope, nil
}

// BundleItem is a message that is one item of a chunk bundle: its dead letter's id names the
// item (stream-seq-iN), and the bundle stays remembered until every item is settled.
type BundleItem interface {
	jetstream.Msg
	// BundleIndex is the item's position in its bundle.
	BundleIndex() int
}
