package telemetry

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/schemas"
)

// StartMessage starts the consumer span of message m (its metadata meta, nil when unknown)
// under the trace context its headers carry, and returns its context and the parent's. End the span
// (trace.SpanFromContext(mctx).End()) once the message is settled.
// Untraced (otel's no-op provider) it costs a header lookup and a context: the span does not
// record, but a caller's traceparent still reaches the logs through it.
func StartMessage(ctx context.Context, scope string, m jetstream.Msg, meta *jetstream.MsgMetadata) (mctx, parent context.Context) {
	h := m.Headers()
	parent = ctx
	if h.Get(schemas.HeaderTraceparent) != "" {
		parent = Extract(ctx, h)
	}
	mctx, span := Tracer(scope).Start(parent, "process "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return mctx, parent
	}
	attrs := []attribute.KeyValue{
		AttrMessagingSystem.String("nats"),
		AttrMessagingDestination.String(m.Subject()),
	}
	if meta != nil {
		attrs = append(attrs, AttrStream.String(meta.Stream),
			AttrMessagingConsumer.String(meta.Consumer),
			AttrStreamSeq.Int64(int64(meta.Sequence.Stream)),
			AttrDelivery.Int64(int64(meta.NumDelivered)))
	}
	if job := h.Get(schemas.HeaderJob); job != "" {
		attrs = append(attrs, AttrJobID.String(job))
	}
	if it := h.Get(schemas.HeaderItem); it != "" {
		attrs = append(attrs, attribute.String(string(AttrItem), it))
	}
	span.SetAttributes(attrs...)
	return mctx, parent
}
