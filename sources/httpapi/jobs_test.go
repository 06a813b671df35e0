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

// submitJobBody is the body TestSubmitJob posts: 3 lines, no trailing newline.
const submitJobBody = "{\"id\":\"a\"}\n{\"id\":\"b\"}\n{\"id\":\"c\"}"

// submitJobCase is a scenario of TestSubmitJob.
type submitJobCase struct {
	name       string
	query      string
	ctype      string
	jobs       *fakeJobs
	wantStatus int
	wantCall   *submitCall // nil = SubmitJob must not be called
	wantDetail string      // for problems
}

func TestSubmitJob(t *testing.T) {
	tests := []submitJobCase{
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
		t.Run(tt.name, func(t *testing.T) { checkSubmitJob(t, tt) })
	}
}

// checkSubmitJob posts submitJobBody with tt's query and content type and checks the call
// SubmitJob got, then the problem or the result, Location and Content-Type returned.
func checkSubmitJob(t *testing.T, tt submitJobCase) {
	s := newServer(t, httpapi.Config{Jobs: tt.jobs})
	hdr := map[string]string{}
	if tt.ctype != "" {
		hdr["Content-Type"] = tt.ctype
	}
	rec := serve(t, s.Handler(), "POST", "/v1/jobs"+tt.query, "", strings.NewReader(submitJobBody), hdr)

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
		want.Lines, want.Bytes = 3, int64(len(submitJobBody))
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

// listingJobs is a JobService that also lists jobs: it records the filter it was asked for.
type listingJobs struct {
	fakeJobs
	got []httpapi.JobFilter
}

func (l *listingJobs) ListJobs(_ context.Context, f httpapi.JobFilter, _ string, _ int) ([]jobs.Job, string, error) {
	l.got = append(l.got, f)
	return []jobs.Job{{JobID: "j1", State: f.State}}, "", nil
}

// TestListJobsByState checks GET /v1/jobs?state= accepts every job state the API can report,
// and only those. Regression: state failed (issue 12's admission) was missing from the filter,
// so GET /v1/jobs?state=failed answered 400 "not a job state" although the OpenAPI document
// lists it, and an operator could not find the jobs whose publishing failed.
func TestListJobsByState(t *testing.T) {
	tests := []struct {
		state string
		want  int
	}{
		{"", http.StatusOK},
		{string(jobs.JobPending), http.StatusOK},
		{string(jobs.JobRunning), http.StatusOK},
		{string(jobs.JobCompleted), http.StatusOK},
		{string(jobs.JobCompletedWithErrors), http.StatusOK},
		{string(jobs.JobRolledBack), http.StatusOK},
		{string(jobs.JobSuperseded), http.StatusOK},
		{string(jobs.JobFailed), http.StatusOK},
		{"done", http.StatusBadRequest},
		{"FAILED", http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.state, func(t *testing.T) {
			jobs := &listingJobs{}
			s := newServer(t, httpapi.Config{Jobs: jobs})
			rec := serve(t, s.Handler(), "GET", "/v1/jobs?state="+tt.state, "", nil, nil)
			if rec.Code != tt.want {
				t.Fatalf("state %q: status %d, want %d; body %s", tt.state, rec.Code, tt.want, rec.Body)
			}
			if tt.want != http.StatusOK {
				if len(jobs.got) != 0 {
					t.Fatalf("state %q: the lister was called with %+v", tt.state, jobs.got)
				}
				return
			}
			if len(jobs.got) != 1 || string(jobs.got[0].State) != tt.state {
				t.Fatalf("state %q: the lister got %+v", tt.state, jobs.got)
			}
		})
	}
}
