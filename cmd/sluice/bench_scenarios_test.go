package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// runBench runs the real binary with args (a bench scenario) and returns its output and exit
// status.
func runBench(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SLUICE_LOG_LEVEL=warn", "TMPDIR="+t.TempDir())
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// TestBenchAPIShort runs bench api small (50 clients, 5 s) on the real binary, which starts
// sluice serve as its own process: the report adds up, no answer is a server error other than
// an admission refusal with Retry-After, every accepted job completed exactly, none is left
// orphaned or failed. No timing is asserted.
func TestBenchAPIShort(t *testing.T) {
	out, errOut, code := runBench(t, "bench", "api", "--clients", "50", "--duration", "5s", "--settle", "2m", "--json")
	if code != 0 {
		t.Fatalf("bench api: exit %d\n%s%s", code, out, errOut)
	}
	var res apiBenchResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench api --json: %v\n%s", err, out)
	}
	if res.Clients != 50 || res.ChunksPerJob != 100 || res.ElapsedS < 5 || res.RequestsPerS <= 0 || len(res.Routes) != 3 {
		t.Fatalf("bench api report incomplete: %s", out)
	}
	// Both processes used CPU during the load, and the generator's scheduler was sampled.
	if res.SteadyAfterS != 1.25 || res.ServeCPU <= 0 || res.GeneratorCPU <= 0 || res.GeneratorSchedP99Ms == 0 {
		t.Errorf("bench api: steady after %g s, serve %g cores, generator %g cores, generator scheduler p99 ≤ %g ms",
			res.SteadyAfterS, res.ServeCPU, res.GeneratorCPU, res.GeneratorSchedP99Ms)
	}
	var requests, refused, accepted int64
	for _, r := range res.Routes {
		var answered int64
		for _, n := range r.Statuses {
			answered += n
		}
		if r.Requests == 0 || answered+r.TransportErrors != r.Requests {
			t.Errorf("%s: %d requests, %d answered + %d unanswered", r.Route, r.Requests, answered, r.TransportErrors)
		}
		if !(r.P50Ms > 0 && r.P50Ms <= r.P99Ms && r.P99Ms <= r.P999Ms && r.P999Ms <= r.MaxMs) {
			t.Errorf("%s: percentiles out of order: %+v", r.Route, r)
		}
		// The steady part (after the first 1.25 s of a 5 s run) has requests of every route.
		if r.SteadyP99Ms <= 0 || r.SteadyP99Ms > r.MaxMs {
			t.Errorf("%s: steady p99 %g ms, max %g ms", r.Route, r.SteadyP99Ms, r.MaxMs)
		}
		// The server's own histogram saw the route (a bucket bound, not past the last).
		if !(r.ServerP99Ms > 0 && r.ServerP99Ms <= r.ServerP999Ms) {
			t.Errorf("%s: server-side p99 ≤ %g ms, p999 ≤ %g ms; want both read from /metrics", r.Route, r.ServerP99Ms, r.ServerP999Ms)
		}
		// Every 503 was an admission refusal with Retry-After; nothing else ≥ 500.
		if r.ServerErrors != 0 || r.TransportErrors != 0 || r.Refused != r.Statuses["503"] {
			t.Errorf("%s: server errors %d, transport errors %d, refused %d of %d 503s (%v)",
				r.Route, r.ServerErrors, r.TransportErrors, r.Refused, r.Statuses["503"], res.ErrorSamples)
		}
		switch r.Route {
		case routeGetJob:
			// Reads only name jobs the API accepted: each is found.
			if r.Statuses["200"] != r.Requests {
				t.Errorf("%s: statuses %v, want all 200", r.Route, r.Statuses)
			}
		case routeSubmitJob:
			accepted = r.Statuses["202"] + r.Statuses["200"]
		}
		requests += r.Requests
		refused += r.Refused
	}
	if requests != res.Requests || refused != res.Refused || res.ServerErrors != 0 || res.TransportErrors != 0 {
		t.Errorf("totals do not add up: %s", out)
	}
	// The first job, submitted before the clients start, is accepted too.
	j := res.Jobs
	if accepted == 0 || j.Accepted != int(accepted)+1 || j.Exact != j.Accepted || j.NotExact != 0 || j.Unsettled != 0 {
		t.Errorf("jobs: %+v, want all %d accepted completed exactly", j, accepted+1)
	}
	if res.OrphanedJobs != 0 || res.FailedJobs != 0 {
		t.Errorf("orphaned %d, failed %d, want none", res.OrphanedJobs, res.FailedJobs)
	}
	if res.PeakRSS <= 0 || res.EndRSS <= 0 || res.EndRSS > res.PeakRSS {
		t.Errorf("RSS peak %d end %d", res.PeakRSS, res.EndRSS)
	}
	if !strings.Contains(strings.Join(res.ServeArgs, " "), "--api-rate-limits uploads=off") {
		t.Errorf("serve args %v", res.ServeArgs)
	}
}

