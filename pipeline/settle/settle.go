// Package settle decides what becomes of a message whose handling failed, for every worker
// (chunks, graph batches, job events, commands): a transient failure is retried after the
// RetryPolicy's delay, until the consumer's MaxDeliver, then dead-lettered (fault.Exhausted);
// a permanent one (fault.IsPermanent) is dead-lettered at once through a dlq.Sender and the
// message terminated; a message handed back by a stopping worker (ErrStopped) is redelivered
// later and never counted as exhausted. It also holds the adapters the workers share: the
// Disposer of a Watermill message (Watermill, Native), the router's logger (RouterLogger)
// and the log limiter that keeps a flood of failures to a line a second (LogLimiter).
package settle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluice-dev/sluice/pipeline/dlq"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Settler settles messages whose handling failed, for every worker: a transient failure goes
// back to the broker with a delay (the handler slot is freed), a permanent one — or the last
// allowed delivery — is dead-lettered and terminated. Safe for concurrent use.
type Settler struct {
	DLQ        *dlq.Sender
	Retry      RetryPolicy
	MaxDeliver uint64
	Log        *slog.Logger
	// Kind names the messages in logs ("chunk", "command").
	Kind string
	// OnDead, if set, runs after a dead letter is stored and before the message is
	// terminated; an error retries the message instead (its dead letter is deduplicated).
	OnDead func(ctx context.Context, env schemas.DeadLetterEnvelope) error
	// Retried and Dead count outcomes, if set, with the stream of the message (or of the
	// bundle whose chunk was dead-lettered).
	Retried, Dead func(stream string)
	// Logs keeps a flood of failures (an outage, a poison burst) to one line a second per
	// kind of line; the count of the others goes with the next.
	Logs LogLimiter
}

// Disposer settles one message: a Watermill message through its subscriber (the disposition
// is applied when the router acks it) or a batch delivery (*sjs.Delivery), at once.
type Disposer interface {
	Retry(delay time.Duration)
	Term(reason string)
}

// Watermill makes a Watermill message from a Subscriber a Disposer.
func Watermill(msg *message.Message) Disposer { return wmDisposer{msg} }

type wmDisposer struct{ msg *message.Message }

func (d wmDisposer) Retry(delay time.Duration) { sjs.SetRetry(d.msg, delay) }
func (d wmDisposer) Term(reason string)        { sjs.SetTerm(d.msg, reason) }

// Native returns the JetStream message behind a Watermill message and its metadata.
func Native(msg *message.Message) (jetstream.Msg, *jetstream.MsgMetadata, error) {
	m, ok := sjs.Native(msg)
	if !ok {
		return nil, nil, errors.New("message did not come from JetStream")
	}
	if meta, ok := sjs.Metadata(msg); ok {
		return m, meta, nil
	}
	meta, err := m.Metadata()
	if err != nil {
		return nil, nil, fmt.Errorf("message metadata: %w", err)
	}
	return m, meta, nil
}

// Fail retries a transient failure, or dead-letters a permanent one or the last delivery.
func (s *Settler) Fail(ctx context.Context, msg Disposer, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if fault.IsPermanent(cause) {
		return s.DeadLetter(ctx, msg, m, meta, cause, sink)
	}
	if errors.Is(cause, ErrStopped) {
		// Held through an outage and handed back because the worker stops: not a failure
		// of the message. It waits long enough not to come back to this worker while it
		// drains, so its deliveries are not spent (a drain used to spin one through all ten
		// and dead-letter it as exhausted).
		msg.Retry(StoppingRetryDelay)
		return nil
	}
	s.DLQ.NoteFailure(meta)
	if meta.NumDelivered >= s.MaxDeliver {
		return s.DeadLetter(ctx, msg, m, meta, fault.Permanent(fault.Exhausted,
			fmt.Errorf("gave up after %d deliveries: %w", meta.NumDelivered, cause)), sink)
	}
	delay := s.Retry.Delay(meta.NumDelivered)
	RetryEvent(ctx, meta.NumDelivered, delay, cause)
	if ok, n := s.Logs.Allow("retry/" + string(fault.ClassOf(cause)) + "/" + sink); ok {
		s.Log.WarnContext(ctx, "retrying "+s.Kind, "subject", m.Subject(), "stream_seq", meta.Sequence.Stream,
			"job_id", m.Headers().Get(schemas.HeaderJob), "msg_id", m.Headers().Get(schemas.HeaderMsgID),
			"attempt", meta.NumDelivered, "delay", delay, "err", cause, "suppressed", n)
	}
	msg.Retry(delay)
	if s.Retried != nil {
		s.Retried(meta.Stream)
	}
	return nil
}

