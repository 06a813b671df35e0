package httpapi

import (
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// untraced says whether path is probed or scraped all day (/healthz, /readyz, /metrics): a
// span each would drown the traces that matter.
func untraced(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/metrics":
		return true
	}
	return false
}

// traced wraps the API's handler in a server span per request (otelhttp, with otel's global
// provider, looked up per request, and W3C trace context): the span continues a caller's traceparent, and the
// request's ctx carries it to every NATS message the request publishes (telemetry.Inject).
// The span is named for the route pattern once the mux has matched one (nameSpan); probes and
// scrapes are not traced.
func traced(h http.Handler) http.Handler {
	return otelhttp.NewHandler(h, "sluice-api",
		otelhttp.WithPropagators(telemetry.Propagator()),
		otelhttp.WithFilter(func(r *http.Request) bool { return !untraced(r.URL.Path) }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))
}

// nameSpan names the request's span for its route pattern ("POST /v1/jobs") and records the
// route: the mux matched it on a copy of the request, so otelhttp cannot see it.
func nameSpan(r *http.Request, pattern, route string) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	span.SetName(pattern)
	span.SetAttributes(attribute.String("http.route", route))
}
