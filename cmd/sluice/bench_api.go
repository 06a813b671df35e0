package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
)

// The routes of the API mix (issue 12), as reported.
const (
	routeGetJob        = "GET /v1/jobs/{id}"
	routeSubmitFeature = "POST /api/features/submit"
	routeSubmitJob     = "POST /v1/jobs"
)

// apiMix is the share of each route in percent: 70% reads of jobs the generator created, 20%
// feature-request commands, 10% uploads of a job file.
var apiMix = []struct {
	route string
	pct   int
}{{routeGetJob, 70}, {routeSubmitFeature, 20}, {routeSubmitJob, 10}}

// apiBenchConfig configures bench api.
type apiBenchConfig struct {
	// Clients is how many keep-alive clients run at once, each with one request in flight.
	Clients int
	// Duration is how long clients start new requests; requests in flight at its end finish
	// and are counted.
	Duration time.Duration
	// ChunksPerJob is the number of NDJSON chunks in each uploaded job file.
	ChunksPerJob int
	// Settle bounds the wait, after the load, for every accepted job to finish.
	Settle time.Duration
	// Timeout bounds each request; a request past it counts as a transport error.
	Timeout time.Duration
	// Dir holds the serve process's data directory (its disk decides the fsync cost).
	// Empty: the system temporary directory.
	Dir string
}

// apiBenchResult is what bench api measured. Durations in milliseconds, memory in bytes.
type apiBenchResult struct {
	Clients int `json:"clients"`
	// SteadyAfterS is the start of the steady part of the run (see SteadyP99Ms).
	SteadyAfterS float64  `json:"steady_after_s"`
	DurationS    float64  `json:"duration_s"`
	ElapsedS     float64  `json:"elapsed_s"`
	ChunksPerJob int      `json:"chunks_per_job"`
	ServeArgs    []string `json:"serve_args"`
	Requests     int64    `json:"requests"`
	RequestsPerS float64  `json:"requests_per_s"`
	// Refused are 503 answers with Retry-After: admission refusals, which the generator
	// records and does not retry.
	Refused int64 `json:"refused"`
	// ServerErrors are answers ≥ 500 other than admission refusals.
	ServerErrors int64 `json:"server_errors"`
	// TransportErrors are requests without an answer (connection failures, timeouts).
	TransportErrors int64            `json:"transport_errors"`
	ErrorSamples    []string         `json:"error_samples,omitempty"`
	Routes          []apiRouteResult `json:"routes"`
	Jobs            apiJobsResult    `json:"jobs"`
	// OrphanedJobs are jobs pending with total 0 and not sealed after the settle wait: opened
	// and never finished by their publisher.
	OrphanedJobs int `json:"orphaned_jobs"`
	// FailedJobs are jobs in state failed after the settle wait.
	FailedJobs int `json:"failed_jobs"`
	// PeakRSS is the serve process's VmHWM at the end; EndRSS its VmRSS then.
	PeakRSS int64 `json:"peak_rss_bytes"`
	EndRSS  int64 `json:"end_rss_bytes"`
	// ServeCPU and GeneratorCPU are the CPU time (user + system) the serve process and the
	// load generator (this process) used while the clients ran, in cores (seconds of CPU per
	// second): on a machine the two share, what the generator takes the server lacks.
	ServeCPU     float64 `json:"serve_cpu_cores"`
	GeneratorCPU float64 `json:"generator_cpu_cores"`
	// GeneratorSchedP99Ms and GeneratorSchedP999Ms are the generator's own Go scheduler
	// latency over the run (runtime/metrics /sched/latencies:seconds: runnable to running),
	// the bucket bound in milliseconds. A client measures its request from before it is sent
	// to after its answer is read, so a goroutine of the generator waiting this long for a CPU
	// is in the client's latency too.
	GeneratorSchedP99Ms  float64 `json:"generator_sched_p99_le_ms"`
	GeneratorSchedP999Ms float64 `json:"generator_sched_p999_le_ms"`
}

