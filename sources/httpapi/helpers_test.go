package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...)
}

// submitCall is what fakeJobs saw of one SubmitJob call.
type submitCall struct {
	Env, File, Format string
	Force             bool
	Principal         string
	HasPrincipal      bool
	Lines, Bytes      int64
}

// fakeJobs is a JobService that really reads the body: it counts bytes and lines with a fixed
// buffer, so it holds nothing but its counters however large the body is.
type fakeJobs struct {
	// result is returned (with JobID filled in when empty) by SubmitJob.
	result httpapi.SubmitResult
	// submitErr, when set, is returned after the body was read.
	submitErr error
	// hideReadErr reports a body read failure as an ErrBadRequest without wrapping it, as a
	// parser that says "unexpected end of file" might.
	hideReadErr bool
	// firstLine, when set, is closed as soon as the first complete line has been read.
	firstLine chan struct{}
	// every, when set, is called after each MiB read.
	every func()
	// entered and release, when set, make SubmitJob signal entry and block until release is
	// closed, before reading the body.
	entered chan struct{}
	release chan struct{}

	jobs   map[string]jobs.Job
	getErr error

	mu    sync.Mutex
	calls []submitCall
}

func (f *fakeJobs) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	if f.entered != nil {
		close(f.entered)
		<-f.release
	}
	call := submitCall{Env: req.Env, File: req.File, Format: req.Format, Force: req.Force}
	call.Principal, call.HasPrincipal = httpapi.Principal(ctx)
	buf := make([]byte, 32<<10)
	var nextMiB int64 = 1 << 20
	var last byte = '\n'
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			nl := int64(bytes.Count(chunk, []byte{'\n'}))
			if call.Lines == 0 && nl > 0 && f.firstLine != nil {
				close(f.firstLine)
			}
			call.Lines += nl
			call.Bytes += int64(n)
			last = chunk[n-1]
			for f.every != nil && call.Bytes >= nextMiB {
				f.every()
				nextMiB += 1 << 20
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.record(call)
			if f.hideReadErr {
				return httpapi.SubmitResult{}, fmt.Errorf("%w: unexpected end of chunk file", httpapi.ErrBadRequest)
			}
			return httpapi.SubmitResult{}, fmt.Errorf("read chunk file: %w", err)
		}
	}
	if last != '\n' {
		call.Lines++ // a last line without a newline
	}
	f.record(call)
	if f.submitErr != nil {
		return httpapi.SubmitResult{}, f.submitErr
	}
	res := f.result
	if res.JobID == "" {
		res.JobID = "job-1"
	}
	res.Env = req.Env
	res.Total = call.Lines
	res.Published = call.Lines
	return res, nil
}

func (f *fakeJobs) record(c submitCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fakeJobs) Calls() []submitCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]submitCall(nil), f.calls...)
}

func (f *fakeJobs) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	if f.getErr != nil {
		return jobs.Job{}, f.getErr
	}
	j, ok := f.jobs[id]
	if !ok {
		return jobs.Job{}, fmt.Errorf("get job %s: %w", id, httpapi.ErrNotFound)
	}
	return j, nil
}

// fakeChunks serves documents keyed by env + "/" + id.
type fakeChunks struct {
	docs map[string]string
	err  error
}

func (f *fakeChunks) GetChunk(ctx context.Context, env, id string) (json.RawMessage, error) {
	if f.err != nil {
		return nil, f.err
	}
	d, ok := f.docs[env+"/"+id]
	if !ok {
		return nil, fmt.Errorf("chunk %s/%s: %w", env, id, httpapi.ErrNotFound)
	}
	return json.RawMessage(d), nil
}

// Tokens used across tests; each at least 16 characters.
const (
	readTok  = "read-token-0123456789"
	writeTok = "write-token-0123456789"
	adminTok = "admin-token-0123456789"
)

func testTokens() []httpapi.Token {
	return []httpapi.Token{
		{Name: "reader", Token: readTok, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
		{Name: "writer", Token: writeTok, Scopes: []httpapi.Scope{httpapi.ScopeWrite}},
		{Name: "operator", Token: adminTok, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
	}
}

// newServer builds a Server on 127.0.0.1:0 with fakes filled in where cfg has none, and closes
// it at the end of the test.
func newServer(t *testing.T, cfg httpapi.Config) *httpapi.Server {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Jobs == nil {
		cfg.Jobs = &fakeJobs{}
	}
	if cfg.Chunks == nil {
		cfg.Chunks = &fakeChunks{}
	}
	if cfg.RateLimits == (httpapi.RateLimits{}) {
		// Tests send bursts of requests; the rate limit tests set their own limits.
		off := httpapi.Rate{PerSecond: -1}
		cfg.RateLimits = httpapi.RateLimits{Uploads: off, Graph: off, Replay: off, Feeds: off}
	}
	s, err := httpapi.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// serve sends one request to h and returns the recorded answer. token "" sends no
// Authorization header.
func serve(t *testing.T, h http.Handler, method, target, token string, body io.Reader, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// problem is the problem+json shape clients see.
type problem struct {
	Type      string            `json:"type"`
	Title     string            `json:"title"`
	Status    int               `json:"status"`
	Detail    string            `json:"detail"`
	Instance  string            `json:"instance"`
	RequestID string            `json:"request_id"`
	Checks    map[string]string `json:"checks"`
}

// decodeProblem asserts rec is a well-formed problem+json answer with status and returns it.
func decodeProblem(t *testing.T, rec *httptest.ResponseRecorder, status int) problem {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status = %d, want %d; body: %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json; body: %s", ct, rec.Body)
	}
	var p problem
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("decode problem %q: %v", rec.Body, err)
	}
	if p.Type != "about:blank" || p.Title != http.StatusText(status) || p.Status != status || p.Detail == "" || p.Instance == "" {
		t.Fatalf("malformed problem: %+v", p)
	}
	if p.RequestID == "" || p.RequestID != rec.Header().Get("X-Request-Id") {
		t.Fatalf("problem request_id %q does not match X-Request-Id %q", p.RequestID, rec.Header().Get("X-Request-Id"))
	}
	return p
}

// logBuffer collects JSON log lines; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func debugLogger(b *logBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// signalHandler is a slog.Handler that closes ch when a record with message msg is logged.
type signalHandler struct {
	msg  string
	once *sync.Once
	ch   chan struct{}
}

func (h signalHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h signalHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.once.Do(func() { close(h.ch) })
	}
	return nil
}
func (h signalHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h signalHandler) WithGroup(string) slog.Handler      { return h }

// run starts s.Run in a goroutine; the returned stop cancels it and returns Run's error. stop
// is also called at cleanup.
func run(t *testing.T, s *httpapi.Server) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("Run did not return within 30s of cancel")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// client returns an HTTP client whose idle connections are closed at cleanup, so goleak sees
// no leftover connection goroutines.
func client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 60 * time.Second}
}

func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// recorder sends req to h and returns the recorded answer.
func recorder(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}
