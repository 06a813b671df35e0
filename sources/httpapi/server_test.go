package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/instrument/instrumenttest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// TestSubmitStreamsLargeBody sends 50 MB of NDJSON through a real listener. The generator
// holds back everything after the first 256 KiB until the service has seen the first line, so
// the test fails if the server reads the whole body before calling SubmitJob; heap use is
// sampled while the service reads and must stay far below the body's size.
func TestSubmitStreamsLargeBody(t *testing.T) {
	const (
		lineLen   = 1000
		lines     = 50_000 // 50 MB
		heldBack  = 256 << 10
		heapBound = 24 << 20
	)
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	jobs := &fakeJobs{
		firstLine: make(chan struct{}),
		every: func() {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			for {
				p := peak.Load()
				if ms.HeapAlloc <= p || peak.CompareAndSwap(p, ms.HeapAlloc) {
					break
				}
			}
		},
	}
	s := newServer(t, httpapi.Config{Jobs: jobs, MaxUploadBytes: 64 << 20})
	stop := run(t, s)

	line := []byte(`{"id":"c0000000","text":"` + strings.Repeat("x", lineLen-len(`{"id":"c0000000","text":""}`)-1) + `"}` + "\n")
	if len(line) != lineLen {
		t.Fatalf("line is %d bytes", len(line))
	}
	pr, pw := io.Pipe()
	genErr := make(chan error, 1)
	go func() { genErr <- writeHeldBack(pw, line, lines, heldBack, jobs.firstLine) }()

	req, err := http.NewRequest("POST", "http://"+s.Addr()+"/v1/jobs?env=test&file=big.jsonl", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatalf("POST: %v (generator: %v)", err, <-genErr)
	}
	defer resp.Body.Close()
	if err := <-genErr; err != nil {
		t.Fatalf("generator: %v", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	var res httpapi.SubmitResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	calls := jobs.Calls()
	if len(calls) != 1 || calls[0].Lines != lines || calls[0].Bytes != lines*lineLen || calls[0].Format != "jsonl" {
		t.Fatalf("service saw %+v, want %d lines, %d bytes, format jsonl", calls, lines, lines*lineLen)
	}
	if res.Total != lines || res.Env != "test" {
		t.Errorf("result = %+v", res)
	}
	grew := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("heap: base %d MiB, peak %d MiB while streaming %d MiB", base.HeapAlloc>>20, peak.Load()>>20, lines*lineLen>>20)
	if peak.Load() == 0 || grew > heapBound {
		t.Errorf("heap grew by %d MiB while streaming (peak %d), want < %d MiB", grew>>20, peak.Load(), heapBound>>20)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
}

// writeHeldBack writes line n times to pw, then closes it. What follows the first heldBack
// bytes waits until firstLine is closed (the service has seen a line); if that takes over
// 30 s, it closes pw with the error it returns.
func writeHeldBack(pw *io.PipeWriter, line []byte, n, heldBack int, firstLine <-chan struct{}) error {
	var sent int
	for i := 0; i < n; i++ {
		if sent >= heldBack && sent-len(line) < heldBack {
			select {
			case <-firstLine:
			case <-time.After(30 * time.Second):
				err := errors.New("the service saw no line before the body was complete: the server buffers bodies")
				pw.CloseWithError(err)
				return err
			}
		}
		if _, err := pw.Write(line); err != nil {
			return err
		}
		sent += len(line)
	}
	return pw.Close()
}

func TestRunShutsDownOnCancel(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	stop := run(t, s)
	c := client(t)
	resp, err := c.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /healthz = %d", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	c.CloseIdleConnections()
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Error("listener still accepts after Run returned")
	}
	if err := s.Run(context.Background()); !errors.Is(err, httpapi.ErrServerClosed) {
		t.Errorf("second Run = %v, want ErrServerClosed", err)
	}
}

func TestRunAfterClose(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, httpapi.ErrServerClosed) {
		t.Errorf("Run after Close = %v, want ErrServerClosed", err)
	}
	// The port is free again.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port not released by Close: %v", err)
	}
	ln.Close()
}

