package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// startingServer binds 127.0.0.1:0 and serves it with a Starting server, closed at cleanup.
func startingServer(t *testing.T) *httpapi.Starting {
	t.Helper()
	ln, err := httpapi.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := httpapi.NewStarting(httpapi.StartingConfig{Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// fetch sends one request and returns the status, headers and decoded JSON body.
func fetch(t *testing.T, c *http.Client, method, url string) (int, http.Header, problem) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Close {
		// The transport consumes the Connection header; keep what it said for the test.
		resp.Header.Set("Connection", "close")
	}
	var p problem
	if resp.Header.Get("Content-Type") != "application/problem+json" {
		return resp.StatusCode, resp.Header, p
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatalf("%s %s: decode: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, p
}

// While the process opens its stores, the API's port must answer: /healthz 200 (alive),
// /readyz 503 saying what start-up waits for, everything else 503 with Retry-After. Before,
// nothing listened until every store was open, so a process waiting for AstraDB looked dead.
func TestStartingAnswersWhileStarting(t *testing.T) {
	st := startingServer(t)
	c := client(t)
	base := "http://" + st.Addr()

	code, _, _ := fetch(t, c, "GET", base+"/healthz")
	if code != http.StatusOK {
		t.Fatalf("/healthz = %d, want 200", code)
	}
	code, hdr, p := fetch(t, c, "GET", base+"/readyz")
	if code != http.StatusServiceUnavailable || p.Checks["startup"] != "starting" || hdr.Get("Retry-After") == "" {
		t.Fatalf("/readyz before any report = %d %+v (Retry-After %q)", code, p, hdr.Get("Retry-After"))
	}

	st.Report("waiting for AstraDB (requirements store): data api: HTTP 503 Service Unavailable")
	code, hdr, p = fetch(t, c, "GET", base+"/readyz")
	if code != http.StatusServiceUnavailable || p.Checks["startup"] != "waiting for AstraDB (requirements store): data api: HTTP 503 Service Unavailable" {
		t.Fatalf("/readyz = %d %+v", code, p)
	}
	if hdr.Get("Content-Type") != "application/problem+json" || p.Type != "about:blank" || p.Status != 503 || p.Detail == "" ||
		p.RequestID == "" || p.RequestID != hdr.Get("X-Request-Id") || p.Instance != "/readyz" {
		t.Fatalf("/readyz is not a well-formed problem: %s %+v", hdr.Get("Content-Type"), p)
	}

	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/jobs?env=dev"}, {"GET", "/v1/jobs"}, {"DELETE", "/v1/dlq"}, {"POST", "/healthz"}, {"GET", "/nope"},
	} {
		t.Run(r.method+r.path, func(t *testing.T) {
			code, hdr, p := fetch(t, c, r.method, base+r.path)
			if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") != "2" || p.Checks != nil {
				t.Fatalf("%s %s = %d (Retry-After %q) %+v, want 503 with Retry-After 2 and no checks", r.method, r.path, code, hdr.Get("Retry-After"), p)
			}
			if hdr.Get("Connection") != "close" {
				t.Fatalf("the answer keeps the connection: Connection %q", hdr.Get("Connection"))
			}
		})
	}
}

// A store error may quote a whole response body: /readyz shows at most 512 bytes of it.
func TestStartingReportIsBounded(t *testing.T) {
	st := startingServer(t)
	for _, tc := range []struct {
		name string
		n    int
		want int // runes shown
	}{{"under", 511, 511}, {"at", 512, 512}, {"over", 513, 513}, {"far over", 1 << 20, 513}} {
		t.Run(tc.name, func(t *testing.T) {
			st.Report(strings.Repeat("e", tc.n))
			_, _, p := fetch(t, client(t), "GET", "http://"+st.Addr()+"/readyz")
			got := p.Checks["startup"]
			if n := len([]rune(got)); n != tc.want {
				t.Fatalf("startup check holds %d runes, want %d", n, tc.want)
			}
			if tc.n > 512 && !strings.HasSuffix(got, "…") {
				t.Fatalf("a cut status does not say so: …%s", got[len(got)-10:])
			}
		})
	}
}

// Handover gives the listener to the API with no gap: clients probing /healthz through the
// switch never see a refused or reset connection, and /readyz turns from 503 (starting) to
// 200 (the API) on the same port.
func TestStartingHandoverHasNoGap(t *testing.T) {
	st := startingServer(t)
	addr := st.Addr()
	var (
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		sent     atomic.Int64
		failures = make(chan error, 4)
	)
	for range 4 {
		wg.Go(func() { probeHealthz(addr, stop, &sent, failures) })
	}
	waitFor := func(n int64) {
		for deadline := time.Now().Add(10 * time.Second); sent.Load() < n; {
			if time.Now().After(deadline) || len(failures) > 0 {
				close(stop)
				wg.Wait()
				close(failures)
				for err := range failures {
					t.Errorf("a probe failed: %v", err)
				}
				t.Fatalf("only %d probes answered", sent.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(50)
	ln, err := st.Handover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ln.Addr().String() != addr {
		t.Fatalf("handed over %s, want %s", ln.Addr(), addr)
	}
	srv := newServer(t, httpapi.Config{Listener: ln})
	stopRun := run(t, srv)
	before := sent.Load()
	waitFor(before + 50)
	close(stop)
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Errorf("a probe failed across the handover: %v", err)
	}
	if code, _, _ := fetch(t, client(t), "GET", "http://"+addr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz after the handover = %d, want 200", code)
	}
	if srv.Addr() != addr {
		t.Fatalf("the API serves %s, want %s", srv.Addr(), addr)
	}
	if err := stopRun(); err != nil {
		t.Fatal(err)
	}
	// Both are done with: a second Handover, and Close, change nothing.
	if _, err := st.Handover(context.Background()); !errors.Is(err, httpapi.ErrServerClosed) {
		t.Fatalf("second Handover: %v, want ErrServerClosed", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// probeHealthz gets /healthz on addr, each time on a new connection, until stop is closed,
// counting the answers in sent. It stops at the first error or status other than 200, and
// sends it on failures.
func probeHealthz(addr string, stop <-chan struct{}, sent *atomic.Int64, failures chan<- error) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for {
		select {
		case <-stop:
			return
		default:
		}
		resp, err := c.Get("http://" + addr + "/healthz")
		if err != nil {
			failures <- err
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failures <- errors.New(resp.Status)
			return
		}
		sent.Add(1)
	}
}

// Close, for a start-up that failed, frees the port at once.
func TestStartingCloseFreesThePort(t *testing.T) {
	st := startingServer(t)
	addr := st.Addr()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port still held after Close: %v", err)
	}
	ln.Close()
	if _, err := st.Handover(context.Background()); !errors.Is(err, httpapi.ErrServerClosed) {
		t.Fatalf("Handover after Close: %v, want ErrServerClosed", err)
	}
}

// noDeadline is a listener without SetDeadline.
type noDeadline struct{ net.Listener }

func TestStartingConfigErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name string
		cfg  httpapi.StartingConfig
		want string
	}{
		{"no listener", httpapi.StartingConfig{}, "Listener is required"},
		{"no deadline", httpapi.StartingConfig{Listener: noDeadline{ln}}, "no SetDeadline"},
		{"negative conns", httpapi.StartingConfig{Listener: ln, MaxConns: -1}, "MaxConns -1 is negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := httpapi.NewStarting(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewStarting: %v, want %q", err, tc.want)
			}
		})
	}
}

// Listen fails at once on a port in use, and refuses a non-loopback address without tokens.
func TestListen(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, tc := range []struct {
		name, addr string
		auth       bool
		want       string
	}{
		{"port in use", held.Addr().String(), false, "address already in use"},
		{"all interfaces without tokens", "0.0.0.0:0", false, "not a loopback address"},
		{"bad address", "nonsense", false, "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ln, err := httpapi.Listen(tc.addr, tc.auth); err == nil || !strings.Contains(err.Error(), tc.want) {
				if ln != nil {
					ln.Close()
				}
				t.Fatalf("Listen(%q): %v, want %q", tc.addr, err, tc.want)
			}
		})
	}
}

