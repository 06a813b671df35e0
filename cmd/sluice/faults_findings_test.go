package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded"
)

// The eight findings of issue 11, each reproduced end to end against the real binary: `sluice
// serve` (on its embedded broker, or on an external nats-server where the broker must fail),
// driven over HTTP as a client would, with the outcome checked exactly. Each adds a row to the
// reliability table. Finding 3 (a poison message near 1 MiB) is TestFaultSuite's "poison of
// every size among good chunks"; SIGTERM within the drain timeout and the stall after a broker
// restart (finding 8) are its "SIGTERM while the sink hangs" and "broker kill -9 and restart".
// TestFaultSuiteFindings reproduces each finding of issue 11 against `sluice serve` and checks
// its outcome exactly; every subtest records its row.
func TestFaultSuiteFindings(t *testing.T) {
	if testing.Short() {
		t.Skip("the findings run real processes for minutes")
	}
	t.Run("finding 1: large graph upload lands every edge", findingLargeGraphUpload)
	t.Run("finding 2: the later duplicate wins across batches", findingLaterDuplicateWins)
	t.Run("finding 4: the embedded broker is closed to the host", findingBrokerClosedToHost)
	t.Run("finding 5: slow bodies without a token", findingSlowBodies)
	t.Run("finding 6: change-feed consumers go when their clients leave", findingFeedConsumersGo)
	t.Run("finding 7: a traversal has a deadline", findingTraversalDeadline)
	t.Run("finding 8: a broker outage answers 503 with Retry-After", findingBrokerOutage503)
	t.Run("finding 8: control characters in ids are refused", findingControlCharacterIDs)
}

// findingLargeGraphUpload: a graph upload of 100,000 edges lands every node and edge, none
// dead-lettered or written twice.
func findingLargeGraphUpload(t *testing.T) {
	const nodes, edges = 2000, 100_000
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, "serve", nil, "--data-dir", dataDir)
	body := graphFile(nodes, edges)
	start := time.Now()
	id := upload(t, srv.base, "/v1/graph?env=dev", "", "application/json", body)
	job := waitDone(t, srv.base, "", id, 2*time.Minute)
	took := time.Since(start)
	stats := call(t, "GET", srv.base+"/v1/graph/stats", "", "", nil).body
	gotN, gotE := num(stats, "total_nodes"), num(stats, "total_edges")
	dead := dlqEntries(t, srv.base, "")
	row := faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("%d nodes, %d edges, %.1f MB, one POST /v1/graph", nodes, edges, float64(len(body))/1e6),
		Fault: fmt.Sprintf("the upload cut into %d messages, published in ordered atomic batches", num(job, "total")),
		Lost:  max(0, nodes-gotN) + max(0, edges-gotE), Duplicated: max(0, num(job, "written")+num(job, "dead_lettered")-num(job, "total")),
		DeadLettered: int64(len(dead)), Recovery: took, Note: "recovery is the whole load, upload to job completed",
	}
	if job["state"] != "completed" || gotN != nodes || gotE != edges || len(dead) != 0 || num(job, "total") < 10 || row.Duplicated != 0 {
		t.Fatalf("graph job %v; stored %d nodes, %d edges; %d dead letters", job, gotN, gotE, len(dead))
	}
	recordFinding(t, row)
}

