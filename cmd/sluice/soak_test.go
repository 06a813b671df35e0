package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// soakSample is what TestSoak watches for growth: the serve process's goroutines, heap in use
// and open file descriptors (its /metrics), and the consumers on the broker.
type soakSample struct {
	at         time.Duration
	goroutines float64
	heap       float64
	fds        float64
	consumers  int
}

// TestSoak runs `sluice serve` on an external nats-server under a steady mixed load — chunk
// uploads followed to completion, short change-feed requests, job reads, graph uploads — for
// SLUICE_SOAK (a duration: 30m for the full soak, 3m in CI), and fails if goroutines, heap,
// file descriptors or broker consumers keep growing, or if any chunk is lost. Without
// SLUICE_SOAK it is skipped (.ci/run sets it).
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("SLUICE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("SLUICE_SOAK is not set (e.g. SLUICE_SOAK=30m; CI runs 3m)")
	}
	nats := startNATS(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, "serve", nil, "--nats-url", nats.url(), "--data-dir", dataDir)
	nc, err := sjs.Connect(context.Background(), sjs.ConnConfig{URL: nats.url()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}

	const perJob = 500
	warmup := min(30*time.Second, d/4)
	var samples []soakSample
	var loaded, jobsDone int
	idleConsumers := -1 // the broker's consumers after the first cycle: durable ones only
	start := time.Now()
	nextSample := start.Add(warmup)
	client := &http.Client{Timeout: 30 * time.Second}
	for cycle := 0; time.Since(start) < d; cycle++ {
		soakCycle(t, client, srv.base, cycle, perJob)
		loaded += perJob
		jobsDone++
		if cycle == 0 {
			// Every route has run once, so every durable consumer exists.
			idleConsumers = sampleServe(t, srv.base, js, time.Since(start)).consumers
		}
		if time.Now().After(nextSample) {
			samples = append(samples, sampleServe(t, srv.base, js, time.Since(start)))
			nextSample = time.Now().Add(max(15*time.Second, d/20))
		}
	}
	samples = append(samples, sampleServe(t, srv.base, js, time.Since(start)))
	checkSoakGrowth(t, samples, idleConsumers)
	_ = srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.cmd.Wait(); err != nil {
		t.Errorf("serve exit after the soak: %v", err)
	}
	stored := storeCount(t, dataDir)
	if stored != int64(loaded) {
		t.Errorf("%d chunks loaded in %d jobs, %d stored", loaded, jobsDone, stored)
	}
	first, last := samples[0], samples[len(samples)-1]
	recordFault(faultRow{
		Scenario: "soak " + d.String(), Load: fmt.Sprintf("%d jobs of %d chunks, 3 dropped change feeds each, a graph every 5th", jobsDone, perJob),
		Fault: "none: growth over time", Lost: max(0, int64(loaded)-stored),
		Note: fmt.Sprintf("goroutines %.0f → %.0f, heap %.0f → %.0f MiB, fds %.0f → %.0f, consumers %d → %d",
			first.goroutines, last.goroutines, first.heap/(1<<20), last.heap/(1<<20), first.fds, last.fds, first.consumers, last.consumers),
	})
}

// soakCycle runs one cycle of the soak's load on the server at base: a new file of perJob
// chunks uploaded, three change feeds opened and dropped at once, a graph upload every 5th
// cycle, and the job followed until it completed.
func soakCycle(t *testing.T, client *http.Client, base string, cycle, perJob int) {
	t.Helper()
	// A new file each cycle: a new job, followed to its end.
	var body bytes.Buffer
	for i := range perJob {
		fmt.Fprintf(&body, `{"chunk_id":"soak_%06d_%04d","content":"Soak chunk %d of cycle %d, text enough to be a chunk of rules."}`+"\n", cycle, i, i, cycle)
	}
	id := submit(t, client, base+"/v1/jobs?env=dev&format=jsonl", "application/x-ndjson", body.Bytes())
	// Change feeds opened and dropped at once: each must leave no consumer behind.
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
		cancel()
	}
	if cycle%5 == 0 {
		g := fmt.Sprintf(`{"nodes":[{"id":"soak:%d:a","type":"Rule","properties":{}},{"id":"soak:%d:b","type":"Rule","properties":{}}],"edges":[{"source":"soak:%d:a","type":"depends_on","target":"soak:%d:b"}]}`, cycle, cycle, cycle, cycle)
		submit(t, client, base+"/v1/graph?env=dev", "application/json", []byte(g))
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		j := getJSON(t, base+"/v1/jobs/"+id, 200)
		if j["state"] == "completed" {
			return
		}
		if s, _ := j["state"].(string); s != "running" && s != "pending" || time.Now().After(deadline) {
			t.Fatalf("cycle %d: job %s ended %v", cycle, id, j)
		}
	}
}

