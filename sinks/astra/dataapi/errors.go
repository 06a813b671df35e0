package dataapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// ErrNotFound is returned (wrapped) by FindOne when no document matches.
var ErrNotFound = errors.New("astra: document not found")

// Data API error codes Sluice branches on (reference data-api.md §6).
const (
	CodeDocumentAlreadyExists      = "DOCUMENT_ALREADY_EXISTS"
	CodeShredDocLimitViolation     = "SHRED_DOC_LIMIT_VIOLATION"
	CodeUnknownCollection          = "UNKNOWN_COLLECTION_OR_TABLE"
	CodeUnknownKeyspace            = "UNKNOWN_KEYSPACE"
	CodeExistingCollectionSettings = "EXISTING_COLLECTION_DIFFERENT_SETTINGS"
	CodeMissingToken               = "MISSING_AUTHENTICATION_TOKEN"
	CodeUnauthenticated            = "UNAUTHENTICATED_REQUEST"
	CodeUnauthorized               = "UNAUTHORIZED_ACCESS"
)

// retryableCodes are the codes the server marks as safe (or worth) retrying, reference
// data-api.md §6. UNKNOWN_KEYSPACE is retryable only in the SERVER family (a DB-side race).
var retryableCodes = map[string]bool{
	"TIMEOUT_WRITING_DATA":          true,
	"TIMEOUT_READING_DATA":          true,
	"UNAVAILABLE_DATABASE":          true,
	"FAILED_WRITE_REQUEST":          true,
	"FAILED_READ_REQUEST":           true,
	"FAILED_COMPARE_AND_SET":        true,
	"FAILED_CONCURRENT_OPERATIONS":  true,
	"FAILED_TO_CONNECT_TO_DATABASE": true,
	"FAILED_TO_READ_METADATA":       true,
	"COUNT_READ_FAILED":             true,
	"FAILED_TRUNCATION":             true,
	"UNEXPECTED_DRIVER_ERROR":       true,
	"UNEXPECTED_SERVER_ERROR":       true,
	"INTERNAL_SERVER_ERROR":         true,
}

// APIError is one error object of a Data API response envelope (reference data-api.md §1.4).
// It never holds the token: the client redacts it from Message should a server echo it.
type APIError struct {
	// Code is the errorCode, e.g. DOCUMENT_ALREADY_EXISTS.
	Code string
	// Message is the server's human-readable text.
	Message string
	// Family is REQUEST or SERVER.
	Family string
	// Scope is e.g. DOCUMENT, SCHEMA, SECURITY, DATABASE, or "" when unscoped.
	Scope string
	// DocumentIDs are the _ids the error applies to (per-document failures), as the raw
	// JSON text of each id decoded to a string when it is a JSON string.
	DocumentIDs []string
	// HTTPStatus is the response's HTTP status (200 for most errors, 401 for auth).
	HTTPStatus int
}

// Error returns "data api CODE: message", plus the document ids when there are any.
func (e *APIError) Error() string {
	var b strings.Builder
	b.WriteString("data api ")
	b.WriteString(e.Code)
	if e.HTTPStatus != 0 && e.HTTPStatus != http.StatusOK {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(strings.TrimSpace(e.Message))
	}
	if len(e.DocumentIDs) > 0 {
		fmt.Fprintf(&b, " (documents %q)", e.DocumentIDs)
	}
	return b.String()
}

// Retryable reports whether the server says retrying may succeed: the codes of reference
// data-api.md §6 that are marked retryable, and UNKNOWN_KEYSPACE in the SERVER family.
func (e *APIError) Retryable() bool {
	if e.Code == CodeUnknownKeyspace {
		return e.Family == "SERVER"
	}
	return retryableCodes[e.Code]
}

// isAuth reports whether e is a credentials failure.
func (e *APIError) isAuth() bool {
	switch e.Code {
	case CodeMissingToken, CodeUnauthenticated, CodeUnauthorized:
		return true
	}
	return e.HTTPStatus == http.StatusUnauthorized || e.HTTPStatus == http.StatusForbidden
}

// classify wraps e with its fault class: auth failures fault.Auth, limit violations
// fault.Limit, retryable codes transient, everything else fault.Rejected.
func (e *APIError) classify() error {
	switch {
	case e.isAuth():
		return fault.Permanent(fault.Auth, e)
	case e.Retryable():
		return fault.Retry(fault.Transient, e)
	case e.Code == CodeShredDocLimitViolation:
		return fault.Permanent(fault.Limit, e)
	default:
		return fault.Permanent(fault.Rejected, e)
	}
}

// HTTPError is a response whose status is not 200 and whose body is not a Data API
// envelope: a gateway's 429 or 5xx, a 404 for a wrong path, a 413 for a body over 20 MB.
// The body is not kept (it may be an HTML page of arbitrary size).
type HTTPError struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// RetryAfter is the Retry-After delay the response asked for, or 0.
	RetryAfter time.Duration
}

// Error returns "data api: HTTP 503 Service Unavailable".
func (e *HTTPError) Error() string {
	return fmt.Sprintf("data api: HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

// Retryable reports whether the status is transient: 408, 429 and every 5xx.
func (e *HTTPError) Retryable() bool {
	return e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests ||
		e.StatusCode >= 500
}

func (e *HTTPError) classify() error {
	switch {
	case e.StatusCode == http.StatusUnauthorized || e.StatusCode == http.StatusForbidden:
		return fault.Permanent(fault.Auth, e)
	case e.StatusCode == http.StatusRequestEntityTooLarge:
		return fault.Permanent(fault.Limit, e)
	case e.Retryable():
		return fault.Retry(fault.Transient, e)
	default:
		return fault.Permanent(fault.Rejected, e)
	}
}

// classifyAll classifies the whole-request errors errs as one error: transient only when
// every one is retryable, else permanent with the class of the first non-retryable one.
func classifyAll(errs []*APIError) error {
	if len(errs) == 1 {
		return errs[0].classify()
	}
	joined := make([]error, len(errs))
	var perm error
	for i, e := range errs {
		joined[i] = e
		if !e.Retryable() && perm == nil {
			perm = e.classify()
		}
	}
	all := errors.Join(joined...)
	if perm != nil {
		return fault.Permanent(fault.ClassOf(perm), all)
	}
	return fault.Retry(fault.Transient, all)
}

// ctxErr returns ctx's error wrapped as transient: a cancelled call is never permanent.
func ctxErr(ctx context.Context, what string) error {
	return fault.Retry(fault.Transient, fmt.Errorf("%s: %w", what, context.Cause(ctx)))
}
