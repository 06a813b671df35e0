package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"log/slog"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// Tracing is configured by the OTEL_* variables only; a value Sluice cannot honour is refused
// at start-up (exit 2, naming the variable) rather than silently exporting nothing.
func TestTracingRefusesBadVariables(t *testing.T) {
	for _, tc := range []struct {
		name, env, val, want string
	}{
		{name: "unknown exporter", env: "OTEL_TRACES_EXPORTER", val: "jaeger", want: "OTEL_TRACES_EXPORTER"},
		{name: "none with another", env: "OTEL_TRACES_EXPORTER", val: "none,console", want: "OTEL_TRACES_EXPORTER"},
		{name: "unknown sampler", env: "OTEL_TRACES_SAMPLER", val: "sometimes", want: "OTEL_TRACES_SAMPLER"},
		{name: "ratio out of range", env: "OTEL_TRACES_SAMPLER_ARG", val: "5", want: "OTEL_TRACES_SAMPLER_ARG"},
		{name: "http/json", env: "OTEL_EXPORTER_OTLP_PROTOCOL", val: "http/json", want: "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{tc.env: tc.val, "OTEL_TRACES_SAMPLER": "traceidratio"}
			if tc.env != "OTEL_TRACES_EXPORTER" {
				env["OTEL_TRACES_EXPORTER"] = "otlp"
			}
			if tc.env == "OTEL_TRACES_SAMPLER" {
				env["OTEL_TRACES_SAMPLER"] = tc.val
			}
			_, err := setupTracing(context.Background(), envMap(env), &bytes.Buffer{}, slog.New(slog.DiscardHandler))
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("setupTracing(%s=%s) = %v, want a usage error naming %s", tc.env, tc.val, err, tc.want)
			}
		})
	}
	// The binary itself: exit 2 and the reason, before anything starts.
	cmd := exec.Command(binary, "version")
	cmd.Env = append(cmd.Environ(), "OTEL_TRACES_EXPORTER=jaeger")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `OTEL_TRACES_EXPORTER "jaeger"`) {
		t.Fatalf("sluice version with OTEL_TRACES_EXPORTER=jaeger: %v\n%s", err, out)
	}
}

// With OTEL_TRACES_EXPORTER unset (or none) no SDK is installed: otel's global provider stays
// the no-op one. With console, each span is one JSON object on standard error, flushed by
// shutdown.
func TestTracingExporters(t *testing.T) {
	ctx := context.Background()
	for _, v := range []string{"", "none"} {
		shutdown, err := setupTracing(ctx, envMap(map[string]string{"OTEL_TRACES_EXPORTER": v}), &bytes.Buffer{}, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if _, sdk := otel.GetTracerProvider().(*sdktrace.TracerProvider); sdk {
			t.Fatalf("OTEL_TRACES_EXPORTER=%q installed an SDK provider", v)
		}
		if _, span := otel.Tracer("t").Start(ctx, "x"); span.IsRecording() {
			t.Fatalf("OTEL_TRACES_EXPORTER=%q: spans record", v)
		}
		if err := shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}

	var stderr bytes.Buffer
	shutdown, err := setupTracing(ctx, envMap(map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "sluice-test"}), &stderr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer otel.SetTracerProvider(noop.NewTracerProvider())
	for _, name := range []string{"one", "two"} {
		_, span := otel.Tracer("t").Start(ctx, name)
		span.End()
	}
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var names []string
	sc := bufio.NewScanner(&stderr)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var span struct {
			Name     string
			Resource []struct {
				Key   string
				Value struct{ Value any }
			}
		}
		if err := json.Unmarshal(sc.Bytes(), &span); err != nil {
			t.Fatalf("console line is not one JSON object: %v\n%s", err, sc.Bytes())
		}
		svc := ""
		for _, kv := range span.Resource {
			if kv.Key == "service.name" {
				svc, _ = kv.Value.Value.(string)
			}
		}
		if svc != "sluice-test" {
			t.Fatalf("span %s: service.name %q, want OTEL_SERVICE_NAME's sluice-test", span.Name, svc)
		}
		names = append(names, span.Name)
	}
	if strings.Join(names, ",") != "one,two" {
		t.Fatalf("console spans %v, want one,two", names)
	}
}