// duplicatesFile is a chunk file of items chunks in which each id of pairs appears at two
// items: the earlier one's content starts "FIRST", the later one's "LAST".
func duplicatesFile(items int, pairs map[int]string) []byte {
	var b bytes.Buffer
	for i := range items {
		id, content := fmt.Sprintf("later_%05d", i), fmt.Sprintf("chunk %d of the duplicate file", i)
		if dup, ok := pairs[i]; ok {
			id, content = dup, "FIRST: the earlier item with this id"
			if _, later := pairs[i-1]; later && pairs[i-1] == dup {
				content = "LAST: the later item with this id"
			}
		}
		line, _ := json.Marshal(map[string]any{"chunk_id": id, "content": content})
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// findingLaterDuplicateWins: an id twice in one file keeps the later item, also when the two
// fall in different atomic batches.
func findingLaterDuplicateWins(t *testing.T) {
	const items, rounds = 2000, 5
	srv := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"))
	// One id twice at each candidate boundary of the 1,000-message atomic batches and
	// in the middle of one: items 499/500, 999/1000, 1499/1500.
	pairs := map[int]string{499: "dup_a", 500: "dup_a", 999: "dup_b", 1000: "dup_b", 1499: "dup_c", 1500: "dup_c"}
	file := duplicatesFile(items, pairs)
	start := time.Now()
	var stored []string
	var lost int64
	for round := range rounds {
		id := upload(t, srv.base, "/v1/jobs?env=dev&file=dup.jsonl&force=true", "", "application/x-ndjson", file)
		job := waitDone(t, srv.base, "", id, time.Minute)
		if job["state"] != "completed" || num(job, "written") != items {
			t.Fatalf("round %d: job %v", round, job)
		}
		for _, dup := range []string{"dup_a", "dup_b", "dup_c"} {
			a := call(t, "GET", srv.base+"/v1/chunks/"+dup+"?env=dev", "", "", nil)
			content, _ := a.body["content"].(string)
			stored = append(stored, content[:min(4, len(content))])
			if !strings.HasPrefix(content, "LAST") {
				lost++
			}
		}
	}
	row := faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("%d chunks, 3 ids each at two items (499/500, 999/1000, 1499/1500), loaded %d times with force", items, rounds),
		Fault: "the file spans two 1,000-message atomic batches, four in flight", Lost: lost,
		DeadLettered: int64(len(dlqEntries(t, srv.base, ""))), Recovery: time.Since(start),
		Note: "stored per id and round: " + strings.Join(stored, " "),
	}
	if lost != 0 || row.DeadLettered != 0 {
		t.Fatalf("the earlier item won %d of %d times: %s", lost, 3*rounds, row.Note)
	}
	recordFinding(t, row)
}

// findingBrokerClosedToHost: the embedded broker refuses clients without its credential, and
// the workers refuse commands published around the API even with it.
func findingBrokerClosedToHost(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, "serve", nil, "--data-dir", dataDir, "--tokens-file", tokensFile(t))
	refused := strangersRefused(t, dataDir)
	jobID, featID := jobAndFeature(t, srv.base)
	auditBefore := call(t, "GET", srv.base+"/v1/audit/features?request_id="+featID, readTok, "", nil).body

	// With the credential (the host's operator), a rollback and an approval published
	// straight onto the broker, without the API's signature, are refused by the workers.
	publishForged(t, dataDir, jobID, featID)
	var dead []any
	for deadline := time.Now().Add(30 * time.Second); len(dead) < 2; time.Sleep(100 * time.Millisecond) {
		if dead = dlqEntries(t, srv.base, readTok); time.Now().After(deadline) {
			t.Fatalf("forged messages not dead-lettered within 30 s: %v", dead)
		}
	}
	for _, d := range dead {
		if class := d.(map[string]any)["error"].(map[string]any)["class"]; class != "auth" {
			t.Errorf("dead letter %v: class %v, want auth", d, class)
		}
	}
	kept := 0
	for i := range 20 {
		if call(t, "GET", fmt.Sprintf("%s/v1/chunks/kept_%02d?env=dev", srv.base, i), readTok, "", nil).status == 200 {
			kept++
		}
	}
	job := call(t, "GET", srv.base+"/v1/jobs/"+jobID, readTok, "", nil).body
	f := call(t, "GET", srv.base+"/v1/features/"+featID, readTok, "", nil).body
	auditAfter := call(t, "GET", srv.base+"/v1/audit/features?request_id="+featID, readTok, "", nil).body
	if kept != 20 || job["rollback"] != nil || job["state"] != "completed" {
		t.Fatalf("after a forged rollback: %d of 20 chunks kept, job %v", kept, job)
	}
	if fs := f["feature"]; fs == nil || fs.(map[string]any)["status"] != "pending" || fmt.Sprint(auditAfter) != fmt.Sprint(auditBefore) {
		t.Fatalf("after a forged approval: feature %v; audit %v, was %v", f, auditAfter, auditBefore)
	}
	// The dead letters cannot be purged around the API (no connection without the
	// credential, above), nor through it without an admin token.
	for _, tok := range []string{"", writeTok} {
		if a := call(t, "DELETE", srv.base+"/v1/dlq?error_class=auth", tok, "", nil); a.status != 401 && a.status != 403 {
			t.Fatalf("DELETE /v1/dlq with token %q: %d %v", tok, a.status, a.body)
		}
	}
	if n := len(dlqEntries(t, srv.base, readTok)); n != 2 {
		t.Fatalf("%d dead letters after refused purges, want 2", n)
	}
	recordFinding(t, faultRow{
		Scenario: t.Name(), Load: "a job of 20 chunks and a feature request through the API",
		Fault: "connect to the broker without the credential; with it, publish an unsigned rollback and approval; purge the DLQ without a token",
		Lost:  int64(20 - kept), DeadLettered: int64(len(dead)),
		Note: fmt.Sprintf("%d unauthenticated connects refused; both forged commands dead-lettered (auth), nothing deleted, audit unchanged; purge answered 401/403", refused),
	})
}

