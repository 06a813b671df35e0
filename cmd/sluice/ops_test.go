package main

import (
	"context"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// opsBroker starts an in-process embedded nats-server owned by the test, with Sluice's streams,
// and returns it with a URL carrying its credential (tests only: a URL shows in ps).
func opsBroker(t *testing.T) (*embedded.Server, string) {
	t.Helper()
	srv, _, js := embeddedtest.Start(t, embedded.Config{})
	if _, err := sjs.Provision(context.Background(), js, sjs.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	ep := srv.Endpoint()
	u, err := neturl.Parse(ep.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(ep.User, string(ep.Password))
	return srv, u.String()
}

// waitProbe polls url until cond holds of its answer, failing the test after timeout.
func waitProbe(t *testing.T, url string, timeout time.Duration, what string, cond func(probe) bool) probe {
	t.Helper()
	var last probe
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		if p, ok := get(url); ok {
			last = p
			if cond(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s; last answer %d %s", what, timeout, last.code, last.body)
		}
	}
}

// metricValue returns the value of the sample of metrics named sample (name with its labels,
// as printed), or -1 when it is absent.
func metricValue(metrics, sample string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// Issue 15: `sluice worker` accepted --http-addr but served nothing, so a worker could not be
// probed or scraped, and every chunk and sink metric disappeared when API and workers ran
// apart. A lone worker now serves, on SLUICE_OPS_ADDR and without a token: /healthz, /readyz
// naming the broker, the stores and its consumers, and /metrics with the chunk and sink
// metrics while it drains a job; /readyz turns 503 naming the broker when the broker goes.
func TestOpsWorkerScrapedWhileDraining(t *testing.T) {
	const n = 20000
	srv, url := opsBroker(t)
	ops := freeAddr(t)
	worker, logs := startProc(t, "worker", []string{"SLUICE_OPS_ADDR=" + ops},
		"worker", "--nats-url", url, "--data-dir", t.TempDir(), "--drain-timeout", "20s")
	base := "http://" + ops

	ready := waitProbe(t, base+"/readyz", 60*time.Second, "worker ready", func(p probe) bool { return p.code == 200 })
	for _, check := range []string{"nats", "store", "graph", "dead-letters", "consumers"} {
		if ready.checks[check] != "ok" {
			t.Errorf("/readyz check %q = %q, want ok: %s", check, ready.checks[check], ready.body)
		}
	}
	if p, ok := get(base + "/healthz"); !ok || p.code != 200 {
		t.Fatalf("/healthz = %+v", p)
	}

	// The job is published by `sluice load` on the same broker; the worker drains it.
	load, loadLogs := startProc(t, "load", nil, "load", "--nats-url", url, "--data-dir", t.TempDir(), "--env", "dev", writeChunkFile(t, n))
	loaded := make(chan error, 1)
	go func() { loaded <- load.Wait() }()
	var midDrain string // a scrape taken with some chunks written and not all
	var metrics string
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		resp, err := http.Get(base + "/metrics") // no token
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("/metrics = %d: %s", resp.StatusCode, body)
		}
		metrics = string(body)
		written := metricValue(metrics, `sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"}`)
		if written > 0 && written < n && midDrain == "" {
			midDrain = metrics
		}
		if written == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker's metrics never counted %d written chunks:\n%s", n, grepLines(metrics, "sluice_"))
		}
	}
	if err := <-loaded; err != nil {
		t.Fatalf("load: %v\n%s", err, loadLogs.String())
	}
	if midDrain == "" {
		t.Fatal("no scrape saw the job part-way: the metrics were not served while the worker drained")
	}
	for _, sample := range []string{
		`sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"}`, "sluice_chunk_handle_seconds_count", "sluice_chunk_batch_messages_count",
		`sluice_sink_batch_documents_count{sink="docstore"}`, `sluice_sink_write_seconds_count{command="insert_docs",sink="docstore",status="ok"}`,
	} {
		if v := metricValue(midDrain, sample); v <= 0 {
			t.Errorf("mid-drain scrape: %s = %g, want > 0", sample, v)
		}
	}
	for _, sample := range []string{`sluice_sink_write_failures_total{command="insert_docs",sink="docstore"}`, "go_goroutines", "process_open_fds"} {
		if v := metricValue(metrics, sample); v < 0 {
			t.Errorf("/metrics lacks %s", sample)
		}
	}

	// The broker goes away: not ready, naming the broker; still alive.
	srv.Shutdown()
	down := waitProbe(t, base+"/readyz", 30*time.Second, "503 with the broker down", func(p probe) bool { return p.code == 503 })
	if down.checks["nats"] != "not connected to NATS" || down.checks["consumers"] != "not connected to NATS" {
		t.Errorf("/readyz with the broker down names %v", down.checks)
	}
	if p, ok := get(base + "/healthz"); !ok || p.code != 200 {
		t.Fatalf("/healthz with the broker down = %+v", p)
	}
	if err := worker.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := worker.Wait(); err != nil {
		t.Fatalf("worker exit: %v", err)
	}
	if p, ok := get(base + "/healthz"); ok {
		t.Fatalf("the ops listener still answers after the worker exited: %d", p.code)
	}
	_ = logs
}

// Issue 15: a consumer the worker pulls from, deleted on the broker, shows in /readyz by name.
func TestOpsReadyNamesMissingConsumer(t *testing.T) {
	_, url := opsBroker(t)
	ops := freeAddr(t)
	startProc(t, "worker", nil, "worker", "--nats-url", url, "--data-dir", t.TempDir(), "--ops-addr", ops)
	base := "http://" + ops
	waitProbe(t, base+"/readyz", 60*time.Second, "worker ready", func(p probe) bool { return p.code == 200 })
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteConsumer(context.Background(), sjs.StreamCommands, sjs.CommandConsumerName(15)); err != nil {
		t.Fatal(err)
	}
	p := waitProbe(t, base+"/readyz", 30*time.Second, "503 with a consumer missing", func(p probe) bool { return p.code == 503 })
	if want := "sluice-commands-p15 (stream SLUICE_COMMANDS)"; !strings.Contains(p.checks["consumers"], want) || p.checks["nats"] != "ok" {
		t.Fatalf("/readyz does not name %s: %v", want, p.checks)
	}
}

// While start-up waits (for AstraDB answering 503 here), the ops listener is already up:
// /healthz 200, /readyz 503 naming the wait, /metrics answering.
func TestOpsAnswersDuringStartup(t *testing.T) {
	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	double.SetFaultRate(1, dataapitest.FaultHTTP503)
	_, url := opsBroker(t)
	ops := freeAddr(t)
	startProc(t, "worker", []string{"ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
		"worker", "--nats-url", url, "--data-dir", t.TempDir(), "--ops-addr", ops)
	base := "http://" + ops
	p := waitProbe(t, base+"/readyz", 30*time.Second, "/readyz naming the wait", func(p probe) bool {
		return p.code == 503 && strings.Contains(p.checks["startup"], "waiting for AstraDB")
	})
	if p.retryAfter == "" || strings.Contains(string(p.body), double.Token()) {
		t.Fatalf("/readyz while starting: Retry-After %q, body %s", p.retryAfter, p.body)
	}
	if p, ok := get(base + "/healthz"); !ok || p.code != 200 {
		t.Fatalf("/healthz while starting = %+v", p)
	}
	if p, ok := get(base + "/metrics"); !ok || p.code != 200 || !strings.Contains(string(p.body), "go_goroutines") {
		t.Fatalf("/metrics while starting = %+v", p)
	}
	double.SetFaultRate(0)
	waitProbe(t, base+"/readyz", 60*time.Second, "ready once AstraDB answers", func(p probe) bool { return p.code == 200 })
}

// An ops address given (flag or SLUICE_OPS_ADDR) that is in use fails at once, exit 1, naming
// it; the default address in use falls back to an ephemeral loopback port, named in a warning.
func TestOpsAddrInUse(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, tt := range []struct {
		name string
		env  []string
		args []string
	}{
		{"worker flag", nil, []string{"worker", "--ops-addr", held.Addr().String()}},
		{"worker env", []string{"SLUICE_OPS_ADDR=" + held.Addr().String()}, []string{"worker"}},
		{"serve flag", nil, []string{"serve", "--ops-addr", held.Addr().String(), "--http-addr", freeAddr(t)}},
		{"api env", []string{"SLUICE_OPS_ADDR=" + held.Addr().String()}, []string{"api", "--http-addr", freeAddr(t)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			_, errOut, code := cliRun(t, tt.env, append(tt.args, "--data-dir", t.TempDir())...)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, errOut)
			}
			for _, want := range []string{"ops listener on " + held.Addr().String(), "address already in use", "--ops-addr"} {
				if !strings.Contains(errOut, want) {
					t.Errorf("error lacks %q:\n%s", want, errOut)
				}
			}
			if el := time.Since(start); el > 20*time.Second {
				t.Errorf("took %s to fail", el)
			}
		})
	}

	t.Run("default in use", func(t *testing.T) {
		// Hold the default address; when another process holds it, it is in use all the same.
		if def, err := net.Listen("tcp", "127.0.0.1:9090"); err == nil {
			defer def.Close()
		}
		_, url := opsBroker(t)
		_, logs := startProc(t, "worker", nil, "worker", "--nats-url", url, "--data-dir", t.TempDir())
		re := regexp.MustCompile(`default ops address in use.*default=127\.0\.0\.1:9090 addr=(127\.0\.0\.1:\d+)`)
		var m []string
		for deadline := time.Now().Add(30 * time.Second); m == nil; time.Sleep(20 * time.Millisecond) {
			m = re.FindStringSubmatch(logs.String())
			if time.Now().After(deadline) {
				t.Fatalf("no warning naming the fallback address:\n%s", logs.String())
			}
		}
		waitProbe(t, "http://"+m[1]+"/readyz", 60*time.Second, "the fallback address ready", func(p probe) bool { return p.code == 200 })
	})

	t.Run("off", func(t *testing.T) {
		_, url := opsBroker(t)
		ops := freeAddr(t)
		cmd, logs := startProc(t, "worker", []string{"SLUICE_OPS_ADDR=off", "SLUICE_LOG_LEVEL=info"}, "worker", "--nats-url", url, "--data-dir", t.TempDir())
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "sluice running"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("worker not running:\n%s", logs.String())
			}
		}
		if !strings.Contains(logs.String(), "ops listener off") || strings.Contains(logs.String(), "ops listener bound") {
			t.Fatalf("SLUICE_OPS_ADDR=off did not turn the listener off:\n%s", logs.String())
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("worker exit: %v", err)
		}
		_ = ops
	})
}