// TestBenchBacklogShort runs bench backlog with 5,000 chunks in both modes: each drains every
// chunk exactly, with a rate and the worker's peak RSS. No timing is asserted.
func TestBenchBacklogShort(t *testing.T) {
	out, errOut, code := runBench(t, "bench", "backlog", "--chunks", "5000", "--timeout", "3m", "--json")
	if code != 0 {
		t.Fatalf("bench backlog: exit %d\n%s%s", code, out, errOut)
	}
	var res backlogBenchResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench backlog --json: %v\n%s", err, out)
	}
	if res.Chunks != 5000 || len(res.Modes) != 2 {
		t.Fatalf("bench backlog report incomplete: %s", out)
	}
	for i, want := range []string{backlogEmbedded, backlogClient} {
		m := res.Modes[i]
		if m.Mode != want || m.Chunks != 5000 || m.Written != 5000 || m.DeadLettered != 0 {
			t.Errorf("mode %d = %+v, want %s with 5000 chunks written once", i, m, want)
		}
		if m.DocsPerS <= 0 || m.PublishS <= 0 || m.StartupS <= 0 || m.StartupS > m.DrainS || m.PeakRSS <= 0 || m.EndRSS > m.PeakRSS {
			t.Errorf("mode %s: incomplete measures %+v", want, m)
		}
	}

	// The text report names both modes.
	out, errOut, code = runBench(t, "bench", "backlog", "--chunks", "200", "--modes", "client")
	if code != 0 || !strings.Contains(out, "docs/s") || !strings.Contains(out, "client") || strings.Contains(out, "embedded ") {
		t.Fatalf("bench backlog: exit %d\n%s%s", code, out, errOut)
	}
}

// TestBenchScenarioUsage checks that bad command lines of bench api and bench backlog are
// usage errors saying what is wrong, and that a data directory that cannot be made fails the
// run (exit 1) before anything starts.
func TestBenchScenarioUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"api no clients", []string{"bench", "api", "--clients", "0"}, exitUsage, "--clients must be at least 1"},
		{"api no duration", []string{"bench", "api", "--duration", "0s"}, exitUsage, "--duration must be positive"},
		{"api no chunks", []string{"bench", "api", "--chunks-per-job", "0"}, exitUsage, "--chunks-per-job must be at least 1"},
		{"api argument", []string{"bench", "api", "extra"}, exitUsage, "bench api takes no arguments"},
		{"api bad dir", []string{"bench", "api", "--dir", "/nonexistent/sluice"}, 1, "bench api: stat /nonexistent/sluice"},
		{"backlog unknown mode", []string{"bench", "backlog", "--modes", "embedded,remote"}, exitUsage, `unknown mode "remote"`},
		{"backlog mode twice", []string{"bench", "backlog", "--modes", "client,client"}, exitUsage, `mode "client" given twice`},
		{"backlog no mode", []string{"bench", "backlog", "--modes", ","}, exitUsage, "--modes names no mode"},
		{"backlog no chunks", []string{"bench", "backlog", "--chunks", "0"}, exitUsage, "--chunks must be at least 1"},
		{"backlog bad dir", []string{"bench", "backlog", "--chunks", "10", "--dir", "/nonexistent/sluice"}, 1, "bench backlog: stat /nonexistent/sluice"},
	} {
		if _, errOut, code := runBench(t, tt.args...); code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, want %d saying %q; stderr:\n%s", tt.name, code, tt.code, tt.want, errOut)
		}
	}
}

// The server's request-duration histogram is read per route from the text exposition: the
// bucket bound holding a quantile, -1 past the last finite bucket, 0 without observations.
func TestParseDurationBuckets(t *testing.T) {
	text := `# HELP sluice_http_request_duration_seconds Time ...
sluice_http_request_duration_seconds_bucket{method="GET",route="/v1/jobs/{id}",le="0.005"} 995
sluice_http_request_duration_seconds_bucket{method="GET",route="/v1/jobs/{id}",le="0.001"} 900
sluice_http_request_duration_seconds_bucket{method="GET",route="/v1/jobs/{id}",le="+Inf"} 1000
sluice_http_request_duration_seconds_bucket{method="GET",route="/v1/jobs/{id}",le="0.1"} 999
sluice_http_request_duration_seconds_sum{method="GET",route="/v1/jobs/{id}"} 1.5
sluice_http_request_duration_seconds_bucket{method="POST",route="/v1/jobs",le="0.001"} 0
sluice_http_request_duration_seconds_bucket{method="POST",route="/v1/jobs",le="+Inf"} 0
`
	h, err := parseDurationBuckets([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	get := h["GET /v1/jobs/{id}"]
	for _, tc := range []struct{ q, want float64 }{{0.5, 1}, {0.9, 1}, {0.95, 5}, {0.99, 5}, {0.999, 100}, {1, -1}} {
		if got := get.at(tc.q); got != tc.want {
			t.Errorf("GET p%g = %g ms, want %g", tc.q*100, got, tc.want)
		}
	}
	if got := h["POST /v1/jobs"].at(0.99); got != 0 {
		t.Errorf("a route without observations: %g, want 0", got)
	}
	if _, err := parseDurationBuckets([]byte(`sluice_http_request_duration_seconds_bucket{method="GET",route="/x",le="abc"} 1`)); err == nil {
		t.Error("a bad bucket bound was accepted")
	}
	if _, err := parseDurationBuckets([]byte(`sluice_http_request_duration_seconds_bucket{method="GET",route="/x",le="1"}`)); err == nil {
		t.Error("a line without a value was accepted")
	}
}
