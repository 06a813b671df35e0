package settle

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
)

// RetryEvent records on the message span of ctx that the message goes back to the broker
// after delivery attempt, for delay, because of cause (telemetry.EventRetry). It does nothing
// when the span is not recording.
func RetryEvent(ctx context.Context, attempt uint64, delay time.Duration, cause error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.AddEvent(telemetry.EventRetry, trace.WithAttributes(
		attribute.Int64("sluice.attempt", int64(attempt)),
		telemetry.AttrDelay.String(delay.String()),
		telemetry.AttrErrorClass.String(string(fault.ClassOf(cause))),
		attribute.String("exception.message", cause.Error())))
}

// deadLetterEvent records on the message span of ctx that the message — or its bundle's item
// (item >= 0) — was dead-lettered as env (telemetry.EventDeadLetter), and marks the span as
// failed.
func deadLetterEvent(ctx context.Context, env schemas.DeadLetterEnvelope, item int) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		telemetry.AttrDeadLetterID.String(env.ID),
		telemetry.AttrErrorClass.String(env.Error.Class),
		attribute.String("exception.message", env.Error.Message),
	}
	if item >= 0 {
		attrs = append(attrs, telemetry.AttrItem.Int(item))
	}
	span.AddEvent(telemetry.EventDeadLetter, trace.WithAttributes(attrs...))
	span.SetStatus(codes.Error, "dead-lettered: "+env.Error.Class)
}