// `sluice api` and `sluice serve` serve their metrics on the ops listener too, without a
// token while the API's own /metrics asks for one: the API's HTTP metrics, and for serve the
// chunk and sink metrics of its workers.
func TestOpsOnAPIAndServe(t *testing.T) {
	tokens := tokensFile(t)
	for _, mode := range []string{"api", "serve"} {
		t.Run(mode, func(t *testing.T) {
			ops := freeAddr(t)
			env := []string{"SLUICE_OPS_ADDR=" + ops}
			args := []string{"--data-dir", t.TempDir(), "--tokens-file", tokens}
			if mode == "api" {
				_, url := opsBroker(t)
				args = append(args, "--nats-url", url)
			}
			s := startServer(t, mode, env, args...)
			base := "http://" + ops
			ready := waitProbe(t, base+"/readyz", 30*time.Second, mode+" ready", func(p probe) bool { return p.code == 200 })
			want := []string{"nats", "store", "graph", "dead-letters"}
			if mode == "serve" {
				want = append(want, "consumers")
			}
			if len(ready.checks) != len(want) {
				t.Errorf("/readyz checks %v, want %v", ready.checks, want)
			}
			for _, c := range want {
				if ready.checks[c] != "ok" {
					t.Errorf("/readyz check %q = %q", c, ready.checks[c])
				}
			}
			if p, _ := get(s.base + "/metrics"); p.code != http.StatusUnauthorized {
				t.Fatalf("the API's own /metrics without a token = %d, want 401", p.code)
			}
			if mode == "serve" {
				upload(t, s.base, "/v1/jobs?env=dev&file=ops.jsonl", writeTok, "application/x-ndjson",
					[]byte(`{"chunk_id":"ops_1","content":"one"}`+"\n"+`{"chunk_id":"ops_2","content":"two"}`+"\n"))
			}
			var metrics string
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				p, _ := get(base + "/metrics")
				metrics = string(p.body)
				done := metricValue(metrics, `sluice_http_requests_total{code="401",method="GET",route="/metrics"}`) >= 1
				if mode == "serve" {
					done = done && metricValue(metrics, `sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"}`) == 2 && metricValue(metrics, `sluice_sink_write_seconds_count{command="insert_docs",sink="docstore",status="ok"}`) > 0
				}
				if done {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the ops listener's /metrics lacks the %s's metrics:\n%s", mode, grepLines(metrics, "sluice_"))
				}
			}
		})
	}
}