// checkSoakGrowth logs the soak's samples and fails if goroutines, file descriptors, consumers
// or heap grew from the first sample to the last, or if any sample holds more consumers than
// idleConsumers (those after the first cycle) and a slack of 5.
func checkSoakGrowth(t *testing.T, samples []soakSample, idleConsumers int) {
	t.Helper()
	for _, s := range samples {
		t.Logf("%6.0fs goroutines %4.0f  heap %6.1f MiB  fds %4.0f  consumers %d", s.at.Seconds(), s.goroutines, s.heap/(1<<20), s.fds, s.consumers)
	}
	first, last := samples[0], samples[len(samples)-1]
	if last.goroutines > first.goroutines+50 || last.fds > first.fds+25 || last.consumers > first.consumers+5 ||
		last.heap > max(2*first.heap, first.heap+64<<20) {
		t.Errorf("grew over the soak: goroutines %.0f → %.0f, fds %.0f → %.0f, consumers %d → %d, heap %.1f → %.1f MiB",
			first.goroutines, last.goroutines, first.fds, last.fds, first.consumers, last.consumers, first.heap/(1<<20), last.heap/(1<<20))
	}
	// Every change feed deletes its consumer when its client leaves, even one dropped while
	// its consumer was being created, so between cycles the broker holds the durable
	// consumers and nothing else, at every sample. The slack of 5 is for a consumer whose
	// delete is still on its way. (Feeds dropped during the create used to leave theirs to the
	// server's 30 s InactiveThreshold: a plateau of over a hundred in the 3-minute soak.)
	for _, s := range samples {
		if s.consumers > idleConsumers+5 {
			t.Errorf("%.0fs: %d consumers on the broker, %d after the first cycle: dropped change feeds left theirs", s.at.Seconds(), s.consumers, idleConsumers)
		}
	}
}

// submit POSTs body and returns the job id of a 202. Like a well-behaved client it waits out
// a 429 or 503 for its Retry-After (the API's per-token rate limits) and sends again.
func submit(t *testing.T, c *http.Client, url, ctype string, body []byte) string {
	t.Helper()
	for try := 0; ; try++ {
		resp, err := c.Post(url, ctype, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && try < 30 {
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			time.Sleep(time.Duration(max(wait, 1)) * time.Second)
			continue
		}
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s: %d %v", url, resp.StatusCode, out)
		}
		id, _ := out["job_id"].(string)
		return id
	}
}

func sampleServe(t *testing.T, base string, js jetstream.JetStream, at time.Duration) soakSample {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	s := soakSample{at: at}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch name {
		case "go_goroutines":
			s.goroutines = v
		case "go_memstats_heap_inuse_bytes":
			s.heap = v
		case "process_open_fds":
			s.fds = v
		}
	}
	ctx := context.Background()
	for name := range js.StreamNames(ctx).Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			continue
		}
		if info, err := st.Info(ctx); err == nil {
			s.consumers += info.State.Consumers
			if os.Getenv("SLUICE_SOAK_DEBUG") != "" && info.State.Consumers > 16 {
				t.Logf("stream %s: %d consumers", name, info.State.Consumers)
				n := 0
				for ci := range st.ListConsumers(ctx).Info() {
					if n++; n <= 5 {
						t.Logf("  %s filter=%v inactive=%v delivered=%d pending=%d created=%s", ci.Name, ci.Config.FilterSubjects, ci.Config.InactiveThreshold, ci.Delivered.Stream, ci.NumPending, ci.Created.Format("15:04:05.000"))
					}
				}
			}
		}
	}
	return s
}
