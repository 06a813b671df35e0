package httpapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/sources/files"
)

const (
	// maxFileNameLen bounds the "file" query parameter.
	maxFileNameLen = 1024
	// statusClientClosed is nginx's code for a request the client abandoned; it only shows in
	// metrics and the access log, as nobody reads the answer.
	statusClientClosed = 499
)

// envParam returns the "env" query parameter, "dev" when absent, or an error for anything other
// than dev, test or prod.
func envParam(r *http.Request) (string, error) {
	env := r.URL.Query().Get("env")
	switch env {
	case "":
		return "dev", nil
	case "dev", "test", "prod":
		return env, nil
	}
	return "", fmt.Errorf("env %q is not one of dev, test, prod", env)
}

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
		s.log.DebugContext(r.Context(), "job submission abandoned by client", "file", req.File, "env", req.Env, "error", err)
		s.writeProblem(w, r, problemDoc{Status: statusClientClosed, Title: "Client Closed Request", Detail: "The client closed the request."})
	default:
		s.internalError(w, r, "submit job", err)
	}
}

// retryBusy is the Retry-After, in seconds, of a job refused by admission control: batches
// commit in milliseconds, so the queue moves fast.
const retryBusy = 1

// spoolFull answers 503: the uploads being received fill the spool budget.
func (s *Server) spoolFull(w http.ResponseWriter, r *http.Request) {
	s.metrics.rejected.WithLabelValues("spool").Inc()
	s.tooBusy(w, r, http.StatusServiceUnavailable, retrySpoolFull*time.Second,
		fmt.Sprintf("The server is receiving as many upload bytes as it spools at once (%d); retry later.", s.spool.Max()))
}

func containsControl(s string) bool {
	for _, c := range s {
		if unicode.IsControl(c) {
			return true
		}
	}
	return false
}

// innermost unwraps w down to the server's own ResponseWriter.
func innermost(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

// uploadBody wraps r's body in the upload limit and the spool budget. A declared size
// (Content-Length) over the limit is answered 413 and one the spool cannot hold whole 503,
// before any byte is read; ok is then false. Otherwise the caller must release the body once
// the service has returned.
func (s *Server) uploadBody(w http.ResponseWriter, r *http.Request) (body *limitedBody, ok bool) {
	limit := s.cfg.MaxUploadBytes
	if r.ContentLength > limit {
		s.problem(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("The file is larger than the limit of %d bytes.", limit))
		return nil, false
	}
	// MaxBytesReader gets the server's own writer so that hitting the limit also tells the
	// server to close the connection instead of draining the rest of the body.
	body = &limitedBody{r: http.MaxBytesReader(innermost(w), r.Body, limit), spool: s.spool, limit: limit}
	if r.ContentLength > 0 {
		// A declared size is reserved whole, so a full spool answers before any byte is read.
		if !s.spool.TryTake(r.ContentLength) {
			s.spoolFull(w, r)
			return nil, false
		}
		body.reserved, body.declared = r.ContentLength, true
	}
	return body, true
}

// limitedBody is an upload's body: it remembers whether reading hit the upload limit or the
// body idle timeout (serveHTTP's idleBody renews the deadline on each read), so a service that
// reports the truncated read as a parse error still yields 413 or 408, and it reserves each
// byte read in the server's spool budget before handing it on (a body whose Content-Length was
// reserved up front reserves nothing more). Reads must not be concurrent (as for any
// io.Reader); the flags may be read from any goroutine. release gives the reservation back.
type limitedBody struct {
	r        io.Reader
	limit    int64 // the upload limit, for MaxBytes
	spool    *intake.ByteBudget
	reserved int64 // bytes taken from spool
	declared bool  // reserved holds the whole Content-Length: nothing more to take
	read     int64
	tooLarge atomic.Bool
	timedOut atomic.Bool
	full     atomic.Bool
}

// MaxBytes returns the upload limit; a JobService applies it to the uncompressed content of
// a compressed upload (SubmitRequest.Body).
func (b *limitedBody) MaxBytes() int64 { return b.limit }

func (b *limitedBody) Read(p []byte) (int, error) {
	// Reserve before reading, so the bytes that reach the spool were always accounted for.
	if need := b.read + int64(len(p)) - b.reserved; need > 0 && !b.declared {
		if !b.spool.TryTake(need) {
			b.full.Store(true)
			return 0, fmt.Errorf("read upload: %w", errSpoolFull)
		}
		b.reserved += need
	}
	n, err := b.r.Read(p)
	b.read += int64(n)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			b.tooLarge.Store(true)
		}
		if isDeadline(err) {
			b.timedOut.Store(true)
		}
	}
	return n, err
}

// release gives back every byte reserved; call once, after the service returned (the spool
// file is gone by then).
func (b *limitedBody) release() { b.spool.Give(b.reserved) }

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

// getChunk handles GET /v1/chunks/{id}?env=: the stored document, as stored.
func (s *Server) getChunk(w http.ResponseWriter, r *http.Request) {
	env, err := envParam(r)
	if err != nil {
		s.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	id := r.PathValue("id")
	doc, err := s.cfg.Chunks.GetChunk(r.Context(), env, id)
	switch {
	case errors.Is(err, ErrNotFound):
		s.problem(w, r, http.StatusNotFound, fmt.Sprintf("No chunk with id %q in env %s.", id, env))
	case err != nil:
		s.internalError(w, r, "get chunk", err)
	default:
		writeRawJSON(w, http.StatusOK, doc)
	}
}

// healthz handles GET /healthz: the process is up and serving.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeRawJSON(w, http.StatusOK, []byte(`{"status":"ok"}`+"\n"))
}

// readyz handles GET /readyz: it runs every check concurrently under one 2 s deadline.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	type outcome struct {
		name string
		err  error
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	// Buffered for every check, so a check that ignores ctx and returns late never blocks.
	results := make(chan outcome, len(s.cfg.Ready))
	for _, c := range s.cfg.Ready {
		go func() {
			defer func() {
				if p := recover(); p != nil {
					results <- outcome{c.Name, fmt.Errorf("check panicked: %v", p)}
				}
			}()
			results <- outcome{c.Name, c.Check(ctx)}
		}()
	}
	timedOut := fmt.Sprintf("timed out after %s", readyTimeout)
	checks := make(map[string]string, len(s.cfg.Ready))
	for _, c := range s.cfg.Ready {
		checks[c.Name] = timedOut
	}
	failed, pending := 0, len(s.cfg.Ready)
wait:
	for pending > 0 {
		select {
		case o := <-results:
			pending--
			if o.err != nil {
				checks[o.name] = o.err.Error()
				failed++
				s.log.WarnContext(r.Context(), "readiness check failed", "check", o.name, "error", o.err)
			} else {
				checks[o.name] = "ok"
			}
		case <-ctx.Done():
			break wait
		}
	}
	failed += pending
	if failed == 0 {
		s.writeJSON(w, r, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
		return
	}
	s.writeProblem(w, r, problemDoc{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Not ready: %d of %d readiness checks failed or timed out.", failed, len(s.cfg.Ready)),
		Checks: checks,
	})
}
