package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
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
func newFlakyClient(t *testing.T, f *flaky) (*Client, *syncBuffer) {
	t.Helper()
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	stderr := &syncBuffer{}
	c, err := New(Config{URL: ts.URL, Token: "secret-token-0123456789", HTTP: ts.Client(), Waits: stderr, Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return c, stderr
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
				err = c.DoIdempotent(context.Background(), tc.method, "/v1/dlq/replay", nil, body, &out)
			} else {
				err = c.Do(context.Background(), tc.method, "/v1/dlq/replay", nil, body, &out)
			}
			sends := f.sends()
			if len(sends) != tc.wantSends {
				t.Fatalf("%d sends, want %d", len(sends), tc.wantSends)
			}
			refusedToTheEnd := tc.n >= len(sends)
			var ae *Error
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
	if err := c.Do(context.Background(), "GET", "/v1/jobs", nil, nil, nil); err != nil {
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
	go func() { done <- c.Do(ctx, "GET", "/v1/jobs", nil, nil, nil) }()
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
	c, err := New(Config{URL: ts.URL, HTTP: ts.Client(), Backoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var got string
	err = c.Events(context.Background(), "/v1/jobs/j1/events", func(event string, data []byte) bool {
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
		{"huge is capped", "99999999999999", MaxRetryWait, true},
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

// New refuses a configuration without a URL instead of failing on every request later.
func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"no URL", Config{}, true},
		{"bad URL", Config{URL: "http://[::1"}, true},
		{"URL only", Config{URL: DefaultURL}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("New(%+v) = %v, want error %v", tc.cfg, err, tc.wantErr)
			}
			if err == nil && (c.cfg.HTTP == nil || c.cfg.Backoff != firstBackoff) {
				t.Fatalf("defaults not set: %+v", c.cfg)
			}
		})
	}
}