// Config.Listener bound beyond loopback is refused without tokens, and New closes it.
func TestNewClosesARefusedListener(t *testing.T) {
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Skipf("cannot bind all interfaces: %v", err)
	}
	_, err = httpapi.New(httpapi.Config{Listener: ln, Jobs: &fakeJobs{}, Chunks: &fakeChunks{}})
	if err == nil || !strings.Contains(err.Error(), "non-loopback") {
		t.Fatalf("New: %v, want a non-loopback refusal", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the refused listener is still open: Accept = %v", err)
	}
	// A config error closes it too.
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := httpapi.New(httpapi.Config{Listener: ln2}); err == nil {
		t.Fatal("New without Jobs succeeded")
	}
	if _, err := ln2.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the listener of a failed New is still open: Accept = %v", err)
	}
}

// A connection that never sends a request neither holds the handover past its bound (1 s)
// nor, over MaxConns, takes a file descriptor: the one over the cap is answered 503 at once.
func TestStartingSilentConnections(t *testing.T) {
	ln, err := httpapi.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	st, err := httpapi.NewStarting(httpapi.StartingConfig{Listener: ln, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	silent, err := net.Dial("tcp", st.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	over, err := net.Dial("tcp", st.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(over)
	over.Close()
	if !strings.HasPrefix(string(b), "HTTP/1.1 503") || !strings.Contains(string(b), "Retry-After: 1") {
		t.Fatalf("the connection over the cap got %q", b)
	}

	start := time.Now()
	hl, err := st.Handover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Fatalf("Handover took %s with a silent connection, want about 1 s", d)
	}
	// The silent connection was closed by the starting server, not left behind.
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("the silent connection is still open after Handover: %d, %v", n, err)
	}
}