// apiRouteResult is one route's share of the run.
type apiRouteResult struct {
	Route    string  `json:"route"`
	Requests int64   `json:"requests"`
	PerS     float64 `json:"requests_per_s"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
	P999Ms   float64 `json:"p999_ms"`
	// SteadyP99Ms is the p99 of the requests started after the run's first SteadyAfterS
	// seconds: every client sends its first request at the same instant, and that burst,
	// about a request per client at once, is in P99Ms but not here.
	SteadyP99Ms float64 `json:"steady_p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	// ServerP99Ms and ServerP999Ms are the server's own view: the upper bound of the bucket
	// of sluice_http_request_duration_seconds (headers read to handler returned) that holds
	// the route's p99 and p999 over the run; -1 when past the last bucket. The client's
	// latencies add the wait for the connection's goroutine, the network stack and the
	// generator's own scheduling, which on a machine the generator shares are most of a tail.
	ServerP99Ms     float64          `json:"server_p99_le_ms"`
	ServerP999Ms    float64          `json:"server_p999_le_ms"`
	Statuses        map[string]int64 `json:"statuses"`
	Refused         int64            `json:"refused"`
	ServerErrors    int64            `json:"server_errors"`
	TransportErrors int64            `json:"transport_errors"`
}

// apiJobsResult is what became of the jobs the API accepted.
type apiJobsResult struct {
	Accepted int `json:"accepted"`
	// Exact: completed, sealed, every chunk published and written once, nothing rejected or
	// dead-lettered.
	Exact int `json:"completed_exactly"`
	// NotExact finished otherwise (failed, with errors, counts that differ).
	NotExact int `json:"not_exact"`
	// Unsettled had not finished when the settle wait ended.
	Unsettled int      `json:"unsettled"`
	SettleS   float64  `json:"settle_s"`
	Samples   []string `json:"samples,omitempty"`
}

// routeStats is one client's record of one route; merged at the end.
type routeStats struct {
	latencies       []time.Duration
	steady          []time.Duration // of the requests started after steadyFrom
	statuses        map[int]int64
	refused         int64
	serverErrors    int64
	transportErrors int64
}

// apiLoad is the load generator's shared state. Safe for concurrent use.
type apiLoad struct {
	cfg    apiBenchConfig
	base   string
	client *http.Client
	run    string // makes every chunk and title of this run unique

	mu      sync.Mutex // guards ids, samples
	ids     []string   // accepted jobs, read by GETs and checked at the end
	samples []string   // first few unexpected answers
}

// maxErrorSamples bounds the unexpected answers kept for the report.
const maxErrorSamples = 10

func (l *apiLoad) sample(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.samples) < maxErrorSamples {
		l.samples = append(l.samples, s)
	}
}

func (l *apiLoad) addJob(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ids = append(l.ids, id)
}

func (l *apiLoad) randomJob(rng *mrand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[rng.IntN(len(l.ids))]
}

// answer is one request's outcome.
type answer struct {
	status     int
	retryAfter bool
	body       []byte
	err        error
}