// waitLog returns a logger that closes the returned channel when msg is logged.
func waitLog(msg string) (*slog.Logger, chan struct{}) {
	ch := make(chan struct{})
	return slog.New(signalHandler{msg: msg, once: new(sync.Once), ch: ch}), ch
}

func TestRunFinishesInFlightRequests(t *testing.T) {
	logger, shuttingDown := waitLog("http api shutting down")
	jobs := &fakeJobs{entered: make(chan struct{}), release: make(chan struct{})}
	s := newServer(t, httpapi.Config{Jobs: jobs, Logger: logger})
	stop := run(t, s)

	type answer struct {
		status int
		err    error
	}
	answers := make(chan answer, 1)
	c := client(t)
	go func() {
		resp, err := c.Post("http://"+s.Addr()+"/v1/jobs", "application/x-ndjson", strings.NewReader("{}\n{}\n"))
		if err != nil {
			answers <- answer{err: err}
			return
		}
		resp.Body.Close()
		answers <- answer{status: resp.StatusCode}
	}()
	<-jobs.entered

	runErr := make(chan error, 1)
	go func() { runErr <- stop() }()
	<-shuttingDown
	close(jobs.release)

	a := <-answers
	if a.err != nil || a.status != http.StatusAccepted {
		t.Errorf("in-flight request during shutdown: status %d, err %v; want 202", a.status, a.err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestRunShutdownTimeout(t *testing.T) {
	logger, shuttingDown := waitLog("http api shutting down")
	jobs := &fakeJobs{entered: make(chan struct{}), release: make(chan struct{})}
	s := newServer(t, httpapi.Config{Jobs: jobs, Logger: logger, ShutdownTimeout: 50 * time.Millisecond})
	stop := run(t, s)
	done := make(chan struct{})
	c := client(t)
	go func() {
		defer close(done)
		resp, err := c.Post("http://"+s.Addr()+"/v1/jobs", "", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-jobs.entered
	err := stop()
	<-shuttingDown
	close(jobs.release)
	<-done
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want a shutdown timeout (context.DeadlineExceeded)", err)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Registry: reg})
	h := s.Handler()
	serve(t, h, "GET", "/v1/jobs/secret-job-path", readTok, nil, nil)                       // 404 from the route
	serve(t, h, "GET", "/no/such/route/abc123", "", nil, nil)                               // 404 from the mux
	serve(t, h, "BREW", "/v1/jobs/x", "", nil, nil)                                         // 405, odd method
	serve(t, h, "POST", "/v1/jobs", writeTok, strings.NewReader("{}"), nil)                 // 202
	serve(t, h, "POST", "/v1/jobs", "invalid-token-0000000000", strings.NewReader(""), nil) // 401

	rec := serve(t, h, "GET", "/metrics", readTok, nil, nil)
	if rec.Code != 200 {
		t.Fatalf("GET /metrics = %d", rec.Code)
	}
	out := rec.Body.String()
	mustContain(t, "metrics", out,
		`sluice_http_requests_total{code="404",method="GET",route="/v1/jobs/{id}"} 1`,
		`sluice_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`sluice_http_requests_total{code="405",method="OTHER",route="unmatched"} 1`,
		`sluice_http_requests_total{code="202",method="POST",route="/v1/jobs"} 1`,
		`sluice_http_requests_total{code="401",method="POST",route="/v1/jobs"} 1`,
		`sluice_http_request_duration_seconds_count{method="POST",route="/v1/jobs"} 2`,
		`sluice_http_requests_in_flight 1`, // the /metrics request itself
	)
	for _, leak := range []string{"secret-job-path", "abc123", "BREW", readTok, writeTok, "invalid-token"} {
		if strings.Contains(out, leak) {
			t.Errorf("metrics contain %q", leak)
		}
	}

	// A second server on the same registry shares the metrics instead of failing.
	s2 := newServer(t, httpapi.Config{Registry: reg})
	serve(t, s2.Handler(), "GET", "/healthz", "", nil, nil)
	n := testCount(t, reg, "sluice_http_requests_total", map[string]string{"route": "/healthz"})
	if n != 1 {
		t.Errorf("healthz count on the shared registry = %v, want 1", n)
	}
}

// testCount returns the value of the counter name with labels from reg.
func testCount(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := instrumenttest.Value(t, reg, name, labels)
	return v
}

func TestPanicBecomesProblem(t *testing.T) {
	var logs logBuffer
	s := newServer(t, httpapi.Config{Jobs: panicJobs{}, Logger: debugLogger(&logs)})
	rec := serve(t, s.Handler(), "GET", "/v1/jobs/x", "", nil, nil)
	p := decodeProblem(t, rec, http.StatusInternalServerError)
	if strings.Contains(p.Detail, "boom") {
		t.Errorf("panic value leaked: %q", p.Detail)
	}
	mustContain(t, "logs", logs.String(), "http handler panicked", p.RequestID)
}

// panicJobs panics in GetJob.
type panicJobs struct{ httpapi.JobService }

func (panicJobs) GetJob(context.Context, string) (jobs.Job, error) { panic("boom") }

// A client that stops sending mid-upload must not hold the request forever.
func TestUploadStallTimesOut(t *testing.T) {
	jobs := &fakeJobs{}
	s := newServer(t, httpapi.Config{Jobs: jobs})
	httpapi.SetBodyIdleTimeout(s, 100*time.Millisecond)
	run(t, s)

	pr, pw := io.Pipe()
	defer pw.Close()
	go func() { _, _ = pw.Write([]byte("{\"id\":\"a\"}\n")) }() // then nothing more
	req, _ := http.NewRequest("POST", "http://"+s.Addr()+"/v1/jobs", pr)
	resp, err := client(t).Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want 408: %s", resp.StatusCode, b)
	}
	if calls := jobs.Calls(); len(calls) != 1 || calls[0].Lines != 1 {
		t.Errorf("service saw %+v, want one call that read one line", calls)
	}
}

// Regression guard: the per-read upload deadline must be cleared at EOF, or the server's
// background read times out while the service is still publishing and cancels its context.
func TestSlowServiceAfterUploadKeepsContext(t *testing.T) {
	const idle = 50 * time.Millisecond
	svc := &slowJobs{wait: 6 * idle, ctxErr: make(chan error, 1)}
	s := newServer(t, httpapi.Config{Jobs: svc})
	httpapi.SetBodyIdleTimeout(s, idle)
	run(t, s)
	resp, err := client(t).Post("http://"+s.Addr()+"/v1/jobs", "application/x-ndjson", strings.NewReader("{}\n{}\n"))
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("status %d, want 202", resp.StatusCode)
	}
	if err := <-svc.ctxErr; err != nil {
		t.Errorf("request context ended while the service worked after EOF: %v", err)
	}
}

// slowJobs reads the body to EOF and once more, then works for wait (simulated by a timer, as publishing
// would) and records whether its context survived.
type slowJobs struct {
	httpapi.JobService
	wait   time.Duration
	ctxErr chan error // receives ctx.Err() after the work (buffered 1)
}

func (j *slowJobs) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return httpapi.SubmitResult{}, fmt.Errorf("read: %w", err)
	}
	// Decoders often read again after EOF.
	if n, err := req.Body.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		return httpapi.SubmitResult{}, fmt.Errorf("read after EOF = %d, %v", n, err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(j.wait):
	}
	j.ctxErr <- ctx.Err()
	return httpapi.SubmitResult{JobID: "j"}, nil
}
