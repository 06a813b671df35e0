package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/sources/embedded"
)

// The HTTP client the fault findings drive `sluice serve` with, as a client would, and the
// probes they look at its broker and process with.

// Tokens of the findings' tokens file (tokensFile), one per scope.
const (
	readTok  = "findings-reader-0123456789"
	writeTok = "findings-writer-0123456789"
	adminTok = "findings-admin-01234567890"
)

// tokensFile writes a tokens file with readTok, writeTok and adminTok and returns its path.
func tokensFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens.json")
	body := fmt.Sprintf(`[{"name":"reader","token":%q,"scopes":["read"]},{"name":"writer","token":%q,"scopes":["write"]},{"name":"admin","token":%q,"scopes":["admin"]}]`, readTok, writeTok, adminTok)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// apiAnswer is one HTTP answer: status, headers, decoded JSON body (nil if none) and how long
// it took.
type apiAnswer struct {
	status int
	header http.Header
	body   map[string]any
	took   time.Duration
}

// call makes one request (token "" sends none) and decodes the answer; a transport error
// fails the test.
func call(t *testing.T, method, url, token, ctype string, body []byte) apiAnswer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	a := apiAnswer{status: resp.StatusCode, header: resp.Header}
	raw, _ := io.ReadAll(resp.Body)
	a.took = time.Since(start)
	_ = json.Unmarshal(raw, &a.body)
	return a
}

// upload POSTs a file to path (/v1/jobs?… or /v1/graph?…) and returns the job id of the 202.
func upload(t *testing.T, base, path, token, ctype string, body []byte) string {
	t.Helper()
	a := call(t, "POST", base+path, token, ctype, body)
	if a.status != http.StatusAccepted {
		t.Fatalf("POST %s: %d %v", path, a.status, a.body)
	}
	return a.body["job_id"].(string)
}

// waitDone polls GET /v1/jobs/{id} until the job is neither pending nor running and returns it.
func waitDone(t *testing.T, base, token, id string, timeout time.Duration) map[string]any {
	t.Helper()
	var last map[string]any
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		a := call(t, "GET", base+"/v1/jobs/"+id, token, "", nil)
		if a.status != 200 {
			continue
		}
		last = a.body
		if s := last["state"]; s != "pending" && s != "running" {
			return last
		}
	}
	t.Fatalf("job %s not done within %s: %v", id, timeout, last)
	return nil
}

// num reads a JSON number field as int64.
func num(m map[string]any, k string) int64 {
	f, _ := m[k].(float64)
	return int64(f)
}

// dlqEntries lists the dead letters through the API.
func dlqEntries(t *testing.T, base, token string) []any {
	t.Helper()
	a := call(t, "GET", base+"/v1/dlq?limit=1000", token, "", nil)
	if a.status != 200 {
		t.Fatalf("GET /v1/dlq: %d %v", a.status, a.body)
	}
	e, _ := a.body["entries"].([]any)
	return e
}

// embeddedJS connects to the embedded broker of a running `sluice serve` on dataDir with the
// credential from the data directory, as its operator would.
func embeddedJS(t *testing.T, dataDir string) jetstream.JetStream {
	t.Helper()
	ep, err := embedded.Discover(dataDir)
	if err != nil || ep.URL == "" {
		t.Fatalf("discover the embedded broker: %v, %v", ep, err)
	}
	nc, err := nats.Connect(ep.URL, nats.UserInfo(ep.User, string(ep.Password)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// consumers counts the consumers on every stream of the broker.
func consumers(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n := 0
	for info := range js.ListStreams(ctx).Info() {
		n += info.State.Consumers
	}
	return n
}

// openFDs counts the open file descriptors of process pid.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// graphFile is a graph upload of nodes Rule nodes and edges "cites" edges, every edge distinct,
// with a note on each so the file is about 100 bytes an edge.
func graphFile(nodes, edges int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"nodes":[`)
	for i := range nodes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"n:%04d","type":"Rule","properties":{"name":"rule %d of the findings graph"}}`, i, i)
	}
	b.WriteString(`],"edges":[`)
	for i := range edges {
		if i > 0 {
			b.WriteByte(',')
		}
		// For a source s = i % nodes the targets 7s+1+k (k = i / nodes) are distinct while
		// edges/nodes <= nodes.
		fmt.Fprintf(&b, `{"source":"n:%04d","type":"cites","target":"n:%04d","properties":{"note":"edge %d"}}`, i%nodes, (i*7+i/nodes+1)%nodes, i)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// recordFinding logs a finding's row and adds it to the reliability table.
func recordFinding(t *testing.T, r faultRow) {
	t.Helper()
	t.Logf("row: %+v", r)
	recordFault(r)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
