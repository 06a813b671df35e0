package pipeline

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// messageSpan starts the consumer span of message m (its metadata meta, nil when unknown)
// under the trace context its headers carry, and returns its context and the parent's.
// Untraced (otel's no-op provider) it costs a header lookup and a context: the span does not
// record, but a caller's traceparent still reaches the logs through it.
func messageSpan(ctx context.Context, m jetstream.Msg, meta *jetstream.MsgMetadata) (mctx, parent context.Context) {
	h := m.Headers()
	parent = ctx
	if h.Get(schemas.HeaderTraceparent) != "" {
		parent = telemetry.Extract(ctx, h)
	}
	mctx, span := telemetry.Tracer(telemetry.ScopePipeline).Start(parent, "process "+m.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer))
	if !span.IsRecording() {
		return mctx, parent
	}
	attrs := []attribute.KeyValue{
		telemetry.AttrMessagingSystem.String("nats"),
		telemetry.AttrMessagingDestination.String(m.Subject()),
	}
	if meta != nil {
		attrs = append(attrs, telemetry.AttrStream.String(meta.Stream),
			telemetry.AttrMessagingConsumer.String(meta.Consumer),
			telemetry.AttrStreamSeq.Int64(int64(meta.Sequence.Stream)),
			telemetry.AttrDelivery.Int64(int64(meta.NumDelivered)))
	}
	if job := h.Get(schemas.HeaderJob); job != "" {
		attrs = append(attrs, telemetry.AttrJobID.String(job))
	}
	if it := h.Get(schemas.HeaderItem); it != "" {
		attrs = append(attrs, attribute.String(string(telemetry.AttrItem), it))
	}
	span.SetAttributes(attrs...)
	return mctx, parent
}

// batchSpans starts a span for each message of batch and one for the batch, which links to
// every message span and sits in the first traced message's trace (so the batch of one job's
// chunks is in that job's trace). It returns the messages' contexts, in batch's order, and
// the batch's; endSpans ends them all.
func (w *Worker) batchSpans(ctx context.Context, batch []*sjs.Delivery) (mctxs []context.Context, bctx context.Context, bspan trace.Span) {
	mctxs = make([]context.Context, len(batch))
	bparent := ctx
	var links []trace.Link
	for i, d := range batch {
		var parent context.Context
		mctxs[i], parent = messageSpan(ctx, d.Msg(), d.Meta())
		if bparent == ctx && parent != ctx {
			bparent = parent
		}
		if sc := trace.SpanContextFromContext(mctxs[i]); sc.IsValid() && trace.SpanFromContext(mctxs[i]).IsRecording() {
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	bctx, bspan = telemetry.Tracer(telemetry.ScopePipeline).Start(bparent, "chunk batch", trace.WithLinks(links...))
	if bspan.IsRecording() {
		bspan.SetAttributes(telemetry.AttrMessagingBatchCount.Int(len(batch)), attribute.String("sluice.sink", w.cfg.SinkName))
	}
	return mctxs, bctx, bspan
}

// endSpans ends the batch's span and its messages'.
func endSpans(bspan trace.Span, mctxs []context.Context) {
	for _, mctx := range mctxs {
		trace.SpanFromContext(mctx).End()
	}
	bspan.End()
}
