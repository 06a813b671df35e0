package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
)

// TestServeEndToEnd runs the real binary: sluice serve on the embedded default, a chunk file
// posted over HTTP, the job followed to its end, a chunk read back, and `sluice load` from a
// second process publishing to the running server.
func TestServeEndToEnd(t *testing.T) {
	e := startServeE2E(t)
	// The steps run in order on one server: each builds on what the ones before stored (the
	// metrics count every chunk written).
	e.nastyJob()
	e.loadFromSecondProcess()
	e.jobEventsAndList()
	e.idempotentUpload()
	e.jobsCLI()
	e.graphLoad()
	e.deadLetterCLI()
	e.metrics()

	if err := e.srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Wait(); err != nil {
		t.Fatalf("serve exit after SIGTERM: %v", err)
	}
}

// serveE2E is TestServeEndToEnd's running server and what its steps pass on.
type serveE2E struct {
	t       *testing.T
	dataDir string
	srv     *exec.Cmd
	base    string
	// jobID is the nasty job's id (set by nastyJob).
	jobID string
}

// startServeE2E starts `sluice serve` on the embedded default and loads its OpenAPI document,
// against which every JSON answer is then checked.
func startServeE2E(t *testing.T) *serveE2E {
	t.Helper()
	dataDir := t.TempDir()
	s0 := startServer(t, "serve", nil, "--data-dir", dataDir)
	e := &serveE2E{t: t, dataDir: dataDir, srv: s0.cmd, base: s0.base}
	// Every JSON answer below is checked against the server's own OpenAPI document.
	resp0, err := http.Get(e.base + "/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	docBytes, _ := io.ReadAll(resp0.Body)
	resp0.Body.Close()
	if apiDoc, err = openapitest.Load(docBytes); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { apiDoc = nil })
	return e
}

// cli runs the binary with args against the API and returns its standard output and exit code.
func (e *serveE2E) cli(args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "SLUICE_API_URL="+e.base)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return string(out), code
}

