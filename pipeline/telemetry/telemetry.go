// Package telemetry holds what Sluice's tracing shares across packages: the tracer of each
// instrumentation scope, the W3C trace context carried in NATS headers (HeaderCarrier, Inject,
// Extract), the attribute keys of Sluice's spans, and a slog handler that puts the trace and
// span ids of a record's context on every log line (LogHandler).
//
// Spans go to otel's global TracerProvider. cmd/sluice installs an SDK provider only when
// OTEL_TRACES_EXPORTER asks for one; by default the global provider is otel's no-op, and every
// span started here costs what a no-op costs.
package telemetry

import (
	"context"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Instrumentation scopes: the name of the tracer each part of Sluice starts its spans with.
const (
	ScopePipeline = "github.com/sluice-dev/sluice/pipeline"
	ScopeDataAPI  = "github.com/sluice-dev/sluice/sinks/astra/dataapi"
	ScopeDocstore = "github.com/sluice-dev/sluice/sinks/docstore"
	ScopeGraph    = "github.com/sluice-dev/sluice/sinks/graph"
	ScopeLoad     = "github.com/sluice-dev/sluice/pipeline/intake"
)

// Attribute keys of Sluice's spans. The db.* and messaging.* keys are OpenTelemetry's
// semantic conventions; sluice.* are Sluice's own.
const (
	// AttrDBSystem names the store of a sink span: "astra", "sqlite", "postgresql".
	AttrDBSystem = attribute.Key("db.system.name")
	// AttrDBOperation is the command of a sink span: a Data API command ("insertMany"), or
	// "upsert" for a SQLite or PostgreSQL batch.
	AttrDBOperation = attribute.Key("db.operation.name")
	// AttrDBCollection is the collection (or table) a sink span writes.
	AttrDBCollection = attribute.Key("db.collection.name")
	// AttrDocuments is how many documents (or graph records) a sink span writes.
	AttrDocuments = attribute.Key("sluice.documents")

	AttrMessagingSystem      = attribute.Key("messaging.system")
	AttrMessagingDestination = attribute.Key("messaging.destination.name")
	AttrMessagingConsumer    = attribute.Key("messaging.consumer.group.name")
	AttrMessagingBatchCount  = attribute.Key("messaging.batch.message_count")
	// AttrStreamSeq is a message's sequence in its stream (with the stream, its dead
	// letter's id).
	AttrStreamSeq = attribute.Key("sluice.stream_seq")
	AttrStream    = attribute.Key("sluice.stream")
	// AttrDelivery is the message's delivery count (1 the first time).
	AttrDelivery = attribute.Key("sluice.delivery")
	AttrJobID    = attribute.Key("sluice.job_id")
	AttrItem     = attribute.Key("sluice.item")

	// AttrErrorClass is the fault class of a retry or dead-letter event (pipeline/fault).
	AttrErrorClass = attribute.Key("sluice.error.class")
	// AttrDelay is a retry event's delay before the next delivery.
	AttrDelay = attribute.Key("sluice.retry.delay")
	// AttrDeadLetterID is a dead-letter event's id in the DLQ ("<stream>-<seq>[-i<item>]").
	AttrDeadLetterID = attribute.Key("sluice.dead_letter.id")
)

// Event names on a message span.
const (
	// EventRetry: the message goes back to the broker for a later delivery (Nak with delay).
	EventRetry = "retry"
	// EventDeadLetter: the message (or one item of a bundle) is dead-lettered.
	EventDeadLetter = "dead_letter"
)

// Tracer returns the tracer of scope from otel's global provider. It is looked up on each
// call, not kept, so that a provider installed later (or by a test) is the one used. Safe for
// concurrent use.
func Tracer(scope string) trace.Tracer { return otel.Tracer(scope) }

// Propagator returns the propagator Sluice uses for NATS headers and HTTP: W3C trace context
// and baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// HeaderCarrier adapts NATS message headers to a propagation.TextMapCarrier. Header names
// are matched exactly, as NATS does (W3C's are lower case: "traceparent", "tracestate").
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier(nil)

// Get returns the first value of key.
func (c HeaderCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set replaces the values of key with value.
func (c HeaderCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys returns the header names.
func (c HeaderCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes the trace context of ctx (and its baggage) into h through the global
// propagator; h must not be nil. Without a valid span in ctx it writes nothing, so a message
// published with tracing off carries no traceparent of Sluice's making.
func Inject(ctx context.Context, h nats.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	otel.GetTextMapPropagator().Inject(ctx, HeaderCarrier(h))
}

// Extract returns ctx with the remote trace context (and baggage) of h, through the global
// propagator. A nil h or one without a traceparent returns ctx as it is.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if h == nil {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, HeaderCarrier(h))
}

// StartSink starts the client span of one sink call as a child of ctx's span, named
// "<system> <operation> <collection>", with the db.* attributes and the document (or record)
// count; docs < 0 leaves the count out. End it with End.
func StartSink(ctx context.Context, scope, system, operation, collection string, docs int) (context.Context, trace.Span) {
	ctx, span := Tracer(scope).Start(ctx, system+" "+operation+" "+collection, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(AttrDBSystem.String(system), AttrDBOperation.String(operation), AttrDBCollection.String(collection))
		if docs >= 0 {
			span.SetAttributes(AttrDocuments.Int(docs))
		}
	}
	return ctx, span
}

// End ends span, first recording err (when not nil) as its error and status.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
