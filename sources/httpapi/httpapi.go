// Package httpapi is Sluice's HTTP API: it accepts chunk files as load jobs and reports,
// follows and rolls back those jobs; serves stored chunks, the graph, requirements and dead
// letters; streams the change feed; and exposes health, readiness and Prometheus metrics.
//
// The package declares the small interfaces it calls beside the handlers that call them
// (JobService, ChunkReader, EventSource, ...); the pipeline and the stores implement them.
// Errors are RFC 9457 application/problem+json documents. Requests are authenticated with
// bearer tokens (see Token and Scope); without tokens the server only listens on a loopback
// address.
//
// Where to look: server.go holds the Server, its routes and the outer middleware. Each route
// family has its file: jobs.go (/v1/jobs; upload.go bounds an upload's body), chunks.go,
// graph.go, requirements.go (commands) and requirements_read.go (compat.go: the Python
// service's /api routes), dlq.go, events.go (/v1/events, /v1/ws), health.go (/healthz,
// /readyz). auth.go, limits.go, params.go, problem.go and unavailable.go serve them all.
package httpapi

import "errors"

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

// ErrConflict is wrapped by services for a request that conflicts with the resource's state
// (rolling back a job that is still running): 409.
var ErrConflict = errors.New("conflict")