// DeadLetter publishes m's dead letter, runs onDead, and terminates m. If the dead letter
// cannot be stored, m is retried instead — never terminated, never dropped — and the failure
// shows in Health, the dead-letter failure metrics and an ERROR log.
func (s *Settler) DeadLetter(ctx context.Context, msg Disposer, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if !fault.IsPermanent(cause) {
		cause = fault.Permanent(fault.ClassOf(cause), cause)
	}
	env, err := s.DLQ.Send(ctx, m, meta, cause, sink)
	if err != nil {
		// Never terminated without its dead letter: the message goes back with a delay and
		// stays in its stream. Past its last delivery the server stops redelivering and
		// publishes a max-deliveries advisory, which the capture (pipeline/dlq) dead-letters;
		// the reclaimer keeps the message until then.
		s.DLQ.Failed(meta, err)
		delay := s.Retry.Delay(meta.NumDelivered)
		if ok, n := s.Logs.Allow("undead/" + sink); ok {
			s.Log.ErrorContext(ctx, s.Kind+" could neither be applied nor dead-lettered; kept in its stream and retried",
				"subject", m.Subject(), "stream_seq", meta.Sequence.Stream, "job_id", m.Headers().Get(schemas.HeaderJob),
				"msg_id", m.Headers().Get(schemas.HeaderMsgID), "attempt", meta.NumDelivered,
				"last_delivery", meta.NumDelivered >= s.MaxDeliver, "delay", delay, "cause", cause, "err", err,
				"suppressed", n)
		}
		msg.Retry(delay)
		return nil
	}
	if s.OnDead != nil {
		if err := s.OnDead(ctx, env); err != nil {
			msg.Retry(s.Retry.Delay(meta.NumDelivered))
			return nil
		}
	}
	deadLetterEvent(ctx, env, -1)
	if ok, n := s.Logs.Allow("dead/" + env.Error.Class + "/" + sink); ok {
		s.Log.WarnContext(ctx, "dead-lettered "+s.Kind, "subject", m.Subject(), "stream_seq", meta.Sequence.Stream,
			"job_id", env.JobID, "msg_id", m.Headers().Get(schemas.HeaderMsgID), "dead_letter_id", env.ID,
			"class", env.Error.Class, "err", cause, "suppressed", n)
	}
	msg.Term(string(fault.ClassOf(cause)) + ": " + truncate(cause.Error(), 200))
	if s.Dead != nil {
		s.Dead(meta.Stream)
	}
	return nil
}

// DeadLetterItem publishes the dead letter of one item of a bundle (m, the item as a
// single-chunk message) and runs OnDead; the bundle itself is settled by the caller once every
// item is. An error means the item is not settled (its dead letter or its progress could not
// be stored): the caller retries the bundle.
func (s *Settler) DeadLetterItem(ctx context.Context, m dlq.BundleItem, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if !fault.IsPermanent(cause) {
		cause = fault.Permanent(fault.ClassOf(cause), cause)
	}
	env, err := s.DLQ.Send(ctx, m, meta, cause, sink)
	if err != nil {
		s.DLQ.Failed(meta, err)
		if ok, n := s.Logs.Allow("undead/" + sink); ok {
			s.Log.ErrorContext(ctx, "bundled "+s.Kind+" could neither be applied nor dead-lettered; its bundle is kept in its stream and retried",
				"subject", m.Subject(), "stream_seq", meta.Sequence.Stream, "item", m.BundleIndex(),
				"job_id", m.Headers().Get(schemas.HeaderJob), "attempt", meta.NumDelivered,
				"cause", cause, "err", err, "suppressed", n)
		}
		return fmt.Errorf("dead-letter bundle item %d: %w", m.BundleIndex(), err)
	}
	if s.OnDead != nil {
		if err := s.OnDead(ctx, env); err != nil {
			return fmt.Errorf("record dead-lettered bundle item %d: %w", m.BundleIndex(), err)
		}
	}
	deadLetterEvent(ctx, env, m.BundleIndex())
	if ok, n := s.Logs.Allow("dead/" + env.Error.Class + "/" + sink); ok {
		s.Log.WarnContext(ctx, "dead-lettered bundled "+s.Kind, "subject", m.Subject(), "stream_seq", meta.Sequence.Stream, "item", m.BundleIndex(),
			"job_id", env.JobID, "dead_letter_id", env.ID, "class", env.Error.Class, "err", cause, "suppressed", n)
	}
	if s.Dead != nil {
		s.Dead(meta.Stream)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
