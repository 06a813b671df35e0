package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// Regression (issue 13): POST /v1/graph?env=test was accepted and the batches landed in the
// one graph every env read: GET /v1/graph/stats?env=prod returned the test load's counts.
// Through the real API, loader, broker, worker and SQLite graph: a graph posted to test is
// counted, found and traversed under ?env=test only; prod and dev (also by default, no
// ?env=) see nothing; an invalid env is a 400 problem on every graph route.
func TestGraphAPIKeptPerEnv(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Graph = g })
	srv, err := httpapi.New(httpapi.Config{
		Addr:   "127.0.0.1:0",
		Tokens: []httpapi.Token{{Name: "admin", Token: adminToken, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}}},
		Jobs:   loaderJobs{loader: e.loader(t), jobs: e.jobs}, Chunks: noJobs{}, Graph: g,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	call := func(method, target string, body []byte) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, target, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: %d %q is not JSON: %v", method, target, rec.Code, rec.Body, err)
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d with Content-Type %q, want a problem", method, target, rec.Code, rec.Header().Get("Content-Type"))
		}
		return rec.Code, out
	}
	body, err := os.ReadFile(filepath.Join(fixtures, "job_1757237159_c8623a8fec21_graphstore_batch.json"))
	if err != nil {
		t.Fatal(err)
	}
	code, sub := call("POST", "/v1/graph?env=test&file=graph.json", body)
	if code != http.StatusAccepted || sub["env"] != "test" {
		t.Fatalf("POST /v1/graph?env=test: %d %v", code, sub)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if job, err := jobs.Wait(ctx, e.jobs, sub["job_id"].(string), nil); err != nil || job.State != jobs.JobCompleted {
		t.Fatalf("job %+v, %v", job, err)
	}

	const node = "concept:dev:blinded"
	for _, q := range []string{"?env=prod", "?env=dev", ""} {
		if code, st := call("GET", "/v1/graph/stats"+q, nil); code != http.StatusOK || st["total_nodes"] != 0.0 || st["total_edges"] != 0.0 {
			t.Errorf("GET /v1/graph/stats%s after a test load: %d %v; want 0 nodes and edges", q, code, st)
		}
		if code, _ := call("GET", "/v1/graph/nodes/"+node+q, nil); code != http.StatusNotFound {
			t.Errorf("GET node%s: %d, want 404", q, code)
		}
		if code, _ := call("GET", "/v1/graph/nodes/"+node+"/neighbors"+q, nil); code != http.StatusNotFound {
			t.Errorf("GET neighbors%s: %d, want 404", q, code)
		}
	}
	if code, st := call("GET", "/v1/graph/stats?env=test", nil); code != http.StatusOK || st["env"] != "test" || st["total_nodes"] != 626.0 || st["total_edges"] != 1280.0 {
		t.Errorf("GET /v1/graph/stats?env=test: %d %v; want 626 nodes, 1280 edges", code, st)
	}
	if code, n := call("GET", "/v1/graph/nodes/"+node+"?env=test", nil); code != http.StatusOK || n["id"] != node {
		t.Errorf("GET node?env=test: %d %v", code, n)
	}
	if code, nb := call("GET", "/v1/graph/nodes/"+node+"/neighbors?env=test", nil); code != http.StatusOK || nb["env"] != "test" || nb["count"] == 0.0 {
		t.Errorf("GET neighbors?env=test: %d %v; want some", code, nb)
	}
	for _, bad := range []string{"staging", "Prod", "dev,test"} {
		for _, path := range []string{"/v1/graph/stats", "/v1/graph/nodes/" + node, "/v1/graph/nodes/" + node + "/neighbors"} {
			if code, _ := call("GET", path+"?env="+bad, nil); code != http.StatusBadRequest {
				t.Errorf("GET %s?env=%s: %d, want 400", path, bad, code)
			}
		}
	}
}
