package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// settler settles messages whose handling failed, for every worker: a transient failure goes
// back to the broker with a delay (the handler slot is freed), a permanent one — or the last
// allowed delivery — is dead-lettered and terminated. Safe for concurrent use.
type settler struct {
	dlq        *deadLetterer
	retry      RetryPolicy
	maxDeliver uint64
	log        *slog.Logger
	// kind names the messages in logs ("chunk", "command").
	kind string
	// onDead, if set, runs after a dead letter is stored and before the message is
	// terminated; an error retries the message instead (its dead letter is deduplicated).
	onDead func(ctx context.Context, env schemas.DeadLetterEnvelope) error
	// retried and dead count outcomes, if set.
	retried, dead func()
	// logs keeps a flood of failures (an outage, a poison burst) to one line a second per
	// kind of line; the count of the others goes with the next.
	logs logLimiter
}

// disposer settles one message: a Watermill message through its subscriber (the disposition
// is applied when the router acks it) or a batch delivery (*sjs.Delivery), at once.
type disposer interface {
	Retry(delay time.Duration)
	Term(reason string)
}

// wm makes a Watermill message from a Subscriber a disposer.
func wm(msg *message.Message) disposer { return wmDisposer{msg} }

type wmDisposer struct{ msg *message.Message }

func (d wmDisposer) Retry(delay time.Duration) { sjs.SetRetry(d.msg, delay) }
func (d wmDisposer) Term(reason string)        { sjs.SetTerm(d.msg, reason) }

// native returns the JetStream message behind a Watermill message and its metadata.
func native(msg *message.Message) (jetstream.Msg, *jetstream.MsgMetadata, error) {
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

// fail retries a transient failure, or dead-letters a permanent one or the last delivery.
func (s *settler) fail(ctx context.Context, msg disposer, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if fault.IsPermanent(cause) {
		return s.deadLetter(ctx, msg, m, meta, cause, sink)
	}
	if errors.Is(cause, errBreakerStopped) {
		// Held through an outage and handed back because the worker stops: not a failure
		// of the message. It waits long enough not to come back to this worker while it
		// drains, so its deliveries are not spent (a drain used to spin one through all ten
		// and dead-letter it as exhausted).
		msg.Retry(stoppingRetryDelay)
		return nil
	}
	s.dlq.noteFailure(meta)
	if meta.NumDelivered >= s.maxDeliver {
		return s.deadLetter(ctx, msg, m, meta, fault.Permanent(fault.Exhausted,
			fmt.Errorf("gave up after %d deliveries: %w", meta.NumDelivered, cause)), sink)
	}
	delay := s.retry.Delay(meta.NumDelivered)
	if ok, n := s.logs.allow("retry/" + string(fault.ClassOf(cause)) + "/" + sink); ok {
		s.log.Warn("retrying "+s.kind, "subject", m.Subject(), "seq", meta.Sequence.Stream,
			"attempt", meta.NumDelivered, "delay", delay, "err", cause, "suppressed", n)
	}
	msg.Retry(delay)
	if s.retried != nil {
		s.retried()
	}
	return nil
}

// deadLetter publishes m's dead letter, runs onDead, and terminates m. If the dead letter
// cannot be stored, m is retried instead — never terminated, never dropped — and the failure
// shows in Health, the dead-letter failure metrics and an ERROR log.
func (s *settler) deadLetter(ctx context.Context, msg disposer, m jetstream.Msg, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if !fault.IsPermanent(cause) {
		cause = fault.Permanent(fault.ClassOf(cause), cause)
	}
	env, err := s.dlq.send(ctx, m, meta, cause, sink)
	if err != nil {
		// Never terminated without its dead letter: the message goes back with a delay and
		// stays in its stream. Past its last delivery the server stops redelivering and
		// publishes a max-deliveries advisory, which the capture (pipeline/dlq) dead-letters;
		// the reclaimer keeps the message until then.
		s.dlq.failed(meta, err)
		delay := s.retry.Delay(meta.NumDelivered)
		if ok, n := s.logs.allow("undead/" + sink); ok {
			s.log.Error(s.kind+" could neither be applied nor dead-lettered; kept in its stream and retried",
				"subject", m.Subject(), "seq", meta.Sequence.Stream, "attempt", meta.NumDelivered,
				"last_delivery", meta.NumDelivered >= s.maxDeliver, "delay", delay, "cause", cause, "err", err,
				"suppressed", n)
		}
		msg.Retry(delay)
		return nil
	}
	if s.onDead != nil {
		if err := s.onDead(ctx, env); err != nil {
			msg.Retry(s.retry.Delay(meta.NumDelivered))
			return nil
		}
	}
	if ok, n := s.logs.allow("dead/" + env.Error.Class + "/" + sink); ok {
		s.log.Warn("dead-lettered "+s.kind, "subject", m.Subject(), "seq", meta.Sequence.Stream,
			"class", env.Error.Class, "err", cause, "suppressed", n)
	}
	msg.Term(string(fault.ClassOf(cause)) + ": " + truncate(cause.Error(), 200))
	if s.dead != nil {
		s.dead()
	}
	return nil
}

// deadLetterItem publishes the dead letter of one item of a bundle (m, the item as a
// single-chunk message) and runs onDead; the bundle itself is settled by the caller once every
// item is. An error means the item is not settled (its dead letter or its progress could not
// be stored): the caller retries the bundle.
func (s *settler) deadLetterItem(ctx context.Context, m *bundleItemMsg, meta *jetstream.MsgMetadata, cause error, sink string) error {
	if !fault.IsPermanent(cause) {
		cause = fault.Permanent(fault.ClassOf(cause), cause)
	}
	env, err := s.dlq.send(ctx, m, meta, cause, sink)
	if err != nil {
		s.dlq.failed(meta, err)
		if ok, n := s.logs.allow("undead/" + sink); ok {
			s.log.Error("bundled "+s.kind+" could neither be applied nor dead-lettered; its bundle is kept in its stream and retried",
				"subject", m.Subject(), "seq", meta.Sequence.Stream, "item", m.index, "attempt", meta.NumDelivered,
				"cause", cause, "err", err, "suppressed", n)
		}
		return fmt.Errorf("dead-letter bundle item %d: %w", m.index, err)
	}
	if s.onDead != nil {
		if err := s.onDead(ctx, env); err != nil {
			return fmt.Errorf("record dead-lettered bundle item %d: %w", m.index, err)
		}
	}
	if ok, n := s.logs.allow("dead/" + env.Error.Class + "/" + sink); ok {
		s.log.Warn("dead-lettered bundled "+s.kind, "subject", m.Subject(), "seq", meta.Sequence.Stream, "item", m.index,
			"class", env.Error.Class, "err", cause, "suppressed", n)
	}
	if s.dead != nil {
		s.dead()
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// routerLogger adapts log for Watermill's router. The router logs every message at Trace and
// Debug, building its fields before the level is checked (3–4% of a worker's CPU); those
// levels are dropped here, and its Info lines (handler start and stop) become Debug.
func routerLogger(log *slog.Logger) watermill.LoggerAdapter {
	return quietLogger{watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})}
}

type quietLogger struct{ watermill.LoggerAdapter }

func (quietLogger) Debug(string, watermill.LogFields) {}
func (quietLogger) Trace(string, watermill.LogFields) {}
func (l quietLogger) With(f watermill.LogFields) watermill.LoggerAdapter {
	return quietLogger{l.LoggerAdapter.With(f)}
}
