// Package httpapi is Sluice's HTTP API: it accepts chunk files as load jobs, reports job state,
// serves stored chunks, and exposes health, readiness and Prometheus metrics.
//
// The package declares the small interfaces it calls (JobService, ChunkReader); the pipeline and
// the stores implement them. Errors are RFC 9457 application/problem+json documents. Requests are
// authenticated with bearer tokens (see Token and Scope); without tokens the server only listens
// on a loopback address.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/sluice-dev/sluice/pipeline/jobs"
)

// ErrNotFound is returned (wrapped) by JobService.GetJob and ChunkReader.GetChunk when the
// requested job or chunk does not exist. The API answers 404.
var ErrNotFound = errors.New("not found")

// ErrBadRequest is wrapped by JobService.SubmitJob errors that are the client's fault: an
// unreadable or malformed chunk file, an empty file, a bad file name. The API answers 400
// (413 when it also wraps files.ErrTooLarge: a compressed file unpacks past the limit) and
// shows the error's text to the client, so that text must say clearly what was wrong and must
// not contain internals.
var ErrBadRequest = errors.New("bad request")

// ErrBusy is wrapped by JobService.SubmitJob when the server refuses a new job for now, before
// opening it, because its publish scheduler is full (admission control). The API answers 503
// with Retry-After: 1; nothing was created, so sending the same request again is safe.
var ErrBusy = errors.New("busy")

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

// ChunkReader reads stored chunk documents. Implementations must be safe for concurrent use.
type ChunkReader interface {
	// GetChunk returns the stored document with id in env's collection, as JSON, or an error
	// wrapping ErrNotFound. It may block on I/O and honours ctx. The caller owns the result.
	GetChunk(ctx context.Context, env, id string) (json.RawMessage, error)
}

// Check is one readiness check run by GET /readyz.
type Check struct {
	// Name identifies the check in the /readyz answer. Required, unique.
	Name string
	// Check returns nil when the dependency is ready. It is called concurrently with the other
	// checks and must honour ctx, which carries a 2 s deadline. Its error text is shown in the
	// /readyz answer, which needs no authentication: keep secrets out of it. Required.
	Check func(ctx context.Context) error
}
