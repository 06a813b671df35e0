package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// syncBuffer is a bytes.Buffer safe for the worker's goroutines to log into.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log records written so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(s.b.Bytes()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Bytes(), err)
		}
		out = append(out, rec)
	}
	return out
}

// submitTraced uploads body as a job through the API, with traceparent when not empty, and
// waits for the job to end.
func submitTraced(t *testing.T, e *testEnv, base string, body []byte, traceparent string) jobs.Job {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/jobs?env=dev&file=f", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+writerToken)
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %v %v", resp.StatusCode, m, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := jobs.Wait(ctx, e.jobs, m["job_id"].(string), nil)
	if err != nil {
		t.Fatalf("wait for job: %v (%+v)", err, job)
	}
	return job
}

// Issue 16: one HTTP job submission yields one trace — the API's span, the job's load span,
// the message spans, the batch span linking to them and the sink's transaction under it —
// and the trace id of that trace is in the job's dead letter and in the log line saying so.
// A transient failure is a retry event on a message span, the dead letter a dead_letter
// event. Untraced (otel's no-op provider), no span is recorded, and a caller's traceparent
// still reaches the dead letter and the logs.
func TestTraceFromHTTPRequestToSinkAndDeadLetter(t *testing.T) {
	otel.SetTextMapPropagator(telemetry.Propagator())
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})

	e := newEnv(t, envOpts{})
	sink := newFaultySink(e.store)
	sink.reject["tr_0002"] = true // dead-lettered
	sink.failTimes["tr_0003"] = 1 // retried once
	sink.reject["off_0001"] = true
	var logs syncBuffer
	log := slog.New(telemetry.LogHandler(slog.NewJSONHandler(&logs, nil)))
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.Logger = log })
	base := startUploadAPI(t, e, 1<<20)

	job := submitTraced(t, e, base, chunkLines(5, "tr"), "")
	if job.Written != 4 || job.DeadLettered != 1 {
		t.Fatalf("job %+v, want 4 written and 1 dead-lettered", job)
	}
	if err := tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	var api *tracetest.SpanStub
	for i := range spans {
		if spans[i].Name == "POST /v1/jobs" && spans[i].SpanKind == trace.SpanKindServer {
			api = &spans[i]
		}
	}
	if api == nil {
		t.Fatalf("no server span POST /v1/jobs among %d spans: %v", len(spans), spanNames(spans))
	}
	tid := api.SpanContext.TraceID()
	byName := map[string][]tracetest.SpanStub{}
	msgSpans := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range spans {
		if s.SpanContext.TraceID() != tid {
			continue
		}
		name := s.Name
		if strings.HasPrefix(name, "process ") {
			name = "process"
			msgSpans[s.SpanContext.SpanID()] = s
		}
		byName[name] = append(byName[name], s)
	}
	for _, name := range []string{"load job", "process", "chunk batch", "sqlite upsert ttrpg_chunks_dev"} {
		if len(byName[name]) == 0 {
			t.Fatalf("no %q span in the request's trace; its spans: %v", name, spanNames(spans))
		}
	}
	if byName["load job"][0].Parent.SpanID() != api.SpanContext.SpanID() {
		t.Errorf("load span's parent %v, want the API span", byName["load job"][0].Parent.SpanID())
	}
	// Every batch links to message spans of this trace; every sink span is a batch's child
	// with its command, collection and document count.
	batches := map[trace.SpanID]bool{}
	for _, b := range byName["chunk batch"] {
		batches[b.SpanContext.SpanID()] = true
		if len(b.Links) == 0 {
			t.Errorf("batch span %v links to no message", b.SpanContext.SpanID())
		}
		for _, l := range b.Links {
			if _, ok := msgSpans[l.SpanContext.SpanID()]; !ok {
				t.Errorf("batch links to %v, not a message span of the trace", l.SpanContext.SpanID())
			}
		}
	}
	for _, s := range byName["sqlite upsert ttrpg_chunks_dev"] {
		if !batches[s.Parent.SpanID()] {
			t.Errorf("sink span's parent %v is not a batch span", s.Parent.SpanID())
		}
		attrs := attrMap(s.Attributes)
		if attrs["db.operation.name"] != "upsert" || attrs["db.collection.name"] != "ttrpg_chunks_dev" || attrs["sluice.documents"] == "" {
			t.Errorf("sink span attributes %v", attrs)
		}
	}
	events := map[string]int{}
	for _, s := range msgSpans {
		if s.SpanKind != trace.SpanKindConsumer || s.Parent.SpanID() != byName["load job"][0].SpanContext.SpanID() {
			t.Errorf("message span kind %v parent %v, want a consumer under the load span", s.SpanKind, s.Parent.SpanID())
		}
		for _, ev := range s.Events {
			events[ev.Name]++
		}
	}
	if events[telemetry.EventRetry] == 0 || events[telemetry.EventDeadLetter] != 1 {
		t.Errorf("message span events %v, want a retry and one dead letter", events)
	}

	// The dead letter and its log line carry the trace id.
	dead := e.deadLetters(t)
	if len(dead) != 1 || dead[0]["trace_id"] != tid.String() {
		t.Fatalf("dead letters %v, want one with trace_id %s", dead, tid)
	}
	if !loggedDeadLetter(logs.lines(t), tid.String()) {
		t.Fatalf("no dead-letter log line with trace_id %s in %v", tid, logs.lines(t))
	}

	t.Run("untraced", func(t *testing.T) {
		otel.SetTracerProvider(noop.NewTracerProvider())
		exp.Reset()
		// The settler logs one dead-letter line a second (settle.LogLimiter).
		time.Sleep(1100 * time.Millisecond)
		const caller = "4bf92f3577b34da6a3ce929d0e0e4736"
		job := submitTraced(t, e, base, chunkLines(3, "off"), "00-"+caller+"-00f067aa0ba902b7-01")
		if job.DeadLettered != 1 {
			t.Fatalf("job %+v, want 1 dead-lettered", job)
		}
		if n := len(exp.GetSpans()); n != 0 {
			t.Fatalf("%d spans recorded with tracing off", n)
		}
		var found bool
		for _, d := range e.deadLetters(t) {
			found = found || (d["job_id"] == job.JobID && d["trace_id"] == caller)
		}
		if !found {
			t.Fatalf("dead letter of job %s lacks the caller's trace id %s: %v", job.JobID, caller, e.deadLetters(t))
		}
		if !loggedDeadLetter(logs.lines(t), caller) {
			t.Fatalf("no dead-letter log line with the caller's trace_id %s", caller)
		}
	})
}