// strangersRefused checks that the embedded broker's files in dataDir are private and that it
// refuses a client without its credential or with a wrong one; it returns how many it refused.
func strangersRefused(t *testing.T, dataDir string) int {
	t.Helper()
	for _, f := range []string{embedded.URLFile, embedded.CredentialFile} {
		if fi, err := os.Stat(filepath.Join(dataDir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, %v; want mode 0600", f, fi, err)
		}
	}
	url, err := os.ReadFile(filepath.Join(dataDir, embedded.URLFile))
	if err != nil {
		t.Fatal(err)
	}
	// Without the credential, or with a wrong one, the broker refuses the connection:
	// nothing can be published, purged or read around the API.
	refused := 0
	for _, opts := range [][]nats.Option{nil, {nats.UserInfo(embedded.User, "not-the-password")}} {
		nc, err := nats.Connect(strings.TrimSpace(string(url)), append(opts, nats.MaxReconnects(0))...)
		if err == nil {
			nc.Close()
			t.Fatal("a client without the credential connected to the embedded broker")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("connect without the credential: %v, want an authorization violation", err)
		}
		refused++
	}
	return refused
}

// jobAndFeature loads a job of 20 chunks (kept_00…kept_19) and submits a feature request
// through the API, and returns the job's and the request's ids.
func jobAndFeature(t *testing.T, base string) (jobID, featID string) {
	t.Helper()
	var chunks bytes.Buffer
	for i := range 20 {
		fmt.Fprintf(&chunks, `{"chunk_id":"kept_%02d","content":"A chunk a forged rollback must not delete."}`+"\n", i)
	}
	jobID = upload(t, base, "/v1/jobs?env=dev", writeTok, "application/x-ndjson", chunks.Bytes())
	if job := waitDone(t, base, readTok, jobID, time.Minute); job["state"] != "completed" {
		t.Fatalf("job %v", job)
	}
	feat := call(t, "POST", base+"/v1/features?wait=5s", writeTok, "application/json",
		[]byte(`{"title":"Dice roller","description":"Roll dice for everyone at the table","priority":"medium","requester":"gm.bob"}`))
	if feat.status != 201 {
		t.Fatalf("POST /v1/features: %d %v", feat.status, feat.body)
	}
	return jobID, feat.body["feature"].(map[string]any)["request_id"].(string)
}

// publishForged publishes, with the broker's credential but without the API's signature, a
// rollback of jobID and an approval of featID.
func publishForged(t *testing.T, dataDir, jobID, featID string) {
	t.Helper()
	js := embeddedJS(t, dataDir)
	ctx := context.Background()
	rb, _ := json.Marshal(schemas.JobRollback{JobID: jobID, Env: "dev", RequestedBy: "forger", RequestedAt: time.Now().UTC()})
	forged := requirements.Command{CommandID: "forged-approval", Type: requirements.TypeDecideFeatureRequest, Actor: "forged-admin", IssuedAt: time.Now().UTC(),
		Decide: &requirements.DecideFeatureRequest{RequestID: featID, Action: requirements.ActionApprove}}
	fb, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	for subject, data := range map[string][]byte{schemas.JobSubject("dev"): rb, forged.Subject(): fb} {
		m := nats.NewMsg(subject)
		m.Data = data
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish forged %s: %v", m.Subject, err)
		}
	}
}

