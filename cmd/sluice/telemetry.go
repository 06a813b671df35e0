package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"

	"log/slog"

	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// Tracing is configured by the standard OpenTelemetry variables only (docs/operations.md,
// "Tracing"):
//
//   - OTEL_TRACES_EXPORTER: none (the default), console (one JSON object per span on standard
//     error) or otlp; a comma-separated list sends spans to each.
//   - OTEL_EXPORTER_OTLP_PROTOCOL (or OTEL_EXPORTER_OTLP_TRACES_PROTOCOL): http/protobuf (the
//     default) or grpc. The endpoint, headers, timeout and TLS variables
//     (OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, …) are read by the exporter itself.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG are read by the SDK itself (no sampler
//     is set here); their values are checked at start-up.
//   - OTEL_SERVICE_NAME (default sluice) and OTEL_RESOURCE_ATTRIBUTES name the resource.
//
// The exporters are a plain switch rather than contrib's autoexport: autoexport defaults to
// otlp when OTEL_TRACES_EXPORTER is unset (Sluice's default is none, so that tracing costs a
// no-op unless asked for), and it links the gRPC exporter and the metric and log exporters
// whether used or not.
const (
	envTracesExporter   = "OTEL_TRACES_EXPORTER"
	envOTLPProtocol     = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPTraceProto   = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envTracesSampler    = "OTEL_TRACES_SAMPLER"
	envTracesSamplerArg = "OTEL_TRACES_SAMPLER_ARG"
)

// setupTracing reads the OTEL_* variables through getenv and, unless the exporter is none,
// installs an SDK TracerProvider as otel's global one, exporting in batches to the chosen
// exporters (console spans go to stderr). The W3C trace-context and baggage propagator is
// installed in every case, so a caller's traceparent reaches the NATS headers, the logs and
// the dead letters even with tracing off. The returned shutdown flushes the spans still
// buffered and stops the exporters; call it once, after the last span ended (the drain's
// end). A bad value is a usageError naming its variable: exit 2 before anything starts. The
// SDK's own errors (an export that failed: the collector is down) are logged on log as
// warnings.
func setupTracing(ctx context.Context, getenv func(string) string, stderr io.Writer, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(telemetry.Propagator())
	noop := func(context.Context) error { return nil }
	names, err := tracesExporters(getenv(envTracesExporter))
	if err != nil {
		return noop, err
	}
	if err := checkSampler(getenv(envTracesSampler), getenv(envTracesSamplerArg)); err != nil {
		return noop, err
	}
	if len(names) == 0 {
		return noop, nil // otel's global no-op provider stays
	}
	var opts []sdktrace.TracerProviderOption
	for _, name := range names {
		exp, err := newSpanExporter(ctx, name, getenv, stderr)
		if err != nil {
			return noop, err
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	service := strings.TrimSpace(getenv("OTEL_SERVICE_NAME"))
	if service == "" {
		service = "sluice"
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceVersion(version())),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithTelemetrySDK())
	if err != nil {
		return noop, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(append(opts, sdktrace.WithResource(res))...)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: spans not exported", "err", err) }))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// tracesExporters parses OTEL_TRACES_EXPORTER: the exporters to use, none for "" or "none".
func tracesExporters(v string) ([]string, error) {
	var names []string
	for _, n := range strings.Split(v, ",") {
		switch n = strings.ToLower(strings.TrimSpace(n)); n {
		case "", "none":
		case "console", "otlp":
			names = append(names, n)
		default:
			return nil, usageError{fmt.Sprintf("%s %q: want none (the default), console or otlp", envTracesExporter, v)}
		}
	}
	if len(names) > 0 && strings.Contains(strings.ToLower(v), "none") {
		return nil, usageError{fmt.Sprintf("%s %q: none cannot be combined with an exporter", envTracesExporter, v)}
	}
	return names, nil
}

// newSpanExporter makes the exporter name (console or otlp).
func newSpanExporter(ctx context.Context, name string, getenv func(string) string, stderr io.Writer) (sdktrace.SpanExporter, error) {
	if name == "console" {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(stderr))
		if err != nil {
			return nil, fmt.Errorf("tracing: console exporter: %w", err)
		}
		return exp, nil
	}
	proto, from := getenv(envOTLPTraceProto), envOTLPTraceProto
	if proto == "" {
		proto, from = getenv(envOTLPProtocol), envOTLPProtocol
	}
	var exp sdktrace.SpanExporter
	var err error
	// Endpoint, headers, TLS and timeout: read by the exporters from OTEL_EXPORTER_OTLP_*.
	switch strings.TrimSpace(proto) {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		// gRPC is in the binary already (the OTLP protobuf packages link it): this exporter
		// adds ≈0.5 MB.
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, usageError{fmt.Sprintf("%s %q: want http/protobuf (the default) or grpc", from, proto)}
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: otlp exporter: %w", err)
	}
	return exp, nil
}

// checkSampler refuses what the SDK would otherwise log and replace with its default:
// an unknown OTEL_TRACES_SAMPLER, or a ratio argument that is not a number in [0, 1].
func checkSampler(sampler, arg string) error {
	switch strings.TrimSpace(sampler) {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		if strings.TrimSpace(arg) == "" {
			return nil // the SDK's default ratio, 1
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(arg), 64)
		if err != nil || r < 0 || r > 1 {
			return usageError{fmt.Sprintf("%s %q: want a ratio between 0 and 1 for %s", envTracesSamplerArg, arg, sampler)}
		}
		return nil
	default:
		return usageError{fmt.Sprintf("%s %q: want always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio", envTracesSampler, sampler)}
	}
}
