package httpapi_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

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
