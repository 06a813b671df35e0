package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sources/files"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// fuzzRoutes are the routes whose request bodies the API decodes itself (commands, dead-letter
// replays) or hands to a JobService (chunk files, graph files).
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/requirements"},
	{"POST", "/v1/requirements/import"},
	{"POST", "/v1/features"},
	{"POST", "/v1/features/FR-123/decision"},
	{"POST", "/v1/features/FR-123/transition"},
	{"POST", "/api/requirements/submit"},
	{"POST", "/api/features/submit"},
	{"POST", "/api/features/FR-123/approve"},
	{"POST", "/api/validate/schema"},
	{"POST", "/v1/dlq/replay"},
	{"POST", "/v1/jobs"},
	{"POST", "/v1/graph"},
}

// fuzzJobs is a JobService that reads the upload as the loader does, with files.Reader, and
// reports a file that can never load as ErrBadRequest (the loader's intake.ErrBadInput,
// mapped by cmd/sluice). It keeps nothing between requests, so a long fuzz run stays small.
type fuzzJobs struct{}

func (fuzzJobs) SubmitJob(_ context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	r, err := files.NewReader(req.Body, files.Options{Name: req.File, Format: files.Format(req.Format)})
	if err != nil {
		return httpapi.SubmitResult{}, err
	}
	var res httpapi.SubmitResult
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if fault.IsPermanent(err) {
				return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
			}
			return httpapi.SubmitResult{}, fmt.Errorf("read chunk file: %w", err)
		}
		res.Total++
		if it.Err != nil {
			res.Rejected++
		} else {
			res.Published++
		}
	}
	res.JobID, res.Env = "job-1", req.Env
	return res, nil
}

func (fuzzJobs) GetJob(context.Context, string) (jobs.Job, error) {
	return jobs.Job{}, fmt.Errorf("fuzz: %w", httpapi.ErrNotFound)
}

// fuzzRequirements checks commands with the real validator and keeps none of them.
type fuzzRequirements struct{ *fakeRequirements }

func (f fuzzRequirements) Submit(_ context.Context, cmd requirements.Command) (string, error) {
	if err := f.v.Check(cmd); err != nil {
		return "", err
	}
	return "cmd1", nil
}

// fuzzDLQ validates replay requests as the real service does and replays nothing.
type fuzzDLQ struct{ *fakeDLQ }

func (fuzzDLQ) Replay(_ context.Context, req dlq.ReplayRequest) (dlq.ReplayResult, error) {
	if err := req.Validate(); err != nil {
		return dlq.ReplayResult{}, err
	}
	return dlq.ReplayResult{DryRun: req.DryRun, Replayed: []dlq.Replayed{}, Skipped: []dlq.Skipped{}, Failed: []dlq.Failed{}}, nil
}

// FuzzRequestBodies sends fuzzed bodies, query strings and Content-Types to every route that
// decodes a request body, through the real handler chain with an admin token. Property: the
// answer is never a 5xx; an error is a problem+json document whose status matches the
// answer's (on the Python service's /api routes, FastAPI's {"detail": …}), and a success
// carries a JSON body.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzRequestBodies$' -fuzztime 10m ./sources/httpapi/
func FuzzRequestBodies(f *testing.F) {
	seeds := []struct {
		route       int
		body, query string
		ctype       string
	}{
		{0, `{"title":"T","version":"1.0","description":"d","functional":[{"id":"FR-1","title":"t","description":"d","priority":"high"}],"non_functional":[]}`, "", "application/json"},
		{1, `{"files":[{"name":"requirements_1.json","data":{"x":1}}]}`, "", "application/json"},
		{2, featureJSON, "wait=1s", "application/json"},
		{3, `{"action":"approve","reason":"ok","expected_version":1}`, "", "application/json"},
		{4, `{"to":"in_progress","expected_version":0}`, "", "application/json"},
		{5, `{"title":"T","functional":[{"id":"FR-1"},{"id":"FR-1"}]}`, "", "application/json"},
		{6, `{"title":"x","description":"y","priority":"urgent","requester":"me","tags":["a","a"]}`, "", "application/json"},
		{7, `{"action":"reject","reason":""}`, "", "application/json"},
		{8, `{"schema_type":"feature_request","data":{"request_id":"FR-1"}}`, "", "application/json"},
		{8, `{"schema_type":"nope","data":null}`, "", "application/json"},
		{9, `{"ids":["a","b"],"dry_run":true,"rate":-1}`, "", "application/json"},
		{9, `{"filter":{"since":"yesterday","error_class":"weird"},"max_replays":-5,"limit":1e400}`, "", "application/json"},
		{10, `{"chunks":[{"id":"a","content":"x"}]}`, "env=dev&file=a.json&force=true", "application/json"},
		{10, "{\"chunk_id\":\"a\",\"content\":\"x\"}\n{bad\n", "env=prod&format=jsonl", "application/x-ndjson; charset=utf-8"},
		{10, `[1,2]`, "env=nope&force=maybe&file=%00", "text/plain"},
		{11, `{"nodes":[{"id":"a","type":"Rule"}],"edges":[]}`, "env=test", "application/json"},
		{0, `{} {}`, "", ""},
		{2, `{"title":1}`, "", "application/json"},
		{3, ``, "", ""},
	}
	for _, s := range seeds {
		f.Add(uint8(s.route), []byte(s.body), s.query, s.ctype)
	}
	v, err := requirements.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	s, err := httpapi.New(httpapi.Config{
		Addr:           "127.0.0.1:0",
		Tokens:         testTokens(),
		Jobs:           fuzzJobs{},
		Chunks:         &fakeChunks{},
		Requirements:   fuzzRequirements{&fakeRequirements{v: v, cmds: map[string]requirements.Command{}}},
		DeadLetters:    fuzzDLQ{newFakeDLQ()},
		MaxUploadBytes: 1 << 20,
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	h := s.Handler()

	f.Fuzz(func(t *testing.T, route uint8, body []byte, query, ctype string) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		req.URL.RawQuery = query
		req.Header.Set("Authorization", "Bearer "+adminTok)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		what := fmt.Sprintf("%s %s?%s (Content-Type %q, body %q)", rt.method, rt.path, query, ctype, body)
		checkFuzzAnswer(t, what, rt.path, rec)
	})
}

// checkFuzzAnswer checks FuzzRequestBodies' answer rec to the request what on path: never a
// 5xx; an error is FastAPI's {"detail": …} on the Python service's /api routes and a
// problem+json document whose status matches elsewhere; a success carries a JSON body.
func checkFuzzAnswer(t *testing.T, what, path string, rec *httptest.ResponseRecorder) {
	if rec.Code >= 500 {
		t.Fatalf("%s answered %d: %s", what, rec.Code, rec.Body)
	}
	if rec.Code >= 400 && strings.HasPrefix(path, "/api/") {
		// The Python service's routes answer FastAPI's {"detail": …} (compat.go).
		var d struct {
			Detail any `json:"detail"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d.Detail == nil || d.Detail == "" {
			t.Fatalf("%s answered %d without a detail (%v): %s", what, rec.Code, err, rec.Body)
		}
		return
	}
	if rec.Code >= 400 {
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("%s answered %d with Content-Type %q: %s", what, rec.Code, ct, rec.Body)
		}
		var p struct {
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != rec.Code || p.Detail == "" {
			t.Fatalf("%s answered %d with a malformed problem (%v): %s", what, rec.Code, err, rec.Body)
		}
		return
	}
	if rec.Code < 200 || !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("%s answered %d with a body that is not JSON: %s", what, rec.Code, rec.Body)
	}
}