// findingSlowBodies: a flood of connections that never finish their bodies is answered and
// closed within the body timeout, holds no more than the connection cap, and leaves /healthz
// answering throughout.
func findingSlowBodies(t *testing.T) {
	const conns, maxConns, bodyTimeout = 2000, 512, 2 * time.Second
	srv := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"), "--tokens-file", tokensFile(t),
		"--api-body-timeout", bodyTimeout.String(), "--api-max-conns", fmt.Sprint(maxConns))
	pid := srv.cmd.Process.Pid
	baseFDs := openFDs(t, pid)
	// A health checker that keeps its connection (its slot) from before the flood.
	health := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}, Timeout: 2 * time.Second}
	defer health.CloseIdleConnections()
	healthy := func() bool {
		resp, err := health.Get(srv.base + "/healthz")
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200
	}
	if !healthy() {
		t.Fatal("/healthz before the flood")
	}
	w := watchServer(pid, healthy)
	byStatus, slowest := slowBodies(strings.TrimPrefix(srv.base, "http://"), conns, bodyTimeout)
	w.stop()
	after := healthy()
	peak := w.maxFDs.Load()
	row := faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("%d connections at once, each `Content-Length: 1000` and 1 byte, no token", conns),
		Fault: fmt.Sprintf("--api-body-timeout %s, --api-max-conns %d", bodyTimeout, maxConns), Recovery: slowest,
		Note: fmt.Sprintf("answers %v; all closed by %.1f s; open fds %d → peak %d; /healthz failed %d of %d checks", byStatus, slowest.Seconds(), baseFDs, peak, w.healthFails.Load(), w.healthChecks.Load()),
	}
	t.Log(row.Note)
	if slowest > bodyTimeout+10*time.Second || peak > int64(baseFDs+maxConns+32) || w.healthFails.Load() != 0 || !after {
		t.Fatalf("slow bodies: %s", row.Note)
	}
	for st := range byStatus {
		if !strings.HasPrefix(st, "HTTP/1.1 401") && !strings.HasPrefix(st, "HTTP/1.1 503") {
			t.Fatalf("a slow connection ended with %q; want 401 (no token) or 503 (over the cap): %s", st, row.Note)
		}
	}
	recordFinding(t, row)
}

// serverWatch samples a server process's open file descriptors and its health every 50 ms
// until stop.
type serverWatch struct {
	maxFDs, healthFails, healthChecks atomic.Int64
	done                              chan struct{}
	wg                                sync.WaitGroup
}

// watchServer starts watching process pid, asking healthy for its health.
func watchServer(pid int, healthy func() bool) *serverWatch {
	w := &serverWatch{done: make(chan struct{})}
	w.wg.Go(func() {
		for {
			select {
			case <-w.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil && int64(len(ents)) > w.maxFDs.Load() {
				w.maxFDs.Store(int64(len(ents)))
			}
			w.healthChecks.Add(1)
			if !healthy() {
				w.healthFails.Add(1)
			}
		}
	})
	return w
}

// stop ends the watch and waits for it.
func (w *serverWatch) stop() {
	close(w.done)
	w.wg.Wait()
}

// slowBodies opens conns connections to host, each sending headers announcing 1,000 bytes,
// one byte, then nothing, and returns how many ended with each status line and when the last
// was closed.
func slowBodies(host string, conns int, bodyTimeout time.Duration) (byStatus map[string]int, slowest time.Duration) {
	// The outcome is what the server answered and when it closed the connection.
	type outcome struct {
		status string
		closed time.Duration
	}
	outcomes := make([]outcome, conns)
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 64) // dials at once
	for i := range conns {
		sem <- struct{}{}
		c, err := net.Dial("tcp", host)
		<-sem
		if err != nil {
			outcomes[i].status = "dial: " + err.Error()
			continue
		}
		_, _ = io.WriteString(c, "POST /v1/jobs?env=dev HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n{")
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(bodyTimeout + 20*time.Second))
			got, _ := io.ReadAll(c)
			line, _, _ := strings.Cut(string(got), "\r\n")
			outcomes[i] = outcome{status: line, closed: time.Since(start)}
		}()
	}
	wg.Wait()
	byStatus = map[string]int{}
	for _, o := range outcomes {
		byStatus[o.status]++
		slowest = max(slowest, o.closed)
	}
	return byStatus, slowest
}

