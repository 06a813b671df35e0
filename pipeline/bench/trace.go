package bench

import (
	"context"

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
func traceGlobally(ratio float64) (restore func()) {
	prev := otel.GetTracerProvider()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithBatcher(dropExporter{}))
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

// dropExporter is a span exporter that drops every span.
type dropExporter struct{}

func (dropExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (dropExporter) Shutdown(context.Context) error                             { return nil }
