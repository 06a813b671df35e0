package bench

import (
	"context"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// traceGlobally installs, as otel's global provider, an SDK TracerProvider that samples ratio
// of the traces (parent-based, as OTEL_TRACES_SAMPLER=parentbased_traceidratio does) and
// batches their spans to an exporter that drops them. The returned function flushes and shuts
// it down and puts back the provider that was global before (otel's no-op one if that was
// the default, which cannot be set again).
func traceGlobally(ratio float64, exp *dropExporter) (restore func()) {
	prev := otel.GetTracerProvider()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithBatcher(exp))
	otel.SetTracerProvider(tp)
	return func() {
		_ = tp.Shutdown(context.Background())
		if _, sdk := prev.(*sdktrace.TracerProvider); sdk {
			otel.SetTracerProvider(prev)
			return
		}
		otel.SetTracerProvider(trace.TracerProvider(noop.NewTracerProvider()))
	}
}

// dropExporter is a span exporter that counts the spans it is given and drops them.
type dropExporter struct{ n atomic.Int64 }

func (e *dropExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.n.Add(int64(len(spans)))
	return nil
}

func (*dropExporter) Shutdown(context.Context) error { return nil }
