package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// opsServer serves reg on an ops listener bound to 127.0.0.1:0, closed at cleanup.
func opsServer(t *testing.T, reg prometheus.Gatherer, maxConns int) *httpapi.Ops {
	t.Helper()
	ln, err := httpapi.ListenOps("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o, err := httpapi.NewOps(httpapi.OpsConfig{Listener: ln, Gatherer: reg, MaxConns: maxConns})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := o.Close(); err != nil {
			t.Error(err)
		}
	})
	return o
}

// readyBody is a 200 answer of /readyz.
type readyBody struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// getReady asks /readyz and returns the status and the checks it names, from a 200 or a 503.
func getReady(t *testing.T, c *http.Client, base string) (int, map[string]string) {
	t.Helper()
	code, _, p := fetch(t, c, "GET", base+"/readyz")
	if code != http.StatusOK {
		return code, p.Checks
	}
	resp, err := c.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b readyBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil || b.Status != "ready" {
		t.Fatalf("/readyz 200 body: %+v %v", b, err)
	}
	return resp.StatusCode, b.Checks
}

// Issue 15: `sluice worker` served nothing, so a worker could not be probed or scraped. The ops
// listener answers, without a token, /healthz all along, /readyz 503 naming what start-up
// waits for, then the process's checks, then 503 while it drains, and /metrics from the
// process's registry.
func TestOpsLifecycle(t *testing.T) {
	reg := prometheus.NewRegistry()
	chunks := prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_messages_total", Help: "test"})
	reg.MustRegister(chunks)
	chunks.Add(7)
	o := opsServer(t, reg, 0)
	c := client(t)
	base := "http://" + o.Addr()

	if code, _, _ := fetch(t, c, "GET", base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while starting = %d", code)
	}
	if code, checks := getReady(t, c, base); code != 503 || checks["startup"] != "starting" {
		t.Fatalf("/readyz while starting = %d %v", code, checks)
	}
	o.Report("opening the graph store")
	if code, checks := getReady(t, c, base); code != 503 || checks["startup"] != "opening the graph store" {
		t.Fatalf("/readyz after Report = %d %v", code, checks)
	}
	// /metrics answers from the start, without a token.
	resp, err := c.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "sluice_messages_total 7") {
		t.Fatalf("/metrics = %d:\n%s", resp.StatusCode, body)
	}

	broker := errors.New("not connected to NATS")
	o.Ready([]httpapi.Check{
		{Name: "nats", Check: func(context.Context) error { return broker }},
		{Name: "store", Check: func(context.Context) error { return nil }},
	})
	o.Report("too late") // start-up has ended: ignored
	if code, checks := getReady(t, c, base); code != 503 || checks["nats"] != "not connected to NATS" || checks["store"] != "ok" {
		t.Fatalf("/readyz with the broker down = %d %v", code, checks)
	}
	broker = nil
	if code, checks := getReady(t, c, base); code != 200 || checks["nats"] != "ok" || checks["store"] != "ok" {
		t.Fatalf("/readyz ready = %d %v", code, checks)
	}

	o.Draining("draining in-flight work (up to 30s)")
	o.Ready(nil) // draining is final
	if code, checks := getReady(t, c, base); code != 503 || checks["drain"] != "draining in-flight work (up to 30s)" {
		t.Fatalf("/readyz while draining = %d %v", code, checks)
	}
	if code, _, _ := fetch(t, c, "GET", base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while draining = %d", code)
	}

	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if conn, err := net.DialTimeout("tcp", o.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatal("ops listener still accepts after Close")
	}
}

// The ops listener answers only its three routes, and only to GET and HEAD.
func TestOpsRoutes(t *testing.T) {
	o := opsServer(t, prometheus.NewRegistry(), 0)
	h := o.Handler()
	for _, tt := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/healthz", 200},
		{"HEAD", "/healthz", 200},
		{"GET", "/metrics", 200},
		{"HEAD", "/readyz", 503},
		{"POST", "/healthz", 405},
		{"DELETE", "/metrics", 405},
		{"GET", "/v1/jobs", 404},
		{"GET", "/", 404},
		{"GET", "/healthz/", 404},
	} {
		rec := serve(t, h, tt.method, tt.path, "", nil, nil)
		if rec.Code != tt.want {
			t.Errorf("%s %s = %d, want %d: %s", tt.method, tt.path, rec.Code, tt.want, rec.Body)
		}
		if tt.want == 405 && rec.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", tt.method, tt.path, rec.Header().Get("Allow"))
		}
	}
}

func TestOpsConfig(t *testing.T) {
	listen := func() net.Listener {
		ln, err := httpapi.ListenOps("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	for _, tt := range []struct {
		name string
		cfg  func(net.Listener) httpapi.OpsConfig
		want string
	}{
		{"no listener", func(net.Listener) httpapi.OpsConfig { return httpapi.OpsConfig{Gatherer: prometheus.NewRegistry()} }, "Listener is required"},
		{"no gatherer", func(ln net.Listener) httpapi.OpsConfig { return httpapi.OpsConfig{Listener: ln} }, "Gatherer is required"},
		{"negative conns", func(ln net.Listener) httpapi.OpsConfig {
			return httpapi.OpsConfig{Listener: ln, Gatherer: prometheus.NewRegistry(), MaxConns: -1}
		}, "MaxConns -1 is negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln := listen()
			defer ln.Close()
			_, err := httpapi.NewOps(tt.cfg(ln))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewOps: %v, want %q", err, tt.want)
			}
			// A refused config releases the listener it was given.
			if tt.name != "no listener" {
				if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
					t.Fatalf("listener left open: Accept = %v", err)
				}
			}
		})
	}
}

// A port in use fails at once, naming the address.
func TestListenOpsInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, err = httpapi.ListenOps(held.Addr().String())
	if err == nil || !strings.Contains(err.Error(), held.Addr().String()) || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("ListenOps on a port in use: %v", err)
	}
}

// The listener needs no token, so its connections are bounded: one past MaxConns is answered
// 503 and closed, and a slot freed admits the next.
func TestOpsMaxConns(t *testing.T) {
	o := opsServer(t, prometheus.NewRegistry(), 1)
	held, err := net.Dial("tcp", o.Addr())
	if err != nil {
		t.Fatal(err)
	}
	// The held connection is accepted (it takes the one slot) once it has had an answer.
	if _, err := io.WriteString(held, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(held)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	} else {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The answer past the cap comes before any request is read: read it off a bare connection
	// (an HTTP client may fail on an answer to a request it has not sent yet).
	over, err := net.Dial("tcp", o.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = over.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(over), nil)
	over.Close()
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("connection past the cap: %v %v, want 503", resp, err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	held.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := c.Get("http://" + o.Addr() + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the freed slot never admitted a connection")
		}
	}
}

// Close does not wait for ever on a probe in flight: a readiness check that ignores its
// context is cut by /readyz's 2 s deadline, and Close returns within its 3 s bound.
func TestOpsCloseWithProbeInFlight(t *testing.T) {
	o := opsServer(t, prometheus.NewRegistry(), 0)
	release := make(chan struct{})
	defer close(release)
	o.Ready([]httpapi.Check{{Name: "hung", Check: func(context.Context) error { <-release; return nil }}})
	c := client(t)
	done := make(chan int, 1)
	go func() {
		resp, err := c.Get("http://" + o.Addr() + "/readyz")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(200 * time.Millisecond) // the probe is in flight
	start := time.Now()
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("Close took %s", el)
	}
	if code := <-done; code != http.StatusServiceUnavailable {
		t.Fatalf("probe in flight during Close = %d, want its 503 (timed out check)", code)
	}
}