// findingFeedConsumersGo: each change feed deletes its consumer when its client leaves, so
// many short feeds leave no consumers behind and later reads do not fail for want of them.
func findingFeedConsumersGo(t *testing.T) {
	const feeds, parallel, reads = 300, 4, 500
	dataDir := filepath.Join(t.TempDir(), "data")
	srv := startServer(t, "serve", nil, "--data-dir", dataDir, "--tokens-file", tokensFile(t), "--api-rate-limits", "feeds=off")
	js := embeddedJS(t, dataDir)
	baseline := settledConsumers(t, js)
	start := time.Now()
	answers, peak := shortFeeds(t, srv.base, js, feeds, parallel)
	feedsDone := time.Now()
	var now int
	// Each feed deletes its consumer as it ends; the server's InactiveThreshold (30 s) is
	// only the fallback, so waiting that long means a leak.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if now = consumers(t, js); now <= baseline {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers 10 s after %d feeds closed, baseline %d", now, feeds, baseline)
		}
	}
	back := time.Since(feedsDone)
	// Then many concurrent reads: none fails for want of consumers.
	bad := 0
	for _, s := range concurrentGets(srv.base+"/v1/jobs", readTok, reads) {
		if s != 200 {
			bad++
		}
	}
	row := faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("%d short GET /v1/events with a read token, %d at once; then %d concurrent GET /v1/jobs", feeds, parallel, reads),
		Fault: "each feed closed by its client right after the answer's headers", Recovery: time.Since(start),
		Note: fmt.Sprintf("feed answers %v (429: the token's 16 open feeds, each held until its consumer is deleted); consumers %d → peak %d → %d, back to baseline %.1f s after the last feed; %d of %d reads not 200", answers, baseline, peak, now, back.Seconds(), bad, reads),
	}
	t.Log(row.Note)
	if answers[200] < feeds/2 || answers[200]+answers[429] != feeds || bad != 0 {
		t.Fatalf("feeds: %s", row.Note)
	}
	recordFinding(t, row)
}

// settledConsumers returns the server's own consumers, once it has created them all (the count
// is the same twice in a row, or 10 s have passed).
func settledConsumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	baseline := -1
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(300 * time.Millisecond) {
		n := consumers(t, js)
		if n == baseline {
			break
		}
		baseline = n
	}
	return baseline
}

// shortFeeds opens feeds change feeds, parallel at once, each closed by its client right after
// the answer's headers, and returns how many got each status (-429: a 429 without
// Retry-After) and the most consumers seen on the broker meanwhile.
func shortFeeds(t *testing.T, base string, js jetstream.JetStream, feeds, parallel int) (answers map[int]int, peak int64) {
	t.Helper()
	var mu sync.Mutex // guards answers
	answers = map[int]int{}
	var wg sync.WaitGroup
	work := make(chan int)
	for range parallel {
		wg.Go(func() {
			for range work {
				// A client that opens the feed, gets its answer's headers and closes it.
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events", nil)
				req.Header.Set("Authorization", "Bearer "+readTok)
				status := -1
				if resp, err := http.DefaultClient.Do(req); err == nil {
					if status = resp.StatusCode; status == 429 && resp.Header.Get("Retry-After") == "" {
						status = -429
					}
					resp.Body.Close()
				}
				cancel()
				mu.Lock()
				answers[status]++
				mu.Unlock()
			}
		})
	}
	for i := range feeds {
		work <- i
		if i%50 == 0 {
			peak = max(peak, int64(consumers(t, js)))
		}
	}
	close(work)
	wg.Wait()
	return answers, peak
}

