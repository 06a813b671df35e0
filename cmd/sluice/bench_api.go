package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pipeline/jobs"
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
	if res.OrphanedJobs, err = l.countJobs(ctx, jobs.JobPending, func(j jobs.Job) bool { return j.Total == 0 && !j.Sealed }); err != nil {
		return err
	}
	if res.FailedJobs, err = l.countJobs(ctx, jobs.JobFailed, func(jobs.Job) bool { return true }); err != nil {
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
	final := map[string]jobs.Job{}
	for len(ids) > 0 {
		fetched := make([]jobs.Job, len(ids))
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
					errs[i] = json.Unmarshal(a.body, &fetched[i])
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return out, fmt.Errorf("bench api: read accepted jobs: %w", err)
		}
		var left []string
		for i, j := range fetched {
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
		if j.State == jobs.JobCompleted && j.Total == want && j.Published == want && j.Written == want && j.Rejected == 0 && j.DeadLettered == 0 {
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
func jobDone(j jobs.Job) bool {
	switch j.State {
	case jobs.JobCompleted, jobs.JobCompletedWithErrors, jobs.JobFailed, jobs.JobRolledBack, jobs.JobSuperseded:
		return true
	}
	return false
}

// countJobs counts the jobs in state that match, through GET /v1/jobs, page by page.
func (l *apiLoad) countJobs(ctx context.Context, state jobs.State, match func(jobs.Job) bool) (int, error) {
	n, cursor := 0, ""
	for {
		a := l.do(ctx, l.client, http.MethodGet, "/v1/jobs?limit=1000&state="+url.QueryEscape(string(state))+"&cursor="+url.QueryEscape(cursor), "", nil)
		if a.err != nil || a.status != http.StatusOK {
			return n, fmt.Errorf("bench api: list %s jobs: %d %v %s", state, a.status, a.err, a.body)
		}
		var page struct {
			Jobs       []jobs.Job `json:"jobs"`
			NextCursor string     `json:"next_cursor"`
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
