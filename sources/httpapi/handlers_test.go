package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestSubmitJob(t *testing.T) {
	const body = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}" // 3 lines, no trailing newline
	tests := []struct {
		name       string
		query      string
		ctype      string
		jobs       *fakeJobs
		wantStatus int
		wantCall   *submitCall // nil = SubmitJob must not be called
		wantDetail string      // for problems
	}{
		{
			name: "defaults", wantStatus: 202,
			jobs:     &fakeJobs{result: httpapi.SubmitResult{JobID: "job-7", State: jobs.JobPending}},
			wantCall: &submitCall{Env: "dev"},
		},
		{
			name: "every parameter", query: "?env=prod&file=book%20one.jsonl&force=true", ctype: "application/x-ndjson",
			jobs: &fakeJobs{}, wantStatus: 202,
			wantCall: &submitCall{Env: "prod", File: "book one.jsonl", Format: "jsonl", Force: true},
		},
		{
			name: "ndjson with parameters", query: "?env=test&force=false", ctype: "application/x-ndjson; charset=utf-8",
			jobs: &fakeJobs{}, wantStatus: 202,
			wantCall: &submitCall{Env: "test", Format: "jsonl"},
		},
		{
			name: "json is sniffed", ctype: "application/json",
			jobs: &fakeJobs{}, wantStatus: 202, wantCall: &submitCall{Env: "dev"},
		},
		{
			name: "existing job", query: "?file=a.json",
			jobs:       &fakeJobs{result: httpapi.SubmitResult{JobID: "job-old", Existing: true, State: jobs.JobCompleted}},
			wantStatus: 200, wantCall: &submitCall{Env: "dev", File: "a.json"},
		},
		{name: "unknown env", query: "?env=staging", jobs: &fakeJobs{}, wantStatus: 400, wantDetail: `env "staging" is not one of dev, test, prod`},
		{name: "bad force", query: "?force=maybe", jobs: &fakeJobs{}, wantStatus: 400, wantDetail: `force "maybe" is not a boolean`},
		{name: "control character in file", query: "?file=a%0Ab", jobs: &fakeJobs{}, wantStatus: 400, wantDetail: "file must be valid UTF-8"},
		{
			name: "service reports bad input", jobs: &fakeJobs{submitErr: fmt.Errorf("%w: item 2: text is empty", httpapi.ErrBadRequest)},
			wantStatus: 400, wantCall: &submitCall{Env: "dev"}, wantDetail: "item 2: text is empty",
		},
		{
			name: "service fails", jobs: &fakeJobs{submitErr: errors.New("publish batch: nats: connection to 10.0.0.5 refused")},
			wantStatus: 500, wantCall: &submitCall{Env: "dev"}, wantDetail: "request id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, httpapi.Config{Jobs: tt.jobs})
			hdr := map[string]string{}
			if tt.ctype != "" {
				hdr["Content-Type"] = tt.ctype
			}
			rec := serve(t, s.Handler(), "POST", "/v1/jobs"+tt.query, "", strings.NewReader(body), hdr)

			calls := tt.jobs.Calls()
			if tt.wantCall == nil {
				if len(calls) != 0 {
					t.Errorf("SubmitJob called %d times, want 0", len(calls))
				}
			} else {
				if len(calls) != 1 {
					t.Fatalf("SubmitJob called %d times, want 1", len(calls))
				}
				want := *tt.wantCall
				want.Principal, want.HasPrincipal = httpapi.LocalPrincipal, true
				want.Lines, want.Bytes = 3, int64(len(body))
				if calls[0] != want {
					t.Errorf("SubmitJob got %+v, want %+v", calls[0], want)
				}
			}

			if tt.wantStatus >= 400 {
				p := decodeProblem(t, rec, tt.wantStatus)
				mustContain(t, "detail", p.Detail, tt.wantDetail)
				if strings.Contains(rec.Body.String(), "10.0.0.5") {
					t.Errorf("internal error leaked to the client: %s", rec.Body)
				}
				return
			}
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			var got httpapi.SubmitResult
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatalf("decode result: %v", err)
			}
			want := tt.jobs.result
			if want.JobID == "" {
				want.JobID = "job-1"
			}
			want.Env, want.Total, want.Published = tt.wantCall.Env, 3, 3
			if !reflect.DeepEqual(got, want) {
				t.Errorf("result = %+v, want %+v", got, want)
			}
			if loc := rec.Header().Get("Location"); loc != "/v1/jobs/"+want.JobID {
				t.Errorf("Location = %q, want /v1/jobs/%s", loc, want.JobID)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestSubmitJobTooLarge(t *testing.T) {
	const limit = 1 << 10
	big := strings.Repeat("{\"id\":\"x\"}\n", 200) // 2200 bytes
	tests := []struct {
		name      string
		jobs      *fakeJobs
		chunked   bool // unknown length, so the limit is only found while reading
		wantReads bool
	}{
		{name: "declared length over the limit", jobs: &fakeJobs{}},
		{name: "streamed body over the limit", jobs: &fakeJobs{}, chunked: true, wantReads: true},
		{name: "service hides the read error", jobs: &fakeJobs{hideReadErr: true}, chunked: true, wantReads: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, httpapi.Config{Jobs: tt.jobs, MaxUploadBytes: limit})
			req, _ := http.NewRequest("POST", "/v1/jobs", strings.NewReader(big))
			if tt.chunked {
				req.Body = io.NopCloser(io.MultiReader(strings.NewReader(big)))
				req.ContentLength = -1
			}
			rec := recorder(s.Handler(), req)
			p := decodeProblem(t, rec, http.StatusRequestEntityTooLarge)
			mustContain(t, "detail", p.Detail, "1024 bytes")
			calls := tt.jobs.Calls()
			if tt.wantReads != (len(calls) == 1) {
				t.Fatalf("SubmitJob calls = %d, want reads %v", len(calls), tt.wantReads)
			}
			if tt.wantReads && calls[0].Bytes != limit {
				t.Errorf("service read %d bytes, want exactly the limit %d", calls[0].Bytes, limit)
			}
		})
	}

	// Exactly at the limit is fine.
	jobs := &fakeJobs{}
	s := newServer(t, httpapi.Config{Jobs: jobs, MaxUploadBytes: int64(len(big))})
	if rec := serve(t, s.Handler(), "POST", "/v1/jobs", "", strings.NewReader(big), nil); rec.Code != http.StatusAccepted {
		t.Errorf("body at the limit: status %d, want 202; %s", rec.Code, rec.Body)
	}
}

