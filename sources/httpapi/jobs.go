package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
)

// ErrConflict is wrapped by services for a request that conflicts with the resource's state
// (rolling back a job that is still running): 409.
var ErrConflict = errors.New("conflict")

// JobFilter selects jobs in GET /v1/jobs. Zero fields match everything.
type JobFilter struct {
	State jobs.State
	Env   string
}

// JobLister is a JobService that can list jobs (GET /v1/jobs). Optional: without it the route
// answers 501.
type JobLister interface {
	// ListJobs returns up to limit jobs, newest first, after cursor, and the next cursor ("" at
	// the end). A bad cursor wraps ErrBadRequest.
	ListJobs(ctx context.Context, f JobFilter, cursor string, limit int) ([]jobs.Job, string, error)
}

// JobWatcher is a JobService that can follow a job (GET /v1/jobs/{id}/events). Optional.
type JobWatcher interface {
	// WatchJob calls fn with the job's state now and after every change until fn returns true
	// or ctx ends. It returns an error wrapping ErrNotFound for an unknown job.
	WatchJob(ctx context.Context, id string, fn func(jobs.Job) bool) error
}

// JobRoller is a JobService that can roll a job back (DELETE /v1/jobs/{id}). Optional.
type JobRoller interface {
	// RollbackJob asks for the job's documents to be deleted and returns the job with its
	// rollback requested. ErrNotFound for an unknown job; ErrConflict while it still runs.
	// by is the name of the token that asked.
	RollbackJob(ctx context.Context, id, by string) (jobs.Job, error)
}

// JobRestorer is a JobRoller that takes options (DELETE /v1/jobs/{id}?restore_previous=true).
// Optional: without it a rollback asking to restore answers 501.
type JobRestorer interface {
	// RollbackJobWith is RollbackJob with options. An error wrapping
	// intake.ErrRestoreUnsupported (the store keeps no previous versions) answers 400.
	RollbackJobWith(ctx context.Context, id, by string, opts intake.RollbackOptions) (jobs.Job, error)
}

type jobList struct {
	Jobs       []jobs.Job `json:"jobs"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// listJobs handles GET /v1/jobs?state=&env=&limit=&cursor=.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	l, ok := s.cfg.Jobs.(JobLister)
	if !ok {
		s.problem(w, r, http.StatusNotImplemented, "This server cannot list jobs.")
		return
	}
	q := r.URL.Query()
	f := JobFilter{State: jobs.State(q.Get("state")), Env: q.Get("env")}
	if f.State != "" && !slices.Contains(jobs.States, f.State) {
		s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("state %q is not a job state", f.State))
		return
	}
	if f.Env != "" {
		if _, err := envParam(r); err != nil {
			s.problem(w, r, http.StatusBadRequest, err.Error())
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			s.problem(w, r, http.StatusBadRequest, "limit must be a number from 1 to 1000")
			return
		}
		limit = n
	}
	list, next, err := l.ListJobs(r.Context(), f, q.Get("cursor"), limit)
	switch {
	case errors.Is(err, ErrBadRequest):
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	case err != nil:
		s.internalError(w, r, "list jobs", err)
		return
	}
	if list == nil {
		list = []jobs.Job{}
	}
	s.writeJSON(w, r, http.StatusOK, jobList{Jobs: list, NextCursor: next})
}

// sseKeepAlive is how often an idle event stream gets a comment line, so proxies keep it open.
const sseKeepAlive = 15 * time.Second

// jobEvents handles GET /v1/jobs/{id}/events: server-sent events, one "progress" event per
// change of the job, a final "done" event once it is settled (done loading, no rollback
// pending), then the stream closes.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) {
	wt, ok := s.cfg.Jobs.(JobWatcher)
	if !ok {
		s.problem(w, r, http.StatusNotImplemented, "This server cannot follow jobs.")
		return
	}
	id := r.PathValue("id")
	// Answer 404 before starting the stream.
	if _, err := s.cfg.Jobs.GetJob(r.Context(), id); err != nil {
		if errors.Is(err, ErrNotFound) {
			s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No job %q.", id))
			return
		}
		s.internalError(w, r, "get job", err)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-s.stopStreams:
			cancel()
		case <-ctx.Done():
		}
	}()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	updates := make(chan jobs.Job, 16)
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- wt.WatchJob(ctx, id, func(j jobs.Job) bool {
			select {
			case updates <- j:
			case <-ctx.Done():
				return true
			}
			return j.Settled()
		})
		close(updates)
	}()
	keep := time.NewTicker(sseKeepAlive)
	defer keep.Stop()
	seq := 0
	for {
		select {
		case j, ok := <-updates:
			if !ok {
				if err := <-watchErr; err != nil && ctx.Err() == nil {
					fmt.Fprintf(w, "event: error\ndata: %q\n\n", "watch failed")
					_ = rc.Flush()
				}
				return
			}
			b, _ := json.Marshal(j)
			seq++
			event := "progress"
			if j.Settled() {
				event = "done"
			}
			if _, err := fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", seq, event, b); err != nil {
				return
			}
			_ = rc.Flush()
		case <-keep.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			_ = rc.Flush()
		case <-ctx.Done():
			return
		}
	}
}

// rollbackJob handles DELETE /v1/jobs/{id}?restore_previous=: 202 with the job, its rollback
// requested.
func (s *Server) rollbackJob(w http.ResponseWriter, r *http.Request) {
	rb, ok := s.cfg.Jobs.(JobRoller)
	if !ok {
		s.problem(w, r, http.StatusNotImplemented, "This server cannot roll jobs back.")
		return
	}
	id := r.PathValue("id")
	var opts intake.RollbackOptions
	if v := r.URL.Query().Get("restore_previous"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.problem(w, r, http.StatusBadRequest, fmt.Sprintf("restore_previous %q is not true or false", v))
			return
		}
		opts.RestorePrevious = b
	}
	by, _ := Principal(r.Context())
	var job jobs.Job
	var err error
	if rs, ok := s.cfg.Jobs.(JobRestorer); ok {
		job, err = rs.RollbackJobWith(r.Context(), id, by, opts)
	} else if opts.RestorePrevious {
		s.problem(w, r, http.StatusNotImplemented, "This server cannot restore previous versions; roll back without restore_previous to delete the job's documents.")
		return
	} else {
		job, err = rb.RollbackJob(r.Context(), id, by)
	}
	switch {
	case errors.Is(err, intake.ErrRestoreUnsupported):
		s.problem(w, r, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrNotFound), errors.Is(err, jobs.ErrJobNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No job %q.", id))
	case errors.Is(err, ErrConflict), errors.Is(err, intake.ErrJobRunning):
		s.problem(w, r, http.StatusConflict, err.Error())
	case err != nil:
		s.internalError(w, r, "roll back job", err)
	default:
		s.writeJSON(w, r, http.StatusAccepted, job)
	}
}
