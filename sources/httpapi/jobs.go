package httpapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/files"
)

// JobService publishes load jobs and reports their state. Implementations must be safe for
// concurrent use.
type JobService interface {
	// SubmitJob reads a chunk file from req.Body (streamed; never buffered whole), publishes it
	// as one job and returns once every item is durably in JetStream; processing continues
	// asynchronously. It blocks while reading and publishing and honours ctx, which ends when
	// the client goes away.
	//
	// An error from reading req.Body must be returned wrapped with %w: the body is limited in
	// size and the API maps the *http.MaxBytesError to 413. Client mistakes wrap ErrBadRequest
	// (400); any other error is an internal failure (500, details only logged).
	SubmitJob(ctx context.Context, req SubmitRequest) (SubmitResult, error)
	// GetJob returns the job's current state, or an error wrapping ErrNotFound when id is
	// unknown. It may block on I/O and honours ctx.
	GetJob(ctx context.Context, id string) (jobs.Job, error)
}

// SubmitRequest is one chunk file to load as a job. Body is owned by the API's request and is
// only valid until SubmitJob returns.
type SubmitRequest struct {
	// Env is the target environment: "dev", "test" or "prod" (already validated).
	Env string
	// File is the name the producer gave the file (query parameter "file"); may be empty.
	File string
	// Format is "jsonl" when the request's Content-Type is application/x-ndjson (or
	// application/jsonl), else "" meaning: sniff the format from the content.
	Format string
	// Body streams the file; read it only before SubmitJob returns, from one goroutine at a
	// time. Reads fail with *http.MaxBytesError past the upload limit (413), and with an
	// os.ErrDeadlineExceeded error when the client sends nothing for a minute (408). It has
	// a method MaxBytes() int64 returning the upload limit, which a service applies to the
	// file's uncompressed content too (intake.LoaderConfig.MaxDecompressedBytes).
	Body io.Reader
	// Force republishes a file that was submitted before instead of reporting the existing job.
	Force bool
	// IdempotencyKey is the request's Idempotency-Key header: a repeated key gets the first
	// request's job, and nothing is republished. Optional.
	IdempotencyKey string
}

// SubmitResult is what SubmitJob reports, and the body of the API's answer to a submission.
type SubmitResult struct {
	JobID string     `json:"job_id"`
	Env   string     `json:"env"`
	State jobs.State `json:"state"`
	// Total is the number of items in the file (Published + Rejected).
	Total int64 `json:"total"`
	// Published is the number of items durably published to JetStream.
	Published int64 `json:"published"`
	// Rejected is the number of items refused at intake.
	Rejected int64 `json:"rejected"`
	// Rejections lists the rejected items (bounded by the service).
	Rejections []jobs.ItemIssue `json:"rejections,omitempty"`
	// RejectionsOmitted counts the rejected items Rejections leaves out. The API sets it
	// (Rejected less the length of Rejections) before answering; a service need not.
	RejectionsOmitted int64 `json:"rejections_omitted,omitempty"`
	// Existing is true when the same file was submitted before and nothing was republished;
	// the API then answers 200 instead of 202.
	Existing bool `json:"existing"`
}

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

// JobRollbackPreviewer is a JobService that can say what a rollback would do, changing
// nothing (GET /v1/jobs/{id}/rollback). Optional: without it the route answers 501.
type JobRollbackPreviewer interface {
	// PreviewJobRollback counts what rolling back job id of env would do now to the
	// document store, with or without restorePrevious (document.JobRollbackPreview).
	// restoreSupported is false when the store keeps no previous versions: the preview is
	// then that of a rollback that deletes (Restorable 0). It reads only, may block on I/O,
	// honours ctx and must be safe for concurrent use.
	PreviewJobRollback(ctx context.Context, env, id string, restorePrevious bool) (preview document.JobRollbackPreview, restoreSupported bool, err error)
}

// RollbackPreview is the answer of GET /v1/jobs/{id}/rollback: what DELETE /v1/jobs/{id}
// with the same restore_previous would do if asked now, and whether it may be asked.
type RollbackPreview struct {
	JobID string `json:"job_id"`
	Env   string `json:"env"`
	// RestorePrevious is the mode previewed (the query parameter).
	RestorePrevious bool `json:"restore_previous"`
	// RestoreSupported is false when the store keeps no previous versions (AstraDB).
	RestoreSupported bool `json:"restore_supported"`
	// Documents counts the documents the job wrote last: Deleted plus Restored.
	Documents int64 `json:"documents"`
	Deleted   int64 `json:"deleted"`
	Restored  int64 `json:"restored"`
	// SupersededJobs lists the earlier jobs whose documents would go with the job's, most
	// documents first (then by job id); empty, never null, when none.
	SupersededJobs []jobs.SupersededJob `json:"superseded_jobs"`
	// Truncated is true when the store stopped counting at its bound: the counts are lower
	// bounds.
	Truncated bool       `json:"truncated"`
	State     jobs.State `json:"state"`
	// CanRollBack is false when DELETE /v1/jobs/{id} would not start this rollback; Reason
	// then says why ("" otherwise).
	CanRollBack bool   `json:"can_roll_back"`
	Reason      string `json:"reason"`
}