// nastyJob posts the nasty chunk file, follows the job to its end, reads a chunk back, and
// posts the file again: the same job, published once.
func (e *serveE2E) nastyJob() {
	t, base := e.t, e.base
	t.Helper()
	body, err := os.ReadFile("../../testdata/chunks/nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/v1/jobs?env=dev&file=nasty.json", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var sub map[string]any
	subBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	_ = json.Unmarshal(subBody, &sub)
	if err := apiDoc.Check("POST /v1/jobs", resp.StatusCode, resp.Header.Get("Content-Type"), subBody); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || sub["job_id"] == nil || sub["rejected"].(float64) != 6 {
		t.Fatalf("POST /v1/jobs: %d %v", resp.StatusCode, sub)
	}
	e.jobID = sub["job_id"].(string)
	var job map[string]any
	for deadline := time.Now().Add(time.Minute); ; {
		job = getJSON(t, base+"/v1/jobs/"+e.jobID, 200, "GET /v1/jobs/{id}")
		if job["state"] == "completed_with_errors" || job["state"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job never finished: %v", job)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if job["state"] != "completed_with_errors" || job["written"].(float64) != 36 || job["rejected"].(float64) != 6 || len(job["rejections"].([]any)) != 6 {
		t.Fatalf("job = %v", job)
	}
	doc := getJSON(t, base+"/v1/chunks/job_1757498642_0a06fa1bc2da_chunk_9003?env=dev", 200, "GET /v1/chunks/{id}")
	if !strings.Contains(doc["content"].(string), "\u200d") {
		t.Fatalf("emoji chunk lost its ZWJ: %v", doc["content"])
	}
	getJSON(t, base+"/v1/chunks/nope?env=dev", 404, "GET /v1/chunks/{id}")
	getJSON(t, base+"/v1/jobs/jnope", 404, "GET /v1/jobs/{id}")
	getJSON(t, base+"/readyz", 200, "GET /readyz")

	// The same file again is the same job, published once.
	resp, err = http.Post(base+"/v1/jobs?env=dev", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_ = json.NewDecoder(resp.Body).Decode(&sub)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || sub["job_id"] != e.jobID || sub["existing"] != true {
		t.Fatalf("resubmission: %d %v", resp.StatusCode, sub)
	}
}

// loadFromSecondProcess: sluice load finds the running server through the data directory and
// publishes there.
func (e *serveE2E) loadFromSecondProcess() {
	t := e.t
	t.Helper()
	load := exec.Command(binary, "load", "--data-dir", e.dataDir, "--json", "../../testdata/chunks/passB_enriched.json")
	out, err := load.Output()
	if err != nil {
		t.Fatalf("load against the running server: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"written": 20`) {
		t.Fatalf("load output: %s", out)
	}
	enriched := getJSON(t, e.base+"/v1/chunks/chunk_001?env=dev", 200)
	if md, _ := enriched["metadata"].(map[string]any); md["chunk_type"] != "enriched" {
		t.Fatalf("enriched item not converted: %v", enriched)
	}
}

// jobEventsAndList: the job's events stream ends with a "done" event, and the job is listed by
// its state.
func (e *serveE2E) jobEventsAndList() {
	t := e.t
	t.Helper()
	resp, err := http.Get(e.base + "/v1/jobs/" + e.jobID + "/events")
	if err != nil {
		t.Fatal(err)
	}
	events, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || !strings.Contains(string(events), "event: done\n") {
		t.Fatalf("events: %s\n%s", resp.Header.Get("Content-Type"), events)
	}
	list := getJSON(t, e.base+"/v1/jobs?state=completed_with_errors", 200, "GET /v1/jobs")
	if jobs := list["jobs"].([]any); len(jobs) != 1 || jobs[0].(map[string]any)["job_id"] != e.jobID {
		t.Fatalf("list: %v", list)
	}
}

// idempotentUpload: an Idempotency-Key makes a retried upload return the first job.
func (e *serveE2E) idempotentUpload() {
	t := e.t
	t.Helper()
	post := func(key string, body []byte) map[string]any {
		req, _ := http.NewRequest("POST", e.base+"/v1/jobs?env=test", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-ndjson")
		req.Header.Set("Idempotency-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return m
	}
	k1 := post("retry-me", []byte(`{"chunk_id":"idem1","content":"first"}`))
	k2 := post("retry-me", []byte(`{"chunk_id":"idem2","content":"second"}`))
	if k1["job_id"] == nil || k1["job_id"] != k2["job_id"] || k2["existing"] != true {
		t.Fatalf("idempotent upload: %v then %v", k1, k2)
	}
}

// jobsCLI: the operator's job commands talk to the API, and roll the nasty job back.
func (e *serveE2E) jobsCLI() {
	t, jobID := e.t, e.jobID
	t.Helper()
	if out, code := e.cli("jobs", "ls"); code != 0 || !strings.Contains(out, jobID) || !strings.Contains(out, "completed_with_errors") {
		t.Fatalf("jobs ls: exit %d\n%s", code, out)
	}
	if out, code := e.cli("jobs", "wait", "--json", jobID); code != 3 || !strings.Contains(out, `"rejected": 6`) {
		t.Fatalf("jobs wait on a job with rejections: exit %d\n%s", code, out)
	}
	if out, code := e.cli("jobs", "show", "jnosuch"); code != 1 {
		t.Fatalf("jobs show of an unknown job: exit %d\n%s", code, out)
	}
	if _, code := e.cli("jobs", "frobnicate"); code != 2 {
		t.Fatalf("unknown subcommand: exit %d, want 2", code)
	}
	// Roll the nasty job back: its documents go, the job says so.
	if out, code := e.cli("jobs", "rollback", "--json", jobID); code != 0 || !strings.Contains(out, `"state": "rolled_back"`) || !strings.Contains(out, `"deleted": 109`) {
		t.Fatalf("jobs rollback: exit %d\n%s", code, out)
	}
	getJSON(t, e.base+"/v1/chunks/job_1757498642_0a06fa1bc2da_chunk_9003?env=dev", 404)
}

// graphLoad: a graph file loads through the same endpoint, and the graph reads answer.
func (e *serveE2E) graphLoad() {
	t, base := e.t, e.base
	t.Helper()
	snap, err := os.ReadFile("../../testdata/chunks/graph_snapshot.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(base+"/v1/graph?env=dev", "application/json", bytes.NewReader(snap))
	if err != nil {
		t.Fatal(err)
	}
	var gsub map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&gsub)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /v1/graph: %d %v", resp.StatusCode, gsub)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		gj := getJSON(t, base+"/v1/jobs/"+gsub["job_id"].(string), 200, "GET /v1/jobs/{id}")
		if gj["state"] == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph job never completed: %v", gj)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stats := getJSON(t, base+"/v1/graph/stats", 200, "GET /v1/graph/stats")
	if stats["total_nodes"].(float64) < 700 {
		t.Fatalf("graph stats: %v", stats)
	}
	node := getJSON(t, base+"/v1/graph/nodes/source:chunk:job_1757237159_c8623a8fec21_c_1_0001", 200, "GET /v1/graph/nodes/{id}")
	if node["type"] != "SourceDoc" {
		t.Fatalf("node: %v", node)
	}
	nb := getJSON(t, base+"/v1/graph/nodes/source:chunk:job_1757237159_c8623a8fec21_c_1_0001/neighbors?depth=2", 200, "GET /v1/graph/nodes/{id}/neighbors")
	if nb["count"].(float64) < 1 {
		t.Fatalf("neighbors: %v", nb)
	}
	getJSON(t, base+"/v1/graph/nodes/nope/neighbors", 404, "GET /v1/graph/nodes/{id}/neighbors")
}

// deadLetterCLI: a message no file loader would send goes to the dead-letter queue; the CLI
// finds it, shows it, replays it (it fails again, and carries its replay count), and purges it.
func (e *serveE2E) deadLetterCLI() {
	t := e.t
	t.Helper()
	e.publishBroken()
	var dlqID string
	for deadline := time.Now().Add(30 * time.Second); dlqID == ""; {
		out, _ := e.cli("dlq", "ls", "--json", "--error-class", "validation")
		var page struct {
			Entries []map[string]any `json:"entries"`
		}
		_ = json.Unmarshal([]byte(out), &page)
		if len(page.Entries) == 1 {
			dlqID = page.Entries[0]["id"].(string)
		} else if time.Now().After(deadline) {
			t.Fatalf("dead letter never listed: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	getJSON(t, e.base+"/v1/dlq", 200, "GET /v1/dlq")
	getJSON(t, e.base+"/v1/dlq/"+dlqID, 200, "GET /v1/dlq/{id}")
	if out, code := e.cli("dlq", "show", dlqID); code != 0 || !strings.Contains(out, "empty content") || !strings.Contains(out, `"chunk_id":"broken"`) {
		t.Fatalf("dlq show: exit %d\n%s", code, out)
	}
	if out, code := e.cli("dlq", "replay", "--dry-run", dlqID); code != 0 || !strings.Contains(out, "would replay 1") {
		t.Fatalf("dlq replay --dry-run: exit %d\n%s", code, out)
	}
	if out, code := e.cli("dlq", "replay", dlqID); code != 0 || !strings.Contains(out, "replayed 1") {
		t.Fatalf("dlq replay: exit %d\n%s", code, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		out, _ := e.cli("dlq", "ls", "--json")
		if strings.Contains(out, `"replays": 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replayed message did not come back with its replay count: %s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, code := e.cli("dlq", "purge", "--error-class", "validation"); code != 2 {
		t.Fatalf("purge without --yes: exit %d, want 2", code)
	}
	if out, code := e.cli("dlq", "purge", "--error-class", "validation", "--yes"); code != 0 || !strings.Contains(out, "purged 1") {
		t.Fatalf("dlq purge: exit %d\n%s", code, out)
	}
}

// publishBroken publishes a chunk with empty content straight onto the embedded broker, found
// through the data directory.
func (e *serveE2E) publishBroken() {
	t := e.t
	t.Helper()
	url, err := os.ReadFile(e.dataDir + "/nats.url")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := embedded.Discover(e.dataDir)
	if err != nil || ep.URL != strings.TrimSpace(string(url)) {
		t.Fatalf("discover the embedded broker: %v, %v", ep, err)
	}
	nc, err := nats.Connect(ep.URL, nats.UserInfo(ep.User, string(ep.Password)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bad := nats.NewMsg("sluice.v1.chunks.dev")
	bad.Data = []byte(`{"chunk_id":"broken","content":""}`)
	if err := nc.PublishMsg(bad); err != nil {
		t.Fatal(err)
	}
}

// metrics: the metrics count every chunk written and the chunk batches.
func (e *serveE2E) metrics() {
	t := e.t
	t.Helper()
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"} 57`) {
		t.Fatalf("metrics do not count the 57 written chunks (36 + 20 + 1):\n%s", grepLines(string(metrics), "sluice_"))
	}
	if !regexp.MustCompile(`(?m)^sluice_chunk_batch_messages_count [1-9]`).Match(metrics) {
		t.Fatalf("metrics do not count the chunk batches:\n%s", grepLines(string(metrics), "sluice_"))
	}
}

// apiDoc is the running server's OpenAPI document while TestServeEndToEnd runs.
var apiDoc *openapitest.Doc

// getJSON GETs url, expects status want, checks the answer against the OpenAPI document's
// operation op (when given) and returns the decoded body.
func getJSON(t *testing.T, url string, want int, op ...string) map[string]any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %d, want %d: %v", url, resp.StatusCode, want, m)
	}
	if len(op) > 0 && apiDoc != nil {
		if err := apiDoc.Check(op[0], resp.StatusCode, resp.Header.Get("Content-Type"), b); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// mustPostJSON posts body to url as JSON, fails the test unless the answer is want, and returns
// the decoded answer.
func mustPostJSON(t *testing.T, url string, body []byte, want int) map[string]any {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d, want %d: %v", url, resp.StatusCode, want, m)
	}
	return m
}

// waitJobCompleted polls GET /v1/jobs/{id} on base until the job is completed, for up to 30 s.
func waitJobCompleted(t *testing.T, base, id string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		j := getJSON(t, base+"/v1/jobs/"+id, 200)
		if j["state"] == "completed" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job not completed after 30 s: %v", j)
		}
	}
}

func grepLines(s, sub string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			fmt.Fprintln(&b, l)
		}
	}
	return b.String()
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
