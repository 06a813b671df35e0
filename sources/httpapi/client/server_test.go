package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// oneJob is a JobService that knows one job, j1, and accepts every upload.
type oneJob struct{}

func (oneJob) SubmitJob(_ context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	return httpapi.SubmitResult{JobID: "j-new", Env: req.Env, State: jobs.JobPending}, nil
}

func (oneJob) GetJob(_ context.Context, id string) (jobs.Job, error) {
	if id != "j1" {
		return jobs.Job{}, fmt.Errorf("%w: job %s", httpapi.ErrNotFound, id)
	}
	return jobs.Job{JobID: "j1", Env: "dev", State: jobs.JobCompleted}, nil
}

type chunks struct{}

func (chunks) GetChunk(_ context.Context, _, id string) (json.RawMessage, error) {
	return nil, fmt.Errorf("%w: chunk %s", httpapi.ErrNotFound, id)
}

const testToken = "client-test-token-0123456789"

// startServer runs the real API server on loopback with one admin token and an upload rate of
// one every 2 s (burst 1); it stops at the end of the test.
func startServer(t *testing.T) string {
	t.Helper()
	s, err := httpapi.New(httpapi.Config{
		Addr: "127.0.0.1:0", Jobs: oneJob{}, Chunks: chunks{},
		Tokens:     []httpapi.Token{{Name: "op", Token: testToken, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}}},
		RateLimits: httpapi.RateLimits{Uploads: httpapi.Rate{PerSecond: 0.5, Burst: 1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("server: %v", err)
		}
	})
	return "http://" + s.Addr()
}

// Against the real server: answers decode, refusals come back as *Error with the problem's
// status and detail, and a 429 of the server's own rate limit is waited out.
func TestAgainstTheServer(t *testing.T) {
	base := startServer(t)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	waits := &syncBuffer{}
	c, err := New(Config{URL: base, Token: testToken, HTTP: &http.Client{Transport: tr}, Waits: waits})
	if err != nil {
		t.Fatal(err)
	}
	anon, err := New(Config{URL: base, HTTP: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var job jobs.Job
	if err := c.Do(ctx, "GET", "/v1/jobs/j1", nil, nil, &job); err != nil || job.JobID != "j1" || job.State != jobs.JobCompleted {
		t.Fatalf("GET j1: %v, %+v", err, job)
	}
	for _, tc := range []struct {
		name   string
		c      *Client
		path   string
		status int
	}{
		{"unknown job", c, "/v1/jobs/nosuch", http.StatusNotFound},
		{"no token", anon, "/v1/jobs/j1", http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Do(ctx, "GET", tc.path, nil, nil, nil)
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != tc.status || ae.Detail == "" {
				t.Fatalf("GET %s: %v (%T), want a %d problem with a detail", tc.path, err, err, tc.status)
			}
		})
	}

	// Two uploads at once: the second is refused with 429 and Retry-After, waited out, and
	// accepted.
	body := []map[string]string{{"chunk_id": "c1", "content": "a chunk"}}
	start := time.Now()
	for i := range 2 {
		var res struct {
			JobID string `json:"job_id"`
		}
		if err := c.Do(ctx, "POST", "/v1/jobs", map[string][]string{"env": {"dev"}}, body, &res); err != nil || res.JobID != "j-new" {
			t.Fatalf("upload %d: %v, %+v; waits: %s", i+1, err, res, waits.String())
		}
	}
	if !strings.Contains(waits.String(), "429 Too Many Requests") || time.Since(start) < time.Second {
		t.Fatalf("the second upload did not wait out the rate limit (%s): %q", time.Since(start), waits.String())
	}
}