// jobRoutes registers /v1/jobs: submitting needs ScopeWrite, reading and following
// ScopeRead, rolling back and previewing a rollback ScopeAdmin (a preview reads every document
// of the job: on AstraDB up to astra.MaxPreviewDocuments/20 Data API calls, not for any reader).
func (s *Server) jobRoutes() {
	s.handle("POST /v1/jobs", s.require(ScopeWrite, s.submitJob))
	s.handle("GET /v1/jobs/{id}", s.require(ScopeRead, s.getJob))
	s.handle("GET /v1/jobs", s.require(ScopeRead, s.listJobs))
	s.handle("GET /v1/jobs/{id}/events", s.require(ScopeRead, s.jobEvents))
	s.handle("DELETE /v1/jobs/{id}", s.require(ScopeAdmin, s.rollbackJob))
	s.handle("GET /v1/jobs/{id}/rollback", s.require(ScopeAdmin, s.previewRollback))
}

// maxFileNameLen bounds the "file" query parameter of a submission.
const maxFileNameLen = 1024

// submitJob handles POST /v1/jobs?env=&file=&force=: it streams the body to JobService.SubmitJob.
func (s *Server) submitJob(w http.ResponseWriter, r *http.Request) {
	req, err := submitParams(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	body, ok := s.uploadBody(w, r)
	if !ok {
		return
	}
	defer body.release()
	req.Body = body
	res, err := s.cfg.Jobs.SubmitJob(r.Context(), req)
	if err != nil {
		s.submitFailed(w, r, req, body, err)
		return
	}
	w.Header().Set("Location", "/v1/jobs/"+url.PathEscape(res.JobID))
	res.RejectionsOmitted = max(res.Rejected-int64(len(res.Rejections)), 0)
	status := http.StatusAccepted
	if res.Existing {
		status = http.StatusOK
	}
	s.writeJSON(w, r, status, res)
}

// submitParams reads a submission's query parameters and headers into a SubmitRequest without
// its Body; its error is the 400 answer's text.
func submitParams(r *http.Request) (SubmitRequest, error) {
	env, err := envParam(r)
	if err != nil {
		return SubmitRequest{}, err
	}
	q := r.URL.Query()
	file := q.Get("file")
	if len(file) > maxFileNameLen || !utf8.ValidString(file) || containsControl(file) {
		return SubmitRequest{}, fmt.Errorf("file must be valid UTF-8 without control characters, at most %d bytes", maxFileNameLen)
	}
	force := false
	if v := q.Get("force"); v != "" {
		if force, err = strconv.ParseBool(v); err != nil {
			return SubmitRequest{}, fmt.Errorf("force %q is not a boolean (true or false)", v)
		}
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 || containsControl(key) {
		return SubmitRequest{}, errors.New("Idempotency-Key must be at most 255 characters without control characters")
	}
	format := ""
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && (mt == "application/x-ndjson" || mt == "application/jsonl") {
			format = "jsonl"
		}
	}
	return SubmitRequest{Env: env, File: file, Format: format, Force: force, IdempotencyKey: key}, nil
}

// submitFailed answers a submission whose SubmitJob returned err: the upload's limits first
// (413, 503, 408: body records which one reading hit), then the service's classes.
func (s *Server) submitFailed(w http.ResponseWriter, r *http.Request, req SubmitRequest, body *limitedBody, err error) {
	limit := s.cfg.MaxUploadBytes
	var mbe *http.MaxBytesError
	switch {
	case body.tooLarge.Load() || errors.As(err, &mbe):
		s.problem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The file is larger than the limit of %d bytes.", limit))
	case body.full.Load() || errors.Is(err, errSpoolFull):
		s.spoolFull(w, r)
	case errors.Is(err, files.ErrTooLarge):
		s.problem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The file unpacks to more than the limit of %d bytes.", limit))
	case body.timedOut.Load():
		s.problem(w, r, http.StatusRequestTimeout, fmt.Sprintf("The client sent no data for %s while uploading the file.", s.bodyIdleTimeout))
	case errors.Is(err, ErrBadRequest):
		s.problem(w, r, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrBusy):
		s.metrics.rejected.WithLabelValues("admission").Inc()
		s.tooBusy(w, r, http.StatusServiceUnavailable, retryBusy*time.Second,
			"The server is publishing as many jobs as it queues; no job was created. Retry shortly.")
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		s.log.DebugContext(r.Context(), "job submission abandoned by client", "file", req.File, "env", req.Env, "err", err)
		s.writeProblem(w, r, problemDoc{Status: statusClientClosed, Title: "Client Closed Request", Detail: "The client closed the request."})
	default:
		s.internalError(w, r, "submit job", err)
	}
}

// retryBusy is the Retry-After, in seconds, of a job refused by admission control: batches
// commit in milliseconds, so the queue moves fast.
const retryBusy = 1

// getJob handles GET /v1/jobs/{id}.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	job, err := s.cfg.Jobs.GetJob(r.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No job with id %q.", id))
	case err != nil:
		s.internalError(w, r, "get job", err)
	default:
		s.writeJSON(w, r, http.StatusOK, job)
	}
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
	ctx, cancel := s.streamContext(r)
	defer cancel()
	rc := startSSE(w)

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
			if writeKeepAlive(w, rc) != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// restorePreviousParam reads the restore_previous query parameter (absent: false).