func TestGetJob(t *testing.T) {
	created := time.Date(2025, 9, 7, 10, 0, 0, 0, time.UTC)
	job := jobs.Job{
		JobID: "job_1757237159_c8623a8fec21", Env: "dev", State: jobs.JobCompletedWithErrors, File: "a.jsonl",
		Sealed: true, Total: 3, Published: 2, Written: 2, Rejected: 1,
		Rejections: []jobs.ItemIssue{{Index: 1, ID: "c2", Reason: "text is empty"}},
		CreatedAt:  created, UpdatedAt: created.Add(time.Minute), CompletedAt: &created,
	}
	tests := []struct {
		name   string
		jobs   *fakeJobs
		id     string
		status int
	}{
		{name: "found", jobs: &fakeJobs{jobs: map[string]jobs.Job{job.JobID: job}}, id: job.JobID, status: 200},
		{name: "unknown", jobs: &fakeJobs{}, id: "nope", status: 404},
		{name: "store fails", jobs: &fakeJobs{getErr: errors.New("sqlite: disk I/O error at /var/lib/sluice")}, id: "x", status: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newServer(t, httpapi.Config{Jobs: tt.jobs})
			rec := serve(t, s.Handler(), "GET", "/v1/jobs/"+tt.id, "", nil, nil)
			if tt.status != 200 {
				p := decodeProblem(t, rec, tt.status)
				if p.Instance != "/v1/jobs/"+tt.id {
					t.Errorf("instance = %q", p.Instance)
				}
				if strings.Contains(rec.Body.String(), "/var/lib") {
					t.Errorf("internal error leaked: %s", rec.Body)
				}
				return
			}
			if rec.Code != 200 {
				t.Fatalf("status = %d; %s", rec.Code, rec.Body)
			}
			var got jobs.Job
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, job) {
				t.Errorf("job = %+v, want %+v", got, job)
			}
		})
	}
}

