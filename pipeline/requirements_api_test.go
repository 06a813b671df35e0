package pipeline_test

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// Tokens of the API tests: one per scope.
const (
	adminToken  = "admin-token-0123456789"
	writerToken = "writer-token-0123456789"
	readerToken = "reader-token-0123456789"
)

// noJobs satisfies the API's required job and chunk services; these tests do not use them.
type noJobs struct{}

func (noJobs) SubmitJob(context.Context, httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	return httpapi.SubmitResult{}, errors.New("not in this test")
}
func (noJobs) GetJob(context.Context, string) (jobs.Job, error) {
	return jobs.Job{}, httpapi.ErrNotFound
}
func (noJobs) GetChunk(context.Context, string, string) (json.RawMessage, error) {
	return nil, httpapi.ErrNotFound
}

// apiEnv is the real HTTP API over the real command pipeline.
type apiEnv struct {
	*cmdEnv
	base string
	stop func()
}

func newAPIEnv(t testing.TB) *apiEnv { t.Helper(); return newAPIEnvOpts(t, envOpts{}) }

func newAPIEnvOpts(t testing.TB, o envOpts) *apiEnv {
	t.Helper()
	ce := newCmdEnvOpts(t, o)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	srv, err := httpapi.New(httpapi.Config{
		Addr: "127.0.0.1:0",
		Tokens: []httpapi.Token{
			{Name: "alice-admin", Token: adminToken, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
			{Name: "bob-writer", Token: writerToken, Scopes: []httpapi.Scope{httpapi.ScopeWrite}},
			{Name: "carol-reader", Token: readerToken, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
		},
		Jobs: noJobs{}, Chunks: noJobs{},
		Requirements: ce.client, Events: jobs.NewEventFeed(ce.js),
		ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := runServer(t, srv)
	return &apiEnv{cmdEnv: ce, base: base, stop: stop}
}

// runServer runs srv until stop is called or the test ends, and returns its base URL. A Run
// that ends in an error fails the test. stop may be called more than once.
func runServer(t testing.TB, srv *httpapi.Server) (base string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("server run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + srv.Addr(), stop
}

// call sends a request with token (none when "") and returns the status and body.
func (a *apiEnv) call(t testing.TB, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				t.Fatal(err)
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// json calls and decodes a JSON object answer, failing unless the status is want.
func (a *apiEnv) json(t testing.TB, method, path, token string, body any, want int) map[string]any {
	t.Helper()
	code, raw := a.call(t, method, path, token, body)
	if code != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, code, raw, want)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: %v in %s", method, path, err, raw)
	}
	return m
}

// fixtureDir is the shared/ folder beside the checkout (the records carry no licence, so they
// are not copied into the repository).
const fixtureDir = "../../shared/fixtures/ttrpg-center"

// The four stored fixtures imported through the API read back the same through the /v1 and
// the Python-compatible routes: the stored documents byte for byte.
func TestAPIFixturesRoundTrip(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtureDir, "*.json"))
	var legacy []map[string]any
	for _, f := range files {
		if strings.HasSuffix(f, ".schema.json") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		legacy = append(legacy, map[string]any{"name": filepath.Base(f), "data": json.RawMessage(b)})
	}
	if len(legacy) != 4 {
		t.Skipf("%s is absent or incomplete (%d files): the fixtures round trip needs the shared fixtures", fixtureDir, len(legacy))
	}
	a := newAPIEnv(t)
	if code, _ := a.call(t, "POST", "/v1/requirements/import", writerToken, legacy); code != http.StatusForbidden {
		t.Fatalf("import with a write token: %d, want 403", code)
	}
	rep := a.json(t, "POST", "/v1/requirements/import", adminToken, legacy, 200)
	if len(rep["versions"].([]any)) != 1 || len(rep["features"].([]any)) != 3 {
		t.Fatalf("import report %v", rep)
	}
	again := a.json(t, "POST", "/v1/requirements/import", adminToken, legacy, 200)
	if len(again["skipped"].([]any)) != 4 {
		t.Fatalf("second import %v, want everything skipped", again)
	}
	for _, f := range legacy {
		name := f["name"].(string)
		want := []byte(f["data"].(json.RawMessage))
		id := strings.TrimSuffix(name, ".json")
		t.Run(name, func(t *testing.T) {
			if strings.HasPrefix(id, "FR-") {
				checkFeatureFixture(t, a, id, want)
				return
			}
			checkRequirementsFixture(t, a, name, id, want)
		})
	}
	// Both list styles list the same requests; the Python one without rejection_reason.
	compat := a.json(t, "GET", "/api/features?status=rejected", readerToken, nil, 200)
	v1 := a.json(t, "GET", "/v1/features?status=rejected", readerToken, nil, 200)
	cf, vf := compat["features"].([]any), v1["features"].([]any)
	if len(cf) != 1 || len(vf) != 1 || cf[0].(map[string]any)["request_id"] != vf[0].(map[string]any)["request_id"] || compat["filtered_by_status"] != "rejected" {
		t.Fatalf("lists: compat %v v1 %v", compat, v1)
	}
	if _, ok := cf[0].(map[string]any)["rejection_reason"]; ok {
		t.Error("the Python list shows rejection_reason")
	}
}

// checkFeatureFixture checks that feature request id, imported from the fixture want, reads
// back the same through the Python-compatible route and /v1, at version 1 with one audit entry.
func checkFeatureFixture(t *testing.T, a *apiEnv, id string, want []byte) {
	t.Helper()
	// Python style: the ten stored keys; the stored file was json.dumps(indent=2).
	code, raw := a.call(t, "GET", "/api/features/"+id, readerToken, nil)
	if code != 200 {
		t.Fatalf("compat: %d %s", code, raw)
	}
	var compat, file, v1 map[string]any
	_ = json.Unmarshal(raw, &compat)
	_ = json.Unmarshal(want, &file)
	if !reflect.DeepEqual(compat, file) {
		t.Errorf("compat %v\nfile   %v", compat, file)
	}
	got := a.json(t, "GET", "/v1/features/"+id, readerToken, nil, 200)
	v1 = got["feature"].(map[string]any)
	for k, fv := range file {
		if !reflect.DeepEqual(v1[k], fv) {
			t.Errorf("v1 %s = %v, file %v", k, v1[k], fv)
		}
	}
	if v1["version"] != 1.0 || len(got["audit"].([]any)) != 1 {
		t.Errorf("v1 version %v audit %v", v1["version"], got["audit"])
	}
}

// checkRequirementsFixture checks that requirements version id, imported from the fixture file
// name holding want, reads back byte for byte through the Python-compatible route (and as the
// latest), the same through /v1, and is listed alike by both with its file path and checksum.
func checkRequirementsFixture(t *testing.T, a *apiEnv, name, id string, want []byte) {
	t.Helper()
	code, raw := a.call(t, "GET", "/api/requirements/"+id, readerToken, nil)
	if code != 200 || !bytes.Equal(bytes.TrimSpace(raw), bytes.TrimSpace(want)) {
		t.Fatalf("compat document: %d\n%s\nwant\n%s", code, raw, want)
	}
	code, latest := a.call(t, "GET", "/api/requirements/latest", readerToken, nil)
	if code != 200 || !bytes.Equal(latest, raw) {
		t.Errorf("compat latest: %d %s", code, latest)
	}
	v1 := a.json(t, "GET", "/v1/requirements/"+id, readerToken, nil, 200)
	doc, _ := json.Marshal(v1["document"])
	var d1, d2 any
	_ = json.Unmarshal(doc, &d1)
	_ = json.Unmarshal(want, &d2)
	if !reflect.DeepEqual(d1, d2) {
		t.Errorf("v1 document differs from the file:\n%s", doc)
	}
	vs := a.json(t, "GET", "/api/requirements/versions", readerToken, nil, 200)
	v1s := a.json(t, "GET", "/v1/requirements", readerToken, nil, 200)
	cv := vs["versions"].([]any)[0].(map[string]any)
	if cv["file_path"] != "requirements/"+name || cv["checksum"] != v1["checksum"] || !reflect.DeepEqual(v1s["versions"].([]any)[0].(map[string]any)["checksum"], cv["checksum"]) {
		t.Errorf("versions: compat %v v1 %v", vs, v1s)
	}
}

// Decisions through the Python routes: the actor is the token's name whatever the body says,
// X-Admin-User grants nothing, and a second decision is refused with 409.
func TestAPICompatDecisions(t *testing.T) {
	a := newAPIEnv(t)
	sub := a.json(t, "POST", "/api/features/submit", writerToken, map[string]any{
		"title": "Initiative tracker", "description": "Track initiative for every encounter", "priority": "high", "requester": "gm.alice",
		"tags": []string{"combat"}, "unknown_extra": true,
	}, 200)
	id, _ := sub["request_id"].(string)
	if sub["success"] != true || !strings.HasPrefix(id, "FR-") {
		t.Fatalf("submit: %v", sub)
	}
	// X-Admin-User without a token: 401.
	req, _ := http.NewRequest("POST", a.base+"/api/features/"+id+"/approve", strings.NewReader(`{"action":"approve","admin":"mallory"}`))
	req.Header.Set("X-Admin-User", "mallory")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("X-Admin-User bypass: %d", resp.StatusCode)
	}
	if code, _ := a.call(t, "POST", "/api/features/"+id+"/approve", writerToken, map[string]any{"action": "approve", "admin": "bob"}); code != http.StatusForbidden {
		t.Fatalf("approve with a write token: %d", code)
	}
	ok := a.json(t, "POST", "/api/features/"+id+"/approve", adminToken, map[string]any{"action": "approve", "admin": "mallory", "reason": "fits"}, 200)
	if ok["message"] != "Feature request approved successfully" {
		t.Fatalf("approve: %v", ok)
	}
	f := a.json(t, "GET", "/api/features/"+id, readerToken, nil, 200)
	if f["approved_by"] != "alice-admin" || f["status"] != "approved" || f["rejection_reason"] != nil {
		t.Fatalf("after approve: %v", f)
	}
	again := a.json(t, "POST", "/api/features/"+id+"/approve", adminToken, map[string]any{"action": "reject", "admin": "alice"}, 409)
	if !strings.Contains(again["detail"].(string), "already") {
		t.Errorf("second decision: %v", again)
	}
	a.json(t, "POST", "/api/features/FR-404/approve", adminToken, map[string]any{"action": "approve"}, 404)
	audit := a.json(t, "GET", "/api/audit/features?request_id="+id, readerToken, nil, 200)
	entries := audit["audit_entries"].([]any)
	if len(entries) != 2 || entries[0].(map[string]any)["admin"] != "alice-admin" || audit["filtered_by_request"] != id {
		t.Fatalf("audit %v", audit)
	}
	val := a.json(t, "POST", "/api/validate/schema", readerToken, map[string]any{"schema_type": "feature_request", "data": map[string]any{"title": "x"}}, 200)
	if val["is_valid"] != false || len(val["errors"].([]any)) == 0 {
		t.Errorf("validate: %v", val)
	}
	a.json(t, "POST", "/api/validate/schema", readerToken, map[string]any{"schema_type": "nope", "data": map[string]any{}}, 400)
	if s := a.json(t, "GET", "/api/schemas", readerToken, nil, 200); s["total"] != 2.0 {
		t.Errorf("schemas: %v", s)
	}
}

// The /v1 routes: 202 with a command id, ?wait= outcomes (201, 200, 409 with the code, 404),
// scopes, and the actor taken from the token.
func TestAPIV1Commands(t *testing.T) {
	a := newAPIEnv(t)
	feature := map[string]any{"title": "Dice roller", "description": "Roll dice for everyone at the table", "priority": "medium", "requester": "gm.bob"}
	if code, _ := a.call(t, "POST", "/v1/features", "", feature); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := a.call(t, "POST", "/v1/features", readerToken, feature); code != http.StatusForbidden {
		t.Fatalf("read token: %d", code)
	}
	acc := a.json(t, "POST", "/v1/features", writerToken, feature, 202)
	id := acc["request_id"].(string)
	if acc["command_id"] == "" || acc["status"] != "accepted" || acc["key"] != id {
		t.Fatalf("202 body %v", acc)
	}
	created := a.json(t, "POST", "/v1/features?wait=5s", writerToken, feature, 201)
	id2 := created["feature"].(map[string]any)["request_id"].(string)
	waitFor(t, "the first submission", func() bool {
		code, _ := a.call(t, "GET", "/v1/features/"+id, readerToken, nil)
		return code == 200
	})
	for _, path := range []string{"/v1/features/" + id + "/decision", "/v1/features/" + id + "/transition", "/v1/requirements", "/v1/audit/integrity", "/v1/requirements/import"} {
		if code, _ := a.call(t, "POST", path, writerToken, map[string]any{}); code != http.StatusForbidden && !(path == "/v1/audit/integrity" && code == http.StatusMethodNotAllowed) {
			t.Errorf("%s with a write token: %d", path, code)
		}
	}
	if code, _ := a.call(t, "GET", "/v1/audit/integrity", readerToken, nil); code != http.StatusForbidden {
		t.Errorf("integrity with a read token: %d", code)
	}
	dec := a.json(t, "POST", "/v1/features/"+id+"/decision?wait=5s", adminToken, map[string]any{"action": "approve", "expected_version": 1}, 200)
	if f := dec["feature"].(map[string]any); f["status"] != "approved" || f["approved_by"] != "alice-admin" || f["version"] != 2.0 {
		t.Fatalf("decision: %v", dec)
	}
	stale := a.json(t, "POST", "/v1/features/"+id+"/transition?wait=5s", adminToken, map[string]any{"to": "in_progress", "expected_version": 1}, 409)
	if stale["code"] != "stale_version" || stale["current_version"] != 2.0 || stale["current_status"] != "approved" {
		t.Fatalf("stale: %v", stale)
	}
	if r := a.json(t, "POST", "/v1/features/"+id2+"/decision?wait=5s", adminToken, map[string]any{"action": "reject", "reason": "later"}, 200); r["feature"].(map[string]any)["rejection_reason"] != "later" {
		t.Fatalf("reject: %v", r)
	}
	if r := a.json(t, "POST", "/v1/features/"+id2+"/decision?wait=5s", adminToken, map[string]any{"action": "approve"}, 409); r["code"] != "already_decided" {
		t.Fatalf("decide twice: %v", r)
	}
	if r := a.json(t, "POST", "/v1/features/FR-404/transition?wait=5s", adminToken, map[string]any{"to": "cancelled"}, 404); r["code"] != "not_found" {
		t.Fatalf("unknown: %v", r)
	}
	if r := a.json(t, "POST", "/v1/features/"+id+"/transition", adminToken, map[string]any{"to": "done"}, 422); r["code"] != "invalid" {
		t.Fatalf("invalid: %v", r)
	}
	// The actor can't be smuggled in.
	a.json(t, "POST", "/v1/features/"+id+"/transition", adminToken, map[string]any{"to": "in_progress", "actor": "mallory"}, 400)
	raw, err := os.ReadFile("../schemas/examples/command/valid/submit-requirements.json")
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	_ = json.Unmarshal(raw, &body)
	for _, k := range []string{"type", "command_id", "actor", "issued_at"} {
		delete(body, k)
	}
	v := a.json(t, "POST", "/v1/requirements?wait=5s", adminToken, body, 201)
	vid := int64(v["version"].(map[string]any)["version_id"].(float64))
	if v["version"].(map[string]any)["author"] != "alice-admin" {
		t.Fatalf("version: %v", v)
	}
	latest := a.json(t, "GET", "/v1/requirements/latest", readerToken, nil, 200)
	if int64(latest["version_id"].(float64)) != vid {
		t.Errorf("latest %v, want %d", latest["version_id"], vid)
	}
	list := a.json(t, "GET", "/v1/features?limit=1", readerToken, nil, 200)
	next, _ := list["next_cursor"].(string)
	page2 := a.json(t, "GET", "/v1/features?limit=1&cursor="+next, readerToken, nil, 200)
	if len(list["features"].([]any)) != 1 || next == "" || len(page2["features"].([]any)) != 1 {
		t.Errorf("paging: %v then %v", list, page2)
	}
	a.json(t, "GET", "/v1/features?cursor=bogus", readerToken, nil, 400)
}

// The audit chain checks out through the API, and an edited entry is detected.
func TestAPIAuditIntegrity(t *testing.T) {
	a := newAPIEnv(t)
	id := a.json(t, "POST", "/v1/features?wait=5s", writerToken, map[string]any{"title": "Map layers", "description": "Toggle fog and grid layers", "priority": "low", "requester": "gm.carol"}, 201)["feature"].(map[string]any)["request_id"].(string)
	a.json(t, "POST", "/v1/features/"+id+"/decision?wait=5s", adminToken, map[string]any{"action": "approve"}, 200)
	a.json(t, "POST", "/v1/features/"+id+"/transition?wait=5s", adminToken, map[string]any{"to": "in_progress"}, 200)
	ok := a.json(t, "GET", "/v1/audit/integrity", adminToken, nil, 200)
	if ok["integrity_valid"] != true || ok["entries"] != 3.0 {
		t.Fatalf("before: %v", ok)
	}
	trail := a.json(t, "GET", "/v1/audit/features?request_id="+id, readerToken, nil, 200)["audit_entries"].([]any)
	if len(trail) != 3 || trail[0].(map[string]any)["new_status"] != "in_progress" {
		t.Fatalf("newest first: %v", trail)
	}
	db, err := sql.Open("sqlite", a.storePath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{`DROP TRIGGER audit_no_update`, fmt.Sprintf(`UPDATE audit SET admin = 'mallory' WHERE request_id = '%s' AND seq = 2`, id)} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, path := range []string{"/v1/audit/integrity", "/api/audit/integrity"} {
		bad := a.json(t, "GET", path, adminToken, nil, 200)
		if bad["integrity_valid"] != false || bad["total_compromised"] == 0.0 || !strings.Contains(fmt.Sprint(bad["compromised_entries"]), "checksum mismatch") {
			t.Errorf("%s after tampering: %v", path, bad)
		}
	}
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ id, event, data string }

func readSSE(t testing.TB, r *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("read event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && ev.data != "":
			return ev
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.data = line[6:]
		}
	}
}

// The change feed over SSE delivers a mutation, resumes after a sequence with
// Last-Event-ID, ends when the server shuts down; the WebSocket carries the same events.
func TestAPIChangeFeed(t *testing.T) {
	a := newAPIEnv(t)
	open := func(header, value string) (*http.Response, *bufio.Reader) {
		req, _ := http.NewRequest("GET", a.base+"/v1/events", nil)
		req.Header.Set("Authorization", "Bearer "+readerToken)
		if header != "" {
			req.Header.Set(header, value)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("GET /v1/events: %v %v", resp, err)
		}
		return resp, bufio.NewReader(resp.Body)
	}
	live, lr := open("", "")
	defer live.Body.Close()
	feature := map[string]any{"title": "Loot tables", "description": "Random loot by encounter level", "priority": "low", "requester": "gm.dan"}
	first := a.json(t, "POST", "/v1/features?wait=5s", writerToken, feature, 201)
	ev := readSSE(t, lr)
	var m commands.MutationEvent
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil || ev.event != "mutation" || m.CommandID != first["command_id"] || !m.Applied || m.Feature == nil {
		t.Fatalf("first event %+v (%v)", ev, err)
	}
	second := a.json(t, "POST", "/v1/features?wait=5s", writerToken, feature, 201)
	ev2 := readSSE(t, lr)
	resumed, rr := open("Last-Event-ID", ev.id)
	defer resumed.Body.Close()
	ev3 := readSSE(t, rr)
	if ev3.id != ev2.id || !strings.Contains(ev3.data, second["command_id"].(string)) {
		t.Fatalf("resumed after %s at %+v, want %+v", ev.id, ev3, ev2)
	}
	if code, _ := a.call(t, "GET", "/v1/events?since=x", readerToken, nil); code != 400 {
		t.Errorf("bad since: %d", code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(a.base, "http", "ws", 1)+"/v1/ws?since=0", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + readerToken}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	for i, want := range []string{ev.id, ev2.id} {
		_, frame, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var f struct {
			Seq  uint64                 `json:"seq"`
			Type string                 `json:"type"`
			Data commands.MutationEvent `json:"data"`
		}
		if err := json.Unmarshal(frame, &f); err != nil || fmt.Sprint(f.Seq) != want || f.Type != "mutation" || f.Data.Feature == nil {
			t.Fatalf("ws frame %d: %s (%v)", i, frame, err)
		}
	}
	// Shutdown ends both streams.
	a.stop()
	if _, err := io.ReadAll(live.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("live stream ended with %v", err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("ws after shutdown: %v", err)
	}
}
