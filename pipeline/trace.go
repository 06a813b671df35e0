package pipeline

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

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
		mctxs[i], parent = telemetry.StartMessage(ctx, telemetry.ScopePipeline, d.Msg(), d.Meta())
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
