package main

// The load generator of bench api: keep-alive clients sending the mix (apiMix) and what each
// measures.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"
)

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

// steadyAfter is how long after its start a run of length d counts as steady: 5 s, or a
// quarter of a shorter run.
func steadyAfter(d time.Duration) time.Duration { return min(5*time.Second, d/4) }

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
