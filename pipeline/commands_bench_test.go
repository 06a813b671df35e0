package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// BenchmarkFeatureDecisions runs 1000 concurrent HTTP clients against the real API server and
// command pipeline (embedded nats-server syncing every write, SQLite requirements and graph
// stores), one op per command: decisions and transitions at random across 100 feature
// requests. Even ops answer at once (latency to 202), odd ops wait for the outcome with
// ?wait=30s (latency to applied, or to the refusal: a refusal is an outcome, answered 409).
// Any other answer or transport error fails the benchmark. Afterwards every command has an
// outcome, and each request's state equals that of the last command applied to it.
func BenchmarkFeatureDecisions(b *testing.B) {
	const clients, keys = 1000, 100
	a := newAPIEnvOpts(b, envOpts{syncAlways: true})
	ids := make([]string, keys)
	for k := range ids {
		ids[k] = fmt.Sprintf("FR-60000000%05d", k)
		if out := a.run(b, featureCmd(ids[k])); !out.Applied {
			b.Fatalf("submit %s: %+v", ids[k], out)
		}
	}
	hc := benchHTTPClient(b, clients)
	results := make([]decisionResult, b.N)
	var errs benchErrors
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	runClients(clients, b.N, func(c int) func(i int) {
		rng := rand.New(rand.NewPCG(uint64(c), 1))
		return func(i int) { results[i] = decide(hc, a.base, ids, rng, i, &errs) }
	})
	// Throughput counts until every command is applied: wait for the last outcomes.
	ctx := context.Background()
	for _, r := range results {
		if r.commandID == "" {
			continue
		}
		if _, ok, err := a.client.Await(ctx, r.commandID, time.Minute); !ok || err != nil {
			errs.fail("command %s never settled: %v", r.commandID, err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	errs.check(b)
	tally := checkDecisionOutcomes(b, a, ids, results)
	if dl := a.deadLetters(b); len(dl) != 0 {
		b.Fatalf("%d dead letters", len(dl))
	}
	pct := percentileMs
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
	b.ReportMetric(pct(tally.to202, 0.50), "p50-202-ms")
	b.ReportMetric(pct(tally.to202, 0.99), "p99-202-ms")
	b.ReportMetric(pct(tally.toApplied, 0.50), "p50-applied-ms")
	b.ReportMetric(pct(tally.toApplied, 0.99), "p99-applied-ms")
	b.ReportMetric(float64(tally.applied), "applied")
	b.ReportMetric(float64(tally.refused), "refused")
	b.ReportMetric(0, "errors")
}

// decisionResult is one op of BenchmarkFeatureDecisions: its key, its command, whether it
// waited for the outcome, and the answer's status and latency. The zero value is an op that
// failed.
type decisionResult struct {
	key       int
	commandID string
	wait      bool
	status    int
	latency   time.Duration
}

// decide makes op i of BenchmarkFeatureDecisions: a decision or transition drawn from rng on a
// key drawn from rng, waiting for the outcome when i is odd. A failure is counted in errs and
// returns the zero result.
func decide(hc *http.Client, base string, ids []string, rng *rand.Rand, i int, errs *benchErrors) decisionResult {
	k := rng.IntN(len(ids))
	var path, body string
	switch rng.IntN(5) {
	case 0:
		path, body = "decision", `{"action":"approve"}`
	case 1:
		path, body = "decision", `{"action":"reject","reason":"not this season"}`
	case 2:
		path, body = "transition", `{"to":"in_progress"}`
	case 3:
		path, body = "transition", `{"to":"completed"}`
	default:
		path, body = "transition", `{"to":"cancelled"}`
	}
	wait := i%2 == 1
	url := base + "/v1/features/" + ids[k] + "/" + path
	if wait {
		url += "?wait=30s"
	}
	req, _ := http.NewRequest("POST", url, bytes.NewBufferString(body))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		errs.fail("POST %s: %v", url, err)
		return decisionResult{}
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	lat := time.Since(t0)
	ok := err == nil && (resp.StatusCode == http.StatusAccepted && !wait ||
		wait && (resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusConflict))
	if !ok {
		errs.fail("POST %s: %d %s (%v)", url, resp.StatusCode, raw, err)
		return decisionResult{}
	}
	var m struct {
		CommandID string `json:"command_id"`
	}
	_ = json.Unmarshal(raw, &m)
	return decisionResult{key: k, commandID: m.CommandID, wait: wait, status: resp.StatusCode, latency: lat}
}

// decisionTally is what BenchmarkFeatureDecisions reports: the latencies to 202 and to the
// outcome, and how many commands were applied and refused.
type decisionTally struct {
	to202, toApplied []time.Duration
	applied, refused int
}

// checkDecisionOutcomes checks that every command has an outcome and that each request's
// stored state is that of the last command applied to it (its version one more than the
// commands applied), and tallies the results.
func checkDecisionOutcomes(b *testing.B, a *apiEnv, ids []string, results []decisionResult) decisionTally {
	b.Helper()
	ctx := context.Background()
	var tally decisionTally
	last := make([]requirements.FeatureRequest, len(ids))
	appliedPerKey := make([]int64, len(ids))
	for _, r := range results {
		if r.wait {
			tally.toApplied = append(tally.toApplied, r.latency)
		} else {
			tally.to202 = append(tally.to202, r.latency)
		}
		out, err := a.store.CommandOutcome(ctx, r.commandID)
		if err != nil {
			b.Fatalf("outcome of %s: %v", r.commandID, err)
		}
		if out.Refusal != nil {
			tally.refused++
			continue
		}
		tally.applied++
		appliedPerKey[r.key]++
		if out.Feature.Version > last[r.key].Version {
			last[r.key] = *out.Feature
		}
	}
	for k, id := range ids {
		f, err := a.store.GetFeature(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		if appliedPerKey[k] > 0 && (f.Status != last[k].Status || f.Version != last[k].Version) {
			b.Fatalf("%s: stored %s v%d, last applied command left %s v%d", id, f.Status, f.Version, last[k].Status, last[k].Version)
		}
		if f.Version != 1+appliedPerKey[k] {
			b.Fatalf("%s: version %d after %d applied commands", id, f.Version, appliedPerKey[k])
		}
	}
	return tally
}

// benchErrors counts a benchmark's failed ops and keeps the first one's text; safe for
// concurrent use.
type benchErrors struct {
	n     atomic.Int64
	once  sync.Once
	first string
}

// fail counts a failed op, described by format and args.
func (e *benchErrors) fail(format string, args ...any) {
	e.n.Add(1)
	e.once.Do(func() { e.first = fmt.Sprintf(format, args...) })
}

// check fails the benchmark if any op failed; call it once the ops are done.
func (e *benchErrors) check(b *testing.B) {
	b.Helper()
	if n := e.n.Load(); n > 0 {
		b.Fatalf("%d errors; first: %s", n, e.first)
	}
}

// benchHTTPClient is an HTTP client for clients concurrent clients of one server: it keeps a
// connection for each (closed when b ends), and gives up on a request after a minute.
func benchHTTPClient(b *testing.B, clients int) *http.Client {
	tr := &http.Transport{MaxIdleConns: clients, MaxIdleConnsPerHost: clients, IdleConnTimeout: time.Minute}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// runClients runs ops 0 … n-1 on min(clients, n) goroutines, each taking the next op in turn
// until none is left, and blocks until all are done. client(c) returns the op function of
// client c, called on c's goroutine only.
func runClients(clients, n int, client func(c int) func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for c := range min(clients, n) {
		wg.Go(func() {
			op := client(c)
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				op(i)
			}
		})
	}
	wg.Wait()
}

// percentileMs returns the p-th percentile of d in milliseconds (0 for none); it sorts d.
func percentileMs(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
}

// BenchmarkFeatureSubmissions runs 1000 concurrent HTTP clients submitting feature requests
// through the Python route (POST /api/features/submit, which answers once the command is
// applied, or 202 after its 10 s wait), against the real API server and command pipeline
// (embedded nats-server syncing every write, SQLite requirements and graph stores): issue
// 12's command load. Every
// submission is a new key and is applied, so every command also pays its graph projection,
// unlike BenchmarkFeatureDecisions, where most commands are refused. A 202 (past the wait) is
// counted and its command awaited; any other answer but 200 fails the benchmark. Afterwards
// every submitted request is stored and projected once.
func BenchmarkFeatureSubmissions(b *testing.B) {
	const clients = 1000
	a := newAPIEnvOpts(b, envOpts{syncAlways: true})
	hc := benchHTTPClient(b, clients)
	ids := make([]string, b.N)
	pending := make([]string, b.N)
	lat := make([]time.Duration, b.N)
	var pastWait atomic.Int64
	var errs benchErrors
	body := `{"title":"Initiative tracker","description":"Track initiative for every encounter","priority":"high","requester":"gm.alice"}`
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	runClients(clients, b.N, func(int) func(i int) {
		return func(i int) {
			req, _ := http.NewRequest("POST", a.base+"/api/features/submit", bytes.NewBufferString(body))
			req.Header.Set("Authorization", "Bearer "+writerToken)
			req.Header.Set("Content-Type", "application/json")
			t0 := time.Now()
			resp, err := hc.Do(req)
			if err != nil {
				errs.fail("submit: %v", err)
				return
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			lat[i] = time.Since(t0)
			var m struct {
				RequestID string `json:"request_id"`
				CommandID string `json:"command_id"`
			}
			switch {
			case err != nil || json.Unmarshal(raw, &m) != nil:
				errs.fail("submit: %d %s (%v)", resp.StatusCode, raw, err)
			case resp.StatusCode == http.StatusOK && m.RequestID != "":
				ids[i] = m.RequestID
			case resp.StatusCode == http.StatusAccepted && m.CommandID != "":
				// Not applied within the route's wait: counted, and awaited below.
				pending[i] = m.CommandID
				pastWait.Add(1)
			default:
				errs.fail("submit: %d %s", resp.StatusCode, raw)
			}
		}
	})
	// Throughput counts until every command is applied: wait for the ones past the wait.
	ctx := context.Background()
	for i, cid := range pending {
		if cid == "" {
			continue
		}
		out, ok, err := a.client.Await(ctx, cid, time.Minute)
		if err != nil || !ok || !out.Applied || out.Feature == nil {
			errs.fail("command %s: %+v, %v, %v", cid, out, ok, err)
			continue
		}
		ids[i] = out.Feature.RequestID
	}
	elapsed := time.Since(start)
	b.StopTimer()
	errs.check(b)
	for _, id := range ids {
		if f, err := a.store.GetFeature(ctx, id); err != nil || f.Version != 1 {
			b.Fatalf("%s: %+v, %v; want stored at version 1", id, f, err)
		}
		// The compat route answers after the outcome, which is published after the projection.
		if n, err := a.graph.GetNode(ctx, "dev", requirements.FeatureNodeID(id)); err != nil || n.Version != 1 {
			b.Fatalf("%s in the graph: %+v, %v; want projected once", id, n, err)
		}
	}
	if dl := a.deadLetters(b); len(dl) != 0 {
		b.Fatalf("%d dead letters", len(dl))
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
	b.ReportMetric(percentileMs(lat, 0.50), "p50-applied-ms")
	b.ReportMetric(percentileMs(lat, 0.99), "p99-applied-ms")
	b.ReportMetric(float64(pastWait.Load()), "past-wait")
	b.ReportMetric(0, "errors")
}