// do sends one request and reads the whole answer (so the connection is reused).
func (l *apiLoad) do(ctx context.Context, c *http.Client, method, path, ctype string, body []byte) answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, rd)
	if err != nil {
		return answer{err: err}
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return answer{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After") != "", body: b, err: err}
}

// jobFile is an NDJSON file of n chunks whose ids and content are unique to (run, client, seq).
func jobFile(run string, client, seq, n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"chunk_id":"bench_%s_%d_%d_%d","content":"Chunk %d of upload %d of client %d in run %s: enough text to stand for a chunk of rules text."}`+"\n",
			run, client, seq, i, i, seq, client, run)
	}
	return b.Bytes()
}

// submitJob uploads one job file; an accepted job's id is remembered.
func (l *apiLoad) submitJob(ctx context.Context, c *http.Client, client, seq int) answer {
	a := l.do(ctx, c, http.MethodPost, fmt.Sprintf("/v1/jobs?env=dev&file=bench-%d-%d.jsonl", client, seq),
		"application/x-ndjson", jobFile(l.run, client, seq, l.cfg.ChunksPerJob))
	if a.err == nil && (a.status == http.StatusAccepted || a.status == http.StatusOK) {
		var res struct {
			JobID string `json:"job_id"`
		}
		if err := json.Unmarshal(a.body, &res); err != nil || res.JobID == "" {
			a.err = fmt.Errorf("accepted job without a job id: %q", a.body)
			return a
		}
		l.addJob(res.JobID)
	}
	return a
}

func (l *apiLoad) submitFeature(ctx context.Context, c *http.Client, client, seq int) answer {
	body, _ := json.Marshal(map[string]string{
		"title":       fmt.Sprintf("Bench feature %s-%d-%d", l.run, client, seq),
		"description": "A feature request submitted by sluice bench api.",
		"priority":    "high",
		"requester":   "bench",
	})
	return l.do(ctx, c, http.MethodPost, "/api/features/submit", "application/json", body)
}

// connectClient returns a client with a connection of its own, opened (GET /healthz) before
// the load starts, as each of many independent clients would have: with one pool shared by
// every client, a client whose connection is still on its way back to the pool waits for
// whichever comes back first, and a thousand connections dialled in the first second of the
// run would put their handshakes into the latencies measured.
func (l *apiLoad) connectClient(ctx context.Context) (*http.Client, error) {
	tr := &http.Transport{MaxIdleConns: 1, MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	c := &http.Client{Transport: tr, Timeout: l.cfg.Timeout}
	a := l.do(ctx, c, http.MethodGet, "/healthz", "", nil)
	if a.err == nil && a.status != http.StatusOK {
		a.err = fmt.Errorf("GET /healthz answered %d: %s", a.status, bytes.TrimSpace(a.body))
	}
	if a.err != nil {
		tr.CloseIdleConnections()
		return nil, fmt.Errorf("bench api: connect a client: %w", a.err)
	}
	return c, nil
}

// client runs one keep-alive client until end: one request at a time, the route drawn from
// the mix. It never retries: a refusal is recorded and the client moves on.
func (l *apiLoad) runClient(ctx context.Context, c *http.Client, id int, steadyFrom, end time.Time) map[string]*routeStats {
	rng := mrand.New(mrand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	stats := map[string]*routeStats{}
	for _, m := range apiMix {
		stats[m.route] = &routeStats{statuses: map[int]int64{}}
	}
	for seq := 0; time.Now().Before(end) && ctx.Err() == nil; seq++ {
		p, route := rng.IntN(100), ""
		for _, m := range apiMix {
			if p < m.pct {
				route = m.route
				break
			}
			p -= m.pct
		}
		start := time.Now()
		var a answer
		switch route {
		case routeGetJob:
			a = l.do(ctx, c, http.MethodGet, "/v1/jobs/"+url.PathEscape(l.randomJob(rng)), "", nil)
		case routeSubmitFeature:
			a = l.submitFeature(ctx, c, id, seq)
		default:
			a = l.submitJob(ctx, c, id, seq)
		}
		st := stats[route]
		took := time.Since(start)
		st.latencies = append(st.latencies, took)
		if !start.Before(steadyFrom) {
			st.steady = append(st.steady, took)
		}
		switch {
		case a.err != nil:
			if ctx.Err() != nil {
				return stats
			}
			st.transportErrors++
			l.sample(fmt.Sprintf("%s: %v", route, a.err))
		case a.status == http.StatusServiceUnavailable && a.retryAfter:
			st.statuses[a.status]++
			st.refused++
		case a.status >= 500:
			st.statuses[a.status]++
			st.serverErrors++
			l.sample(fmt.Sprintf("%s: %d %s", route, a.status, bytes.TrimSpace(a.body)))
		default:
			st.statuses[a.status]++
		}
	}
	return stats
}

// schedLatencies reads this process's Go scheduler latency histogram as cumulative buckets.
func schedLatencies() histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return histogram{}
	}
	h := s[0].Value.Float64Histogram()
	var out histogram
	var cum float64
	for i, c := range h.Counts {
		cum += float64(c)
		out.le = append(out.le, h.Buckets[i+1])
		out.count = append(out.count, cum)
	}
	return out
}

// since returns the observations h has beyond before, a reading of the same histogram taken
// earlier.
func (h histogram) since(before histogram) histogram {
	if len(before.count) != len(h.count) {
		return h
	}
	out := histogram{le: h.le, count: make([]float64, len(h.count))}
	for i := range h.count {
		out.count[i] = h.count[i] - before.count[i]
	}
	return out
}

// steadyAfter is how long after its start a run of length d counts as steady: 5 s, or a
// quarter of a shorter run.
func steadyAfter(d time.Duration) time.Duration { return min(5*time.Second, d/4) }

// histogram is one route's cumulative buckets of sluice_http_request_duration_seconds.
type histogram struct {
	le    []float64 // upper bounds in seconds, ascending; +Inf last
	count []float64 // cumulative
}

// at returns the upper bound, in milliseconds, of the bucket holding quantile q; -1 past the
// last finite bucket, 0 without observations.
func (h histogram) at(q float64) float64 {
	if len(h.count) == 0 || h.count[len(h.count)-1] == 0 {
		return 0
	}
	total := h.count[len(h.count)-1]
	for i, c := range h.count {
		if c >= q*total {
			if math.IsInf(h.le[i], 1) {
				return -1
			}
			return h.le[i] * 1000
		}
	}
	return -1
}

// serverLatency reads the server's request-duration histogram from /metrics, by "METHOD
// route" as the mix names its routes.
func (l *apiLoad) serverLatency(ctx context.Context) (map[string]histogram, error) {
	a := l.do(ctx, l.client, http.MethodGet, "/metrics", "", nil)
	if a.err != nil {
		return nil, a.err
	}
	if a.status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %d", a.status)
	}
	return parseDurationBuckets(a.body)
}

// parseDurationBuckets reads the sluice_http_request_duration_seconds_bucket lines of a
// Prometheus text exposition.
func parseDurationBuckets(text []byte) (map[string]histogram, error) {
	const prefix = "sluice_http_request_duration_seconds_bucket{"
	type bucket struct{ le, count float64 }
	byRoute := map[string][]bucket{}
	for line := range strings.SplitSeq(string(text), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil, fmt.Errorf("metrics: malformed line %q", line)
		}
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		le, err := strconv.ParseFloat(l["le"], 64) // "+Inf" parses as +Inf
		if err != nil {
			return nil, fmt.Errorf("metrics: bucket bound in %q: %w", line, err)
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bucket count in %q: %w", line, err)
		}
		key := l["method"] + " " + l["route"]
		byRoute[key] = append(byRoute[key], bucket{le, n})
	}
	out := map[string]histogram{}
	for key, bs := range byRoute {
		slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
		var h histogram
		for _, b := range bs {
			h.le, h.count = append(h.le, b.le), append(h.count, b.count)
		}
		out[key] = h
	}
	return out, nil
}

// percentile returns the q-quantile (0..1) of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// runAPIBench starts sluice serve on the embedded default in a fresh data directory, drives
// the mix against it, waits for the accepted jobs, and reports. It blocks for about
// Duration + Settle; ctx ends it early with an error.
func runAPIBench(ctx context.Context, cfg apiBenchConfig) (res apiBenchResult, err error) {
	dir, err := os.MkdirTemp(cfg.Dir, "sluice-bench-api-")
	if err != nil {
		return res, fmt.Errorf("bench api: %w", err)
	}
	defer os.RemoveAll(dir)
	addr, err := freeLoopbackAddr()
	if err != nil {
		return res, fmt.Errorf("bench api: %w", err)
	}
	// No tokens file: the API serves loopback only, and every request is the one local
	// principal, so per-token limits would apply to all clients together. The uploads rate
	// (2/s, burst 10, per token) would refuse nearly every upload of 1,000 clients: it is
	// turned off. The connection cap (1024) is raised above the clients, so refusals measured
	// are the publish admission's.
	res.ServeArgs = []string{"serve", "--data-dir", filepath.Join(dir, "data"), "--http-addr", addr,
		"--api-max-conns", strconv.Itoa(cfg.Clients + 64), "--api-rate-limits", "uploads=off"}
	serve, err := startBenchProc("sluice serve", res.ServeArgs, nil)
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := serve.stop(60 * time.Second); stopErr != nil && err == nil {
			err = serve.failed(stopErr)
		}
	}()
	// MaxConnsPerHost too: without it the transport may dial a connection for a request that
	// then takes one coming back idle, so the server briefly sees more than Clients
	// connections and its cap answers 503 on the extra ones (seen at 1,000 clients).
	tr := &http.Transport{MaxIdleConns: cfg.Clients, MaxIdleConnsPerHost: cfg.Clients, MaxConnsPerHost: cfg.Clients,
		IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	defer tr.CloseIdleConnections()
	var runID [4]byte
	_, _ = rand.Read(runID[:])
	l := &apiLoad{cfg: cfg, base: "http://" + addr, client: &http.Client{Transport: tr, Timeout: cfg.Timeout}, run: hex.EncodeToString(runID[:])}
	if err := l.waitReady(ctx, serve); err != nil {
		return res, serve.failed(err)
	}
	res.Clients, res.DurationS, res.ChunksPerJob = cfg.Clients, cfg.Duration.Seconds(), cfg.ChunksPerJob
	res.SteadyAfterS = steadyAfter(cfg.Duration).Seconds()
	if err := l.drive(ctx, serve, &res); err != nil {
		return res, err
	}
	if err := l.finish(ctx, serve, &res); err != nil {
		return res, serve.failed(err)
	}
	return res, nil
}

// waitReady waits until serve answers /readyz 200 and has accepted one job, so that reads have
// an id from the first request.
func (l *apiLoad) waitReady(ctx context.Context, serve *benchProc) error {
	if err := waitFor(ctx, serve, time.Minute, 100*time.Millisecond, "sluice serve ready", func(ctx context.Context) (bool, error) {
		a := l.do(ctx, l.client, http.MethodGet, "/readyz", "", nil)
		return a.err == nil && a.status == http.StatusOK, nil
	}); err != nil {
		return err
	}
	return waitFor(ctx, serve, 30*time.Second, 200*time.Millisecond, "a first job accepted", func(ctx context.Context) (bool, error) {
		a := l.submitJob(ctx, l.client, -1, 0)
		if a.err == nil && a.status >= 400 && a.status != http.StatusServiceUnavailable {
			return false, fmt.Errorf("bench api: first job answered %d: %s", a.status, a.body)
		}
		return a.err == nil && a.status < 300, nil
	})
}

// connectClients connects cfg.Clients keep-alive clients at once; the caller closes their idle
// connections (also those connected when an error is returned).
func (l *apiLoad) connectClients(ctx context.Context) ([]*http.Client, error) {
	clients := make([]*http.Client, l.cfg.Clients)
	var connectErr error
	var connectMu sync.Mutex // guards connectErr, clients
	var cwg sync.WaitGroup
	for i := range clients {
		cwg.Go(func() {
			c, err := l.connectClient(ctx)
			connectMu.Lock()
			defer connectMu.Unlock()
			if err != nil {
				connectErr = cmp.Or(connectErr, err)
				return
			}
			clients[i] = c
		})
	}
	cwg.Wait()
	return clients, connectErr
}

// drive runs the clients for cfg.Duration and puts what they measured, and the CPU both
// processes used meanwhile, into res.
func (l *apiLoad) drive(ctx context.Context, serve *benchProc, res *apiBenchResult) error {
	clients, err := l.connectClients(ctx)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.CloseIdleConnections()
			}
		}
	}()
	if err != nil {
		return serve.failed(err)
	}
	schedBefore := schedLatencies()
	serveCPU, genCPU := procCPU(serve.cmd.Process.Pid), procCPU(os.Getpid())
	start := time.Now()
	end := start.Add(l.cfg.Duration)
	perClient := make([]map[string]*routeStats, l.cfg.Clients)
	var wg sync.WaitGroup
	for i := range l.cfg.Clients {
		wg.Go(func() { perClient[i] = l.runClient(ctx, clients[i], i, start.Add(steadyAfter(l.cfg.Duration)), end) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return err
	}
	res.ElapsedS = elapsed.Seconds()
	res.ServeCPU = (procCPU(serve.cmd.Process.Pid) - serveCPU) / elapsed.Seconds()
	res.GeneratorCPU = (procCPU(os.Getpid()) - genCPU) / elapsed.Seconds()
	sched := schedLatencies().since(schedBefore)
	res.GeneratorSchedP99Ms, res.GeneratorSchedP999Ms = sched.at(0.99), sched.at(0.999)
	for _, m := range apiMix {
		res.addRoute(routeResult(m.route, perClient, elapsed))
	}
	res.RequestsPerS = float64(res.Requests) / elapsed.Seconds()
	if hist, err := l.serverLatency(ctx); err != nil {
		l.sample(fmt.Sprintf("server latency histogram: %v", err))
	} else {
		for i := range res.Routes {
			q := hist[res.Routes[i].Route]
			res.Routes[i].ServerP99Ms, res.Routes[i].ServerP999Ms = q.at(0.99), q.at(0.999)
		}
	}
	return nil
}

// routeResult sums what every client measured on route over elapsed.
func routeResult(route string, perClient []map[string]*routeStats, elapsed time.Duration) apiRouteResult {
	rr := apiRouteResult{Route: route, Statuses: map[string]int64{}}
	var lat, steady []time.Duration
	for _, pc := range perClient {
		st := pc[route]
		lat = append(lat, st.latencies...)
		steady = append(steady, st.steady...)
		for code, n := range st.statuses {
			rr.Statuses[strconv.Itoa(code)] += n
		}
		rr.Refused += st.refused
		rr.ServerErrors += st.serverErrors
		rr.TransportErrors += st.transportErrors
	}
	slices.Sort(lat)
	rr.Requests = int64(len(lat))
	rr.PerS = float64(rr.Requests) / elapsed.Seconds()
	rr.P50Ms, rr.P99Ms, rr.P999Ms = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999)
	slices.Sort(steady)
	rr.SteadyP99Ms = percentile(steady, 0.99)
	if len(lat) > 0 {
		rr.MaxMs = float64(lat[len(lat)-1]) / float64(time.Millisecond)
	}
	return rr
}

// addRoute adds a route's result and its counts to the totals.
func (res *apiBenchResult) addRoute(rr apiRouteResult) {
	res.Routes = append(res.Routes, rr)
	res.Requests += rr.Requests
	res.Refused += rr.Refused
	res.ServerErrors += rr.ServerErrors
	res.TransportErrors += rr.TransportErrors
}

// finish waits for every accepted job to settle, counts orphaned and failed jobs, and notes
// serve's memory and the error samples in res.
func (l *apiLoad) finish(ctx context.Context, serve *benchProc, res *apiBenchResult) (err error) {
	settleStart := time.Now()
	if res.Jobs, err = l.settle(ctx); err != nil {
		return err
	}
	res.Jobs.SettleS = time.Since(settleStart).Seconds()
	if res.OrphanedJobs, err = l.countJobs(ctx, pipeline.JobPending, func(j pipeline.Job) bool { return j.Total == 0 && !j.Sealed }); err != nil {
		return err
	}
	if res.FailedJobs, err = l.countJobs(ctx, pipeline.JobFailed, func(pipeline.Job) bool { return true }); err != nil {
		return err
	}
	res.PeakRSS, res.EndRSS = serve.memory()
	l.mu.Lock()
	res.ErrorSamples = slices.Clone(l.samples)
	l.mu.Unlock()
	return nil
}

// settlePollers bounds the job reads in flight while waiting for the accepted jobs.
const settlePollers = 16

// settle waits up to Settle for every accepted job to be done, and sorts them into exact,
// not exact and unsettled.
func (l *apiLoad) settle(ctx context.Context) (apiJobsResult, error) {
	l.mu.Lock()
	ids := slices.Clone(l.ids)
	l.mu.Unlock()
	out := apiJobsResult{Accepted: len(ids)}
	deadline := time.Now().Add(l.cfg.Settle)
	final := map[string]pipeline.Job{}
	for len(ids) > 0 {
		jobs := make([]pipeline.Job, len(ids))
		errs := make([]error, len(ids))
		sem := make(chan struct{}, settlePollers)
		var wg sync.WaitGroup
		for i, id := range ids {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				a := l.do(ctx, l.client, http.MethodGet, "/v1/jobs/"+url.PathEscape(id), "", nil)
				switch {
				case a.err != nil:
					errs[i] = a.err
				case a.status != http.StatusOK:
					errs[i] = fmt.Errorf("GET /v1/jobs/%s: %d %s", id, a.status, a.body)
				default:
					errs[i] = json.Unmarshal(a.body, &jobs[i])
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return out, fmt.Errorf("bench api: read accepted jobs: %w", err)
		}
		var left []string
		for i, j := range jobs {
			if j.Sealed && jobDone(j) {
				final[ids[i]] = j
			} else {
				left = append(left, ids[i])
			}
		}
		ids = left
		if len(ids) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	out.Unsettled = len(ids)
	for _, id := range ids {
		if len(out.Samples) < maxErrorSamples {
			out.Samples = append(out.Samples, "unsettled: "+id)
		}
	}
	want := int64(l.cfg.ChunksPerJob)
	for id, j := range final {
		if j.State == pipeline.JobCompleted && j.Total == want && j.Published == want && j.Written == want && j.Rejected == 0 && j.DeadLettered == 0 {
			out.Exact++
			continue
		}
		out.NotExact++
		if len(out.Samples) < maxErrorSamples {
			out.Samples = append(out.Samples, fmt.Sprintf("%s: state %s total %d published %d written %d rejected %d dead-lettered %d",
				id, j.State, j.Total, j.Published, j.Written, j.Rejected, j.DeadLettered))
		}
	}
	return out, nil
}

// jobDone reports whether a job will not change any more (short of a rollback).
func jobDone(j pipeline.Job) bool {
	switch j.State {
	case pipeline.JobCompleted, pipeline.JobCompletedWithErrors, pipeline.JobFailed, pipeline.JobRolledBack, pipeline.JobSuperseded:
		return true
	}
	return false
}

// countJobs counts the jobs in state that match, through GET /v1/jobs, page by page.
func (l *apiLoad) countJobs(ctx context.Context, state pipeline.JobState, match func(pipeline.Job) bool) (int, error) {
	n, cursor := 0, ""
	for {
		a := l.do(ctx, l.client, http.MethodGet, "/v1/jobs?limit=1000&state="+url.QueryEscape(string(state))+"&cursor="+url.QueryEscape(cursor), "", nil)
		if a.err != nil || a.status != http.StatusOK {
			return n, fmt.Errorf("bench api: list %s jobs: %d %v %s", state, a.status, a.err, a.body)
		}
		var page struct {
			Jobs       []pipeline.Job `json:"jobs"`
			NextCursor string         `json:"next_cursor"`
		}
		if err := json.Unmarshal(a.body, &page); err != nil {
			return n, fmt.Errorf("bench api: list %s jobs: %w", state, err)
		}
		for _, j := range page.Jobs {
			if match(j) {
				n++
			}
		}
		if page.NextCursor == "" {
			return n, nil
		}
		cursor = page.NextCursor
	}
}