func restorePreviousParam(r *http.Request) (bool, error) {
	v := r.URL.Query().Get("restore_previous")
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("restore_previous %q is not true or false", v)
	}
	return b, nil
}

// previewRollback handles GET /v1/jobs/{id}/rollback?restore_previous=: 200 with what the
// rollback would do now (RollbackPreview), computed from the document store; nothing changes.
func (s *Server) previewRollback(w http.ResponseWriter, r *http.Request) {
	pv, ok := s.cfg.Jobs.(JobRollbackPreviewer)
	if !ok {
		s.problem(w, r, http.StatusNotImplemented, "This server cannot preview rollbacks.")
		return
	}
	restore, err := restorePreviousParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	job, err := s.cfg.Jobs.GetJob(r.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, jobs.ErrJobNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No job %q.", id))
		return
	case err != nil:
		s.internalError(w, r, "get job", err)
		return
	}
	p, supported, err := pv.PreviewJobRollback(r.Context(), job.Env, id, restore)
	if err != nil {
		s.internalError(w, r, "preview rollback", err)
		return
	}
	out := RollbackPreview{
		JobID: id, Env: job.Env, RestorePrevious: restore, RestoreSupported: supported,
		Documents: p.Documents, Deleted: p.Deleted(), Restored: p.Restorable,
		SupersededJobs: make([]jobs.SupersededJob, 0, len(p.Superseded)),
		Truncated:      p.Truncated, State: job.State,
	}
	if !supported {
		// What the store counted is a delete; say so whatever it returned.
		out.Restored, out.Deleted = 0, p.Documents
	}
	for j, n := range p.Superseded {
		out.SupersededJobs = append(out.SupersededJobs, jobs.SupersededJob{JobID: j, Documents: n})
	}
	slices.SortFunc(out.SupersededJobs, func(a, b jobs.SupersededJob) int {
		if a.Documents != b.Documents {
			return cmp.Compare(b.Documents, a.Documents)
		}
		return cmp.Compare(a.JobID, b.JobID)
	})
	out.Reason = rollbackRefusal(job, restore, supported)
	out.CanRollBack = out.Reason == ""
	s.writeJSON(w, r, http.StatusOK, out)
}

// rollbackRefusal says why DELETE /v1/jobs/{id} would not start a rollback of job now (the
// rules of intake.Loader.RollbackWith and jobs.Store.RequestRollback), "" when it would.
func rollbackRefusal(job jobs.Job, restore, restoreSupported bool) string {
	switch {
	case restore && !restoreSupported:
		return "This document store keeps no previous versions to restore; roll back without restore_previous to delete the job's documents."
	case !job.State.Done():
		return fmt.Sprintf("The job is still loading (state %s); it can be rolled back once it is done.", job.State)
	case job.Rollback != nil && job.Rollback.State == "requested":
		return "A rollback of this job is already requested."
	case job.Rollback != nil && job.Rollback.State == "done":
		return "The job was already rolled back."
	}
	return ""
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
	restore, err := restorePreviousParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	opts.RestorePrevious = restore
	by, _ := Principal(r.Context())
	var job jobs.Job
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