// concurrentGets makes n GET requests to url at once with token and returns their statuses
// (0 where the request failed).
func concurrentGets(url, token string, n int) []int {
	statuses := make([]int, n)
	var rg sync.WaitGroup
	for i := range n {
		rg.Go(func() {
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				statuses[i] = resp.StatusCode
			}
		})
	}
	rg.Wait()
	return statuses
}

// findingTraversalDeadline: pathological traversals end at the graph timeout (or the visit
// budget) with a problem, while the server keeps answering other requests.
func findingTraversalDeadline(t *testing.T) {
	const nodes, edges, graphTimeout = 2000, 100_000, time.Second
	srv := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"),
		"--api-graph-timeout", graphTimeout.String())
	id := upload(t, srv.base, "/v1/graph?env=dev", "", "application/json", graphFile(nodes, edges))
	if job := waitDone(t, srv.base, "", id, 2*time.Minute); job["state"] != "completed" {
		t.Fatalf("graph job %v", job)
	}
	// Four pathological traversals at once, and the server asked for its health and a
	// cheap graph read meanwhile.
	const traversals = 4
	answers := make([]apiAnswer, traversals)
	var wg sync.WaitGroup
	for i := range traversals {
		wg.Go(func() {
			answers[i] = call(t, "GET", fmt.Sprintf("%s/v1/graph/nodes/n:%04d/neighbors?depth=10&types=cites", srv.base, i), "", "", nil)
		})
	}
	time.Sleep(100 * time.Millisecond)
	hz := call(t, "GET", srv.base+"/healthz", "", "", nil)
	node := call(t, "GET", srv.base+"/v1/graph/nodes/n:0007", "", "", nil)
	wg.Wait()
	var slowest time.Duration
	codes := map[int]int{}
	for _, a := range answers {
		codes[a.status]++
		slowest = max(slowest, a.took)
	}
	row := faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("a graph of %d nodes and %d edges", nodes, edges),
		Fault:    fmt.Sprintf("%d × GET …/neighbors?depth=10&types=cites at once, --api-graph-timeout %s", traversals, graphTimeout),
		Recovery: slowest,
		Note:     fmt.Sprintf("answers %v, slowest %.2f s; meanwhile /healthz %d in %.0f ms, a node read %d in %.0f ms", codes, slowest.Seconds(), hz.status, ms(hz.took), node.status, ms(node.took)),
	}
	t.Log(row.Note)
	for _, a := range answers {
		// 503 past the deadline, or 422 when the visit budget stops it first; both with
		// a problem body saying why.
		if a.status != 503 && a.status != 422 || a.body["detail"] == nil || a.took > graphTimeout+2*time.Second {
			t.Fatalf("traversal: %d %v after %s; %s", a.status, a.body, a.took, row.Note)
		}
		if a.status == 503 && a.header.Get("Retry-After") == "" {
			t.Fatalf("503 without Retry-After: %v", a.header)
		}
	}
	if hz.status != 200 || hz.took > time.Second || node.status != 200 || node.took > 2*time.Second {
		t.Fatalf("the server stopped answering during the traversals: %s", row.Note)
	}
	recordFinding(t, row)
}

