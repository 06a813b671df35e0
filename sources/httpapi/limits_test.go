package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// dial opens a raw TCP connection to s, closed at cleanup.
func dial(t *testing.T, s *httpapi.Server) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedWithin reports whether the server closes c (read returns EOF or a reset) within d,
// reading and dropping whatever it answers first.
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false
	}
	return true // EOF (err nil) or a reset
}

func getHealthz(t *testing.T, s *httpapi.Server) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("/healthz: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz = %d", resp.StatusCode)
	}
}

// Regression: the server had no read deadline on bodies before authentication: POSTs with
// Content-Length: 1000 and a 1-byte body were held forever (after a 401, the server waited
// to drain the rest), and 2 × 10,000 of them exhausted the file descriptors. Now every body
// read has the idle deadline from the first byte, whatever the route and token.
func TestSlowlorisBodiesAreCut(t *testing.T) {
	s := newServer(t, httpapi.Config{Tokens: testTokens(), BodyIdleTimeout: 300 * time.Millisecond})
	run(t, s)
	const n = 200
	conns := make([]net.Conn, n)
	for i := range conns {
		c := dial(t, s)
		auth := ""
		switch i % 4 {
		case 1:
			auth = "Authorization: Bearer " + writeTok + "\r\n" // reaches the upload handler
		case 2:
			auth = "Authorization: Bearer " + readTok + "\r\n" // 403
		}
		target := "/v1/jobs"
		if i%4 == 3 {
			target = "/v1/requirements" // a JSON body route, unauthenticated
		}
		if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: 1000\r\n\r\nx", target, auth); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	getHealthz(t, s) // answers while they hang
	start := time.Now()
	var wg sync.WaitGroup
	open := make(chan int, n)
	for i, c := range conns {
		wg.Go(func() {
			if !closedWithin(c, 5*time.Second) {
				open <- i
			}
		})
	}
	wg.Wait()
	close(open)
	if len(open) > 0 {
		t.Fatalf("%d of %d slow-body connections still open 5 s after sending 1 of 1000 bytes (first: #%d)", len(open), n, <-open)
	}
	t.Logf("%d slow-body connections closed within %s", n, time.Since(start).Round(time.Millisecond))
	getHealthz(t, s)
}

// Slow headers are cut by ReadHeaderTimeout.
func TestSlowHeadersAreCut(t *testing.T) {
	s := newServer(t, httpapi.Config{ReadHeaderTimeout: 200 * time.Millisecond})
	run(t, s)
	c := dial(t, s)
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	if !closedWithin(c, 3*time.Second) {
		t.Fatal("a connection sending half its headers is still open after 3 s")
	}
}

// A slow but alive upload goes on far longer than the idle timeout.
func TestSlowButAliveUploadSucceeds(t *testing.T) {
	jobs := &fakeJobs{}
	s := newServer(t, httpapi.Config{Jobs: jobs, BodyIdleTimeout: 500 * time.Millisecond})
	run(t, s)
	pr, pw := io.Pipe()
	go func() {
		line := []byte(`{"id":"a","text":"` + strings.Repeat("x", 1000) + `"}` + "\n")
		for range 20 { // 20 × 100 ms: 4 idle timeouts in all
			if _, err := pw.Write(line); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		pw.Close()
	}()
	resp, err := client(t).Post("http://"+s.Addr()+"/v1/jobs", "application/x-ndjson", pr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("slow upload = %d, want 202", resp.StatusCode)
	}
	if calls := jobs.Calls(); len(calls) != 1 || calls[0].Lines != 20 {
		t.Fatalf("calls = %+v, want one of 20 lines", calls)
	}
}

// readResponse reads one HTTP response from c.
func readResponse(t *testing.T, c net.Conn) *http.Response {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Connections past MaxConns are answered 503 with Retry-After and closed; a slot freed is
// usable again.
func TestMaxConns(t *testing.T) {
	s := newServer(t, httpapi.Config{MaxConns: 4})
	run(t, s)
	held := make([]net.Conn, 4)
	for i := range held {
		held[i] = dial(t, s)
		fmt.Fprint(held[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := readResponse(t, held[i]); resp.StatusCode != http.StatusOK {
			t.Fatalf("conn %d: %d", i, resp.StatusCode)
		}
	}
	extra := dial(t, s)
	fmt.Fprint(extra, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp := readResponse(t, extra)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		resp.Header.Get("Content-Type") != "application/problem+json" || !bytes.Contains(body, []byte(`"status":503`)) {
		t.Fatalf("5th connection: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if !closedWithin(extra, 2*time.Second) {
		t.Fatal("the rejected connection stays open")
	}
	held[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := dial(t, s)
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp := readResponse(t, c); resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a freed connection slot is not reused")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Concurrent uploads share the spool budget: past it they are answered 503 with Retry-After,
// never more is reserved than the budget, and everything is given back.
func TestSpoolCap(t *testing.T) {
	const limit = 1 << 20
	entered, release := make(chan struct{}), make(chan struct{})
	holder := &fakeJobs{entered: entered, release: release}
	s := newServer(t, httpapi.Config{Jobs: holder, MaxUploadBytes: limit, MaxSpoolBytes: limit})
	run(t, s)
	body := func(n int) []byte { return bytes.Repeat([]byte(strings.Repeat("y", 99)+"\n"), n/100) }
	post := func(r io.Reader) *http.Response {
		resp, err := client(t).Post("http://"+s.Addr()+"/v1/jobs", "application/x-ndjson", r)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// One upload of 800 KB holds its reservation while the service works.
	first := make(chan *http.Response, 1)
	go func() { first <- post(bytes.NewReader(body(800_000))) }()
	<-entered
	if got := httpapi.SpoolUsed(s); got != 800_000 {
		t.Fatalf("spool used = %d, want 800000 (the declared length)", got)
	}
	// A second with a declared length is refused before its body is read.
	if resp := post(bytes.NewReader(body(800_000))); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "10" {
		t.Fatalf("second upload = %d (Retry-After %q), want 503 with Retry-After 10", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(release)
	if resp := <-first; resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first upload = %d", resp.StatusCode)
	}
	if got := httpapi.SpoolUsed(s); got != 0 {
		t.Fatalf("spool used after the upload = %d, want 0", got)
	}

	// Chunked uploads (no declared length) reserve as they are read.
	s2 := newServer(t, httpapi.Config{Jobs: &fakeJobs{}, MaxUploadBytes: limit, MaxSpoolBytes: limit})
	run(t, s2)
	s = s2
	const uploads = 8
	codes := make(chan int, uploads)
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			// Staggered starts: eight uploads that filled the spool in lockstep could each
			// find it full at the same moment and all be refused (CI, 1 run in many).
			time.Sleep(time.Duration(i) * 15 * time.Millisecond)
			pr, pw := io.Pipe()
			go func() {
				for range 40 { // 400 KB in 10 KB writes, slowly enough to overlap
					if _, err := pw.Write(body(10_000)); err != nil {
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
				pw.Close()
			}()
			resp := post(pr)
			pr.CloseWithError(io.ErrClosedPipe)
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[http.StatusAccepted]+count[http.StatusServiceUnavailable] != uploads || count[http.StatusServiceUnavailable] == 0 || count[http.StatusAccepted] == 0 {
		t.Fatalf("answers = %v, want some 202 and some 503 only", count)
	}
	if got := httpapi.SpoolUsed(s); got != 0 {
		t.Fatalf("spool used after all uploads = %d, want 0", got)
	}
	t.Logf("8 concurrent 400 KB uploads over a 1 MiB spool: %v", count)
}

// Expensive routes are rate-limited per token: 429 with Retry-After, problem+json; other
// tokens keep their own budget.
func TestRateLimitsPerToken(t *testing.T) {
	tests := []struct {
		name, method, target string
		limits               httpapi.RateLimits
		body                 string
	}{
		{"uploads", "POST", "/v1/jobs", httpapi.RateLimits{Uploads: httpapi.Rate{PerSecond: 0.01, Burst: 2}}, "{\"id\":\"a\",\"text\":\"b\"}\n"},
		{"graph uploads", "POST", "/v1/graph", httpapi.RateLimits{Uploads: httpapi.Rate{PerSecond: 0.01, Burst: 2}}, "{\"id\":\"a\",\"text\":\"b\"}\n"},
		{"replay", "POST", "/v1/dlq/replay", httpapi.RateLimits{Replay: httpapi.Rate{PerSecond: 0.01, Burst: 2}}, `{"ids":["x"],"dry_run":true}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, httpapi.Config{Tokens: testTokens(), RateLimits: tc.limits, DeadLetters: newFakeDLQ()})
			h := s.Handler()
			for i := range 2 {
				rec := serve(t, h, tc.method, tc.target, adminTok, strings.NewReader(tc.body), nil)
				if rec.Code == http.StatusTooManyRequests {
					t.Fatalf("request %d within the burst: 429", i)
				}
			}
			rec := serve(t, h, tc.method, tc.target, adminTok, strings.NewReader(tc.body), nil)
			decodeProblem(t, rec, http.StatusTooManyRequests)
			if ra, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("Retry-After = %q", rec.Header().Get("Retry-After"))
			}
			if tc.name != "replay" { // the writer may upload; replay needs admin
				if rec := serve(t, h, tc.method, tc.target, writeTok, strings.NewReader(tc.body), nil); rec.Code == http.StatusTooManyRequests {
					t.Fatal("another token was limited by the first one's requests")
				}
			}
		})
	}
}

func TestParseRateLimits(t *testing.T) {
	tests := []struct {
		in      string
		want    httpapi.RateLimits
		wantErr bool
	}{
		{"", httpapi.RateLimits{}, false},
		{"uploads=1/s:3,graph=off", httpapi.RateLimits{Uploads: httpapi.Rate{PerSecond: 1, Burst: 3}, Graph: httpapi.Rate{PerSecond: -1}}, false},
		{"replay=0.5, feeds=10:50", httpapi.RateLimits{Replay: httpapi.Rate{PerSecond: 0.5}, Feeds: httpapi.Rate{PerSecond: 10, Burst: 50}}, false},
		{"uploads", httpapi.RateLimits{}, true},
		{"uploads=0", httpapi.RateLimits{}, true},
		{"uploads=-1", httpapi.RateLimits{}, true},
		{"uploads=1:0", httpapi.RateLimits{}, true},
		{"uploads=NaN", httpapi.RateLimits{}, true},
		{"reads=1", httpapi.RateLimits{}, true},
	}
	for _, tc := range tests {
		got, err := httpapi.ParseRateLimits(tc.in)
		if (err != nil) != tc.wantErr || (!tc.wantErr && got != tc.want) {
			t.Errorf("ParseRateLimits(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

// blockingEvents is an EventSource that sends nothing and returns when ctx ends.
type blockingEvents struct{}

func (blockingEvents) Follow(ctx context.Context, _ int64, _ func(jobs.Event) error) error {
	<-ctx.Done()
	return ctx.Err()
}

// Each token holds at most MaxFeedsPerToken change feeds at once (each is a JetStream
// consumer); past it, 429. Closing one frees its slot; other tokens are not affected.
func TestFeedsPerToken(t *testing.T) {
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Events: blockingEvents{}, MaxFeedsPerToken: 2})
	run(t, s)
	open := func(tok string) (*http.Response, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+s.Addr()+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return resp, cancel
	}
	r1, cancel1 := open(readTok)
	r2, _ := open(readTok)
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("feeds = %d, %d", r1.StatusCode, r2.StatusCode)
	}
	r3, _ := open(readTok)
	if r3.StatusCode != http.StatusTooManyRequests || r3.Header.Get("Retry-After") == "" {
		t.Fatalf("third feed = %d (Retry-After %q), want 429", r3.StatusCode, r3.Header.Get("Retry-After"))
	}
	if r, _ := open(writeTok); r.StatusCode != 200 {
		t.Fatalf("another token's feed = %d", r.StatusCode)
	}
	cancel1()
	r1.Body.Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r, cancel := open(readTok)
		if r.StatusCode == 200 {
			break
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("closing a feed did not free its slot: %d", r.StatusCode)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
