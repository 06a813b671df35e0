package dataapi

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// Issue 16: the sink call is a child span of its caller's with its command, collection and
// document count; a retried attempt is an event on it.
func TestCommandSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() { otel.SetTracerProvider(noop.NewTracerProvider()) })

	srv := dataapitest.Start(t, dataapitest.Config{})
	c := newDoubleClient(t, srv)
	ctx := context.Background()
	if err := c.CreateCollection(ctx, "traced", CollectionOptions{}); err != nil {
		t.Fatal(err)
	}
	docs := make([]json.RawMessage, 3)
	for i := range docs {
		docs[i] = json.RawMessage(fmt.Sprintf(`{"_id":"d%d"}`, i))
	}
	srv.InjectNext(1, dataapitest.FaultHTTP503)
	pctx, parent := tp.Tracer("test").Start(ctx, "batch")
	if _, err := c.InsertMany(pctx, "traced", docs); err != nil {
		t.Fatal(err)
	}
	parent.End()

	var got *tracetest.SpanStub
	for _, s := range exp.GetSpans() {
		if s.Name == "data api insertMany" {
			got = &s
		}
	}
	if got == nil {
		t.Fatalf("no insertMany span among %v", exp.GetSpans())
	}
	if got.Parent.SpanID() != parent.SpanContext().SpanID() || got.SpanKind != trace.SpanKindClient {
		t.Errorf("span parent %v kind %v, want a client span under the caller's", got.Parent.SpanID(), got.SpanKind)
	}
	attrs := map[string]string{}
	for _, kv := range got.Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs[string(telemetry.AttrDBOperation)] != "insertMany" || attrs[string(telemetry.AttrDBCollection)] != "traced" ||
		attrs[string(telemetry.AttrDocuments)] != "3" || attrs[string(telemetry.AttrDBSystem)] != "astra" {
		t.Errorf("attributes %v", attrs)
	}
	if len(got.Events) != 1 || got.Events[0].Name != telemetry.EventRetry {
		t.Errorf("events %v, want one retry", got.Events)
	}
}