// findingBrokerOutage503: with its external broker down, an upload is answered 503 with
// Retry-After at once, and a client that waits it out gets its upload in once the broker is
// back.
func findingBrokerOutage503(t *testing.T) {
	n := startNATS(t)
	srv := startServer(t, "serve", nil, "--nats-url", n.url(), "--data-dir", filepath.Join(t.TempDir(), "data"))
	file := func(tag string) []byte {
		var b bytes.Buffer
		for i := range 50 {
			fmt.Fprintf(&b, `{"chunk_id":"outage_%s_%02d","content":"A chunk loaded around a broker outage."}`+"\n", tag, i)
		}
		return b.Bytes()
	}
	if job := waitDone(t, srv.base, "", upload(t, srv.base, "/v1/jobs?env=dev", "", "application/x-ndjson", file("before")), time.Minute); job["state"] != "completed" {
		t.Fatalf("job before the outage: %v", job)
	}
	n.kill()
	time.Sleep(200 * time.Millisecond)
	down := call(t, "POST", srv.base+"/v1/jobs?env=dev", "", "application/x-ndjson", file("during"))
	if down.status != 503 || down.header.Get("Retry-After") == "" || down.took > 2*time.Second {
		t.Fatalf("upload while the broker is down: %d (Retry-After %q) after %s: %v", down.status, down.header.Get("Retry-After"), down.took, down.body)
	}
	n.start()
	start := time.Now()
	// A client that waits out Retry-After gets its upload in once the broker is back.
	id := submit(t, &http.Client{Timeout: 30 * time.Second}, srv.base+"/v1/jobs?env=dev", "application/x-ndjson", file("during"))
	job := waitDone(t, srv.base, "", id, time.Minute)
	if job["state"] != "completed" || num(job, "written") != 50 {
		t.Fatalf("job after the outage: %v", job)
	}
	recordFinding(t, faultRow{
		Scenario: t.Name(), Load: "50-chunk uploads, `sluice serve` on an external nats-server",
		Fault: "SIGKILL nats-server, POST /v1/jobs, restart it",
		Lost:  max(0, 50-num(job, "written")), Recovery: time.Since(start),
		Note: fmt.Sprintf("the upload during the outage answered %d with Retry-After %s in %.0f ms; recovery is the retried upload's completion", down.status, down.header.Get("Retry-After"), ms(down.took)),
	})
}

// findingControlCharacterIDs: an id with a control character is refused with 400 on every
// route that takes one, and rejected by index inside an upload.
func findingControlCharacterIDs(t *testing.T) {
	srv := startServer(t, "serve", nil, "--data-dir", filepath.Join(t.TempDir(), "data"))
	refused, routes := 0, []struct{ method, path string }{
		{"GET", "/v1/chunks/%s?env=dev"},
		{"GET", "/v1/jobs/%s"},
		{"DELETE", "/v1/jobs/%s"},
		{"GET", "/v1/graph/nodes/%s/neighbors"},
		{"GET", "/v1/dlq/%s"},
		{"POST", "/v1/features/%s/decision"},
	}
	ids := []string{"a\x00b", "a\nb", "a\x1bb", "a\x7fb"}
	for _, rt := range routes {
		for _, id := range ids {
			a := call(t, rt.method, srv.base+fmt.Sprintf(rt.path, neturl.PathEscape(id)), "", "application/json", []byte(`{"action":"approve"}`))
			if a.status != 400 || a.body["detail"] == nil {
				t.Errorf("%s %s with id %q: %d %v, want 400 with a problem", rt.method, rt.path, id, a.status, a.body)
				continue
			}
			refused++
		}
	}
	// Inside an upload, an item whose id has a control character is rejected with its
	// index; the others are written.
	id := upload(t, srv.base, "/v1/jobs?env=dev", "", "application/x-ndjson",
		[]byte(`{"chunk_id":"ok_1","content":"fine"}`+"\n"+`{"chunk_id":"bad\u0001id","content":"refused"}`+"\n"+`{"chunk_id":"ok_2","content":"fine"}`+"\n"))
	job := waitDone(t, srv.base, "", id, time.Minute)
	rej, _ := job["rejections"].([]any)
	if job["state"] != "completed_with_errors" || num(job, "written") != 2 || num(job, "rejected") != 1 || len(rej) != 1 || num(rej[0].(map[string]any), "index") != 1 {
		t.Fatalf("upload with a control character in one id: %v", job)
	}
	if a := call(t, "GET", srv.base+"/v1/chunks/ok_2?env=dev", "", "", nil); a.status != 200 {
		t.Fatalf("a good chunk beside the refused one: %d %v", a.status, a.body)
	}
	recordFinding(t, faultRow{
		Scenario: t.Name(), Load: fmt.Sprintf("%d ids with NUL, LF, ESC or DEL on %d routes; an upload of 3 chunks, one such id", len(ids), len(routes)),
		Fault: "control characters in ids, against the contract",
		Note:  fmt.Sprintf("%d of %d requests answered 400; the upload's bad item rejected (index 1), the other 2 written", refused, len(ids)*len(routes)),
	})
}