func TestGetChunk(t *testing.T) {
	const doc = `{"_id":"c1","content":"Elves \u00e9 ","metadata":{"page":3},"$vector":[0.1,0.2]}`
	chunks := &fakeChunks{docs: map[string]string{"prod/c1": doc, "dev/c1": `{"_id":"c1","env":"dev"}`}}
	s := newServer(t, httpapi.Config{Chunks: chunks})
	h := s.Handler()

	rec := serve(t, h, "GET", "/v1/chunks/c1?env=prod", "", nil, nil)
	if rec.Code != 200 || rec.Body.String() != doc {
		t.Errorf("GET prod chunk = %d %q, want 200 with the stored document as is", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if rec := serve(t, h, "GET", "/v1/chunks/c1", "", nil, nil); rec.Body.String() != `{"_id":"c1","env":"dev"}` {
		t.Errorf("env default: got %q, want the dev document", rec.Body)
	}
	p := decodeProblem(t, serve(t, h, "GET", "/v1/chunks/c2?env=prod", "", nil, nil), 404)
	mustContain(t, "detail", p.Detail, `"c2"`)
	decodeProblem(t, serve(t, h, "GET", "/v1/chunks/c1?env=qa", "", nil, nil), 400)

	chunks.err = errors.New("astra: 503 from https://db-internal.example")
	rec = serve(t, h, "GET", "/v1/chunks/c1", "", nil, nil)
	decodeProblem(t, rec, 500)
	if strings.Contains(rec.Body.String(), "db-internal") {
		t.Errorf("internal error leaked: %s", rec.Body)
	}
}

func TestProblemShapes(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	h := s.Handler()

	p := decodeProblem(t, serve(t, h, "GET", "/v2/nothing", "", nil, nil), 404)
	if p.Instance != "/v2/nothing" {
		t.Errorf("instance = %q", p.Instance)
	}
	decodeProblem(t, serve(t, h, "PUT", "/v1/jobs", "", nil, nil), 405)
	// A service without the optional job capabilities answers 501.
	decodeProblem(t, serve(t, h, "GET", "/v1/jobs", "", nil, nil), 501)

	rec := serve(t, h, "PUT", "/v1/jobs/j1", "", nil, nil)
	decodeProblem(t, rec, 405)
	if allow := rec.Header().Get("Allow"); allow != "DELETE, GET, HEAD" {
		t.Errorf("Allow = %q, want DELETE, GET, HEAD", allow)
	}
	// The mux's plain-text body must not trail the problem document.
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Errorf("405 body is not one JSON document: %q", rec.Body)
	}
	rec = serve(t, h, "PUT", "/healthz", "", nil, nil)
	decodeProblem(t, rec, 405)
}

func TestHealthz(t *testing.T) {
	s := newServer(t, httpapi.Config{Ready: []httpapi.Check{{Name: "down", Check: func(context.Context) error { return errors.New("down") }}}})
	rec := serve(t, s.Handler(), "GET", "/healthz", "", nil, nil)
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Errorf("GET /healthz = %d %q", rec.Code, rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	hang := make(chan struct{})
	tests := []struct {
		name       string
		checks     []httpapi.Check
		wantStatus int
		wantChecks map[string]string
		hang       chan struct{} // closed once the answer is in
	}{
		{name: "no checks", wantStatus: 200, wantChecks: map[string]string{}},
		{
			name:       "all ready",
			checks:     []httpapi.Check{{Name: "nats", Check: ok}, {Name: "store", Check: ok}},
			wantStatus: 200, wantChecks: map[string]string{"nats": "ok", "store": "ok"},
		},
		{
			name: "one fails",
			checks: []httpapi.Check{
				{Name: "nats", Check: ok},
				{Name: "store", Check: func(context.Context) error { return errors.New("store: database is locked") }},
			},
			wantStatus: 503, wantChecks: map[string]string{"nats": "ok", "store": "store: database is locked"},
		},
		{
			name: "one hangs until the deadline",
			checks: []httpapi.Check{
				{Name: "nats", Check: ok},
				// Ignores ctx and returns only after the answer was sent.
				{Name: "slow", Check: func(context.Context) error { <-hang; return errors.New("late") }},
			},
			hang:       hang,
			wantStatus: 503, wantChecks: map[string]string{"nats": "ok", "slow": "timed out after 2s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, httpapi.Config{Ready: tt.checks, Tokens: testTokens()})
			rec := serve(t, s.Handler(), "GET", "/readyz", "", nil, nil)
			if tt.hang != nil {
				close(tt.hang)
			}
			var checks map[string]string
			if tt.wantStatus == 200 {
				var body struct {
					Status string            `json:"status"`
					Checks map[string]string `json:"checks"`
				}
				if rec.Code != 200 {
					t.Fatalf("status %d; %s", rec.Code, rec.Body)
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Status != "ready" {
					t.Fatalf("body %q: %v", rec.Body, err)
				}
				checks = body.Checks
			} else {
				checks = decodeProblem(t, rec, tt.wantStatus).Checks
			}
			if checks == nil {
				checks = map[string]string{}
			}
			if !reflect.DeepEqual(checks, tt.wantChecks) {
				t.Errorf("checks = %v, want %v", checks, tt.wantChecks)
			}
		})
	}
}