func loggedDeadLetter(lines []map[string]any, tid string) bool {
	for _, rec := range lines {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "dead-lettered") && rec[telemetry.LogTraceID] == tid {
			return true
		}
	}
	return false
}

func spanNames(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name+"@"+s.SpanContext.TraceID().String()[:8])
	}
	return out
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// A command submitted under a span (the API request's) carries its trace context: the
// command worker's message span continues it, and the span of the chain it was written in
// links to it; the graph projection's transaction is its child.
func TestCommandMessageSpanContinuesTheSubmitter(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(telemetry.Propagator())
	t.Cleanup(func() {
		otel.SetTracerProvider(noop.NewTracerProvider())
		_ = tp.Shutdown(context.Background())
	})
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ctx, submit := tp.Tracer("test").Start(context.Background(), "POST /api/features/submit")
	id, err := ce.client.Submit(ctx, featureCmd("FR-710000000001"))
	submit.End()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ce.client.Await(context.Background(), id, 30*time.Second); err != nil || !ok {
		t.Fatalf("await %s: %v %v", id, ok, err)
	}
	// The chain's span links to the message span and is its child.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var msg trace.SpanID
		for _, s := range exp.GetSpans() {
			if strings.HasPrefix(s.Name, "process ") && s.SpanKind == trace.SpanKindConsumer &&
				s.Parent.SpanID() == submit.SpanContext().SpanID() && s.SpanContext.TraceID() == submit.SpanContext().TraceID() {
				msg = s.SpanContext.SpanID()
			}
		}
		var chain trace.SpanID
		for _, s := range exp.GetSpans() {
			if s.Name == "command chain" && msg.IsValid() && s.Parent.SpanID() == msg && len(s.Links) == 1 && s.Links[0].SpanContext.SpanID() == msg {
				chain = s.SpanContext.SpanID()
			}
		}
		// The graph projection's transaction, shared by the chains written together, is a
		// child of the first one's.
		for _, s := range exp.GetSpans() {
			if strings.HasPrefix(s.Name, "sqlite upsert graph") && chain.IsValid() && s.Parent.SpanID() == chain {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no command message span under the submitter's span with its chain's span: %v", spanNames(exp.GetSpans()))
		}
		time.Sleep(20 * time.Millisecond) // the spans end after the ack, which Await does not wait for
	}
}
