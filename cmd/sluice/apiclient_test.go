package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// flaky is an API double that refuses the first n requests with status and the given
// Retry-After ("" for none), then answers 200 with {"ok":true}; it records every request.
type flaky struct {
	n          int
	status     int
	retryAfter string
	// seen, when set, gets each request's number (1-based) before it is answered.
	seen chan int

	mu     sync.Mutex // guards bodies, heads
	bodies [][]byte
	heads  []http.Header
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies = append(f.bodies, b)
	f.heads = append(f.heads, r.Header.Clone())
	n := len(f.bodies)
	f.mu.Unlock()
	if f.seen != nil {
		f.seen <- n
	}
	if n <= f.n {
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, `{"type":"about:blank","title":"`+http.StatusText(f.status)+`","status":`+strconv.Itoa(f.status)+`,"detail":"come back later"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func (f *flaky) sends() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.bodies...)
}

// newFlakyClient serves f and returns a client for it whose waiting messages go to stderr.
func newFlakyClient(t *testing.T, f *flaky) (*apiClient, *syncBuffer) {
	t.Helper()
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	stderr := &syncBuffer{}
	return &apiClient{base: ts.URL, token: "secret-token-0123456789", http: ts.Client(), stderr: stderr, backoff: time.Millisecond}, stderr
}

// Issue 11: the CLI (sluice jobs, sluice dlq) returned the error on 429 and 503, which the
// API's per-token rate limits, its caps and a broker away answer with Retry-After, while the
// Python client waits them out. It now waits and sends again, up to 8 times, the body
// identical each time.
func TestAPIClientWaitsOut429And503(t *testing.T) {
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	for _, tc := range []struct {
		name       string
		method     string
		idempotent bool
		status     int
		n          int
		retryAfter string
		wantSends  int
	}{
		{"GET 503 seconds", "GET", false, 503, 3, "0", 4},
		{"GET 429 http date", "GET", false, 429, 2, past, 3},
		{"GET 503 no Retry-After: backoff", "GET", false, 503, 3, "", 4},
		{"GET 503 unparsable Retry-After: backoff", "GET", false, 503, 1, "soon", 2},
		{"POST 429 is refused before acting", "POST", false, 429, 2, "0", 3},
		{"idempotent POST 503", "POST", true, 503, 2, "0", 3},
		{"idempotent DELETE 503", "DELETE", true, 503, 8, "0", 9},
		{"POST 503 may have acted: not sent again", "POST", false, 503, 1, "0", 1},
		{"DELETE 503 may have acted: not sent again", "DELETE", false, 503, 1, "0", 1},
		{"500 is not waited out", "GET", false, 500, 1, "0", 1},
		{"400 is not waited out", "POST", true, 400, 1, "0", 1},
		{"the cap: 8 sends again, then the error", "GET", false, 429, 100, "0", 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &flaky{n: tc.n, status: tc.status, retryAfter: tc.retryAfter}
			c, stderr := newFlakyClient(t, f)
			var body any
			if tc.method != "GET" {
				body = map[string]any{"ids": []string{"a", "b"}, "dry_run": true}
			}
			var out struct{ OK bool }
			var err error
			if tc.idempotent {
				err = c.doIdempotent(context.Background(), tc.method, "/v1/dlq/replay", nil, body, &out)
			} else {
				err = c.do(context.Background(), tc.method, "/v1/dlq/replay", nil, body, &out)
			}
			sends := f.sends()
			if len(sends) != tc.wantSends {
				t.Fatalf("%d sends, want %d", len(sends), tc.wantSends)
			}
			refusedToTheEnd := tc.n >= len(sends)
			var ae *apiError
			switch {
			case refusedToTheEnd && (!errors.As(err, &ae) || ae.Status != tc.status):
				t.Fatalf("err = %v, want the %d problem", err, tc.status)
			case !refusedToTheEnd && (err != nil || !out.OK):
				t.Fatalf("err = %v, out = %+v, want the 200 answer", err, out)
			}
			for i, b := range sends {
				if !bytes.Equal(b, sends[0]) {
					t.Fatalf("send %d carried %q, the first %q", i+1, b, sends[0])
				}
				if h := f.heads[i]; h.Get("Authorization") != "Bearer secret-token-0123456789" || (body != nil && h.Get("Content-Type") != "application/json") {
					t.Fatalf("send %d lost its headers: %v", i+1, h)
				}
			}
			if body != nil && len(sends[0]) == 0 {
				t.Fatal("the body was not sent")
			}
			// One message per wait, none without a wait, and never the token.
			waits := len(sends) - 1
			if got := strings.Count(stderr.String(), "sending again in"); got != waits {
				t.Fatalf("%d waiting messages for %d waits:\n%s", got, waits, stderr.String())
			}
			if waits > 0 && !strings.Contains(stderr.String(), "come back later") {
				t.Fatalf("the waiting message does not say why:\n%s", stderr.String())
			}
			if strings.Contains(stderr.String(), "secret-token") {
				t.Fatal("the token appears on stderr")
			}
		})
	}
}

// Retry-After is honoured: one second asked, one second waited.
func TestAPIClientHonoursRetryAfter(t *testing.T) {
	f := &flaky{n: 1, status: 429, retryAfter: "1"}
	c, stderr := newFlakyClient(t, f)
	start := time.Now()
	if err := c.do(context.Background(), "GET", "/v1/jobs", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Fatalf("waited %s for Retry-After: 1", d)
	}
	if !strings.Contains(stderr.String(), "sending again in 1s (1 of 8)") {
		t.Fatalf("waiting message: %q", stderr.String())
	}
}

// Cancelling (Ctrl-C) ends a wait at once, with the context's error.
func TestAPIClientWaitEndsWithContext(t *testing.T) {
	f := &flaky{n: 100, status: 503, retryAfter: "30", seen: make(chan int, 10)}
	c, _ := newFlakyClient(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.do(ctx, "GET", "/v1/jobs", nil, nil, nil) }()
	<-f.seen
	time.Sleep(50 * time.Millisecond) // into the 30 s wait
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("returned %s after the cancel", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("do still waiting 5 s after its context was cancelled")
	}
	if n := len(f.sends()); n != 1 {
		t.Fatalf("%d sends, want 1", n)
	}
}

// The job event stream (sluice jobs wait) waits out a 429 of the per-token feed cap too.
func TestAPIClientEventsWaitOut429(t *testing.T) {
	var calls int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if r.Header.Get("Accept") != "text/event-stream" {
			http.Error(w, "want an event stream", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "event: done\ndata: {\"state\":\"completed\"}\n\n")
	}))
	defer ts.Close()
	c := &apiClient{base: ts.URL, http: ts.Client(), backoff: time.Millisecond}
	var got string
	err := c.events(context.Background(), "/v1/jobs/j1/events", func(event string, data []byte) bool {
		got = event + " " + string(data)
		return event == "done"
	})
	if err != nil || got != `done {"state":"completed"}` || calls != 2 {
		t.Fatalf("events: err %v, got %q after %d calls", err, got, calls)
	}
}

func TestRetryDelay(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, v string
		want    time.Duration
		ok      bool
	}{
		{"seconds", "5", 5 * time.Second, true},
		{"zero", "0", 0, true},
		{"spaces", " 2 ", 2 * time.Second, true},
		{"huge is capped", "99999999999999", maxRetryWait, true},
		{"negative", "-1", 0, false},
		{"fraction", "1.5", 0, false},
		{"words", "soon", 0, false},
		{"empty", "", 0, false},
		{"date ahead", now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second, true},
		{"date past", now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, ok := retryDelay(http.Header{"Retry-After": {tc.v}}, now)
			if d != tc.want || ok != tc.ok {
				t.Fatalf("retryDelay(%q) = %s, %v; want %s, %v", tc.v, d, ok, tc.want, tc.ok)
			}
		})
	}
}

// Against a real sluice serve whose replay rate is one a second, burst one: the second
// `sluice dlq replay` right after the first got 429 and failed; it now waits and succeeds.
func TestCLIWaitsOutTheServersRateLimit(t *testing.T) {
	s := startServer(t, "serve", []string{"SLUICE_API_RATE_LIMITS=replay=0.5:1"}, "--data-dir", filepath.Join(t.TempDir(), "data"))
	for i := range 2 {
		cmd := exec.Command(binary, "dlq", "replay", "--dry-run", "--job", "j-none")
		cmd.Env = append(os.Environ(), "SLUICE_API_URL="+s.base)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("replay %d: %v\nstdout: %s\nstderr: %s", i+1, err, stdout.String(), stderr.String())
		}
		waited := strings.Contains(stderr.String(), "429 Too Many Requests") && strings.Contains(stderr.String(), "sending again in")
		if i == 0 && waited || i == 1 && !waited {
			t.Fatalf("replay %d: waited %v; stderr: %s", i+1, waited, stderr.String())
		}
		if i == 1 && time.Since(start) < time.Second {
			t.Fatalf("replay 2 took %s: it did not wait for the bucket", time.Since(start))
		}
		if !strings.Contains(stdout.String(), "would replay 0") {
			t.Fatalf("replay %d printed %q", i+1, stdout.String())
		}
	}
}
