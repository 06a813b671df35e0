package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

func TestInjectExtractRoundTrip(t *testing.T) {
	otel.SetTextMapPropagator(telemetry.Propagator())
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	defer span.End()

	h := nats.Header{}
	telemetry.Inject(ctx, h)
	if h.Get("traceparent") == "" {
		t.Fatalf("no traceparent injected: %v", h)
	}
	got := trace.SpanContextFromContext(telemetry.Extract(context.Background(), h))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("extracted %v, want the span %v", got, span.SpanContext())
	}

	// Without a span nothing is written, and nothing is extracted from nothing.
	empty := nats.Header{}
	telemetry.Inject(context.Background(), empty)
	if len(empty) != 0 {
		t.Fatalf("injected %v without a span", empty)
	}
	if sc := trace.SpanContextFromContext(telemetry.Extract(context.Background(), nil)); sc.IsValid() {
		t.Fatalf("extracted %v from no headers", sc)
	}
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "work")
	defer span.End()

	for _, tc := range []struct {
		name      string
		ctx       context.Context
		wantTrace string
	}{
		{name: "span in ctx", ctx: ctx, wantTrace: span.SpanContext().TraceID().String()},
		{name: "no span", ctx: context.Background()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&buf, nil))).With("k", "v")
			log.InfoContext(tc.ctx, "hello")
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatal(err)
			}
			tid, _ := rec[telemetry.LogTraceID].(string)
			if tid != tc.wantTrace || rec["k"] != "v" {
				t.Fatalf("record %v: trace_id %q, want %q", rec, tid, tc.wantTrace)
			}
			if _, has := rec[telemetry.LogSpanID]; has != (tc.wantTrace != "") {
				t.Fatalf("record %v: span_id present = %v", rec, has)
			}
		})
	}
}
