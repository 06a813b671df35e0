// Package fault classifies failures as permanent or transient. Sinks, readers and handlers
// mark what can never succeed with Permanent; everything unmarked is retried. Classification
// is by type (errors.As), never by error text.
package fault

import (
	"errors"
	"fmt"
)

// Class names why something failed. It is recorded in dead letters and used as a metrics
// label, so the set is small and fixed.
type Class string

// The classes Sluice records.
const (
	// Validation: the message or item breaks the contract (no id, wrong type, empty content,
	// schema violation). Permanent.
	Validation Class = "validation"
	// Limit: the document breaks a store limit (string, array, depth, size). Permanent.
	Limit Class = "limit"
	// Rejected: the store refused the document for a reason retrying cannot fix. Permanent.
	Rejected Class = "rejected"
	// Auth: the store refused our credentials (permanent until an operator fixes them), or a
	// command or rollback lacks the API's valid signature (pipeline/sign: permanent, a forged
	// message never becomes genuine).
	Auth Class = "auth"
	// Transient: timeouts, overload, connection loss, retryable store codes.
	Transient Class = "transient"
	// Exhausted: a transient failure that kept failing until the delivery limit.
	Exhausted Class = "exhausted"
)

// Error is a classified failure. Use Permanent or Retry to build one.
type Error struct {
	Class     Class
	permanent bool
	Err       error
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Permanent marks err as one that can never succeed, with class c. A nil err gives nil.
func Permanent(c Class, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Class: c, permanent: true, Err: err}
}

// Permanentf is Permanent with a formatted error.
func Permanentf(c Class, format string, args ...any) error {
	return Permanent(c, fmt.Errorf(format, args...))
}

// Retry marks err as transient with class c (Transient when c is empty). Unmarked errors are
// transient too; Retry exists to attach a class. A nil err gives nil.
func Retry(c Class, err error) error {
	if err == nil {
		return nil
	}
	if c == "" {
		c = Transient
	}
	return &Error{Class: c, Err: err}
}

// IsPermanent reports whether err, or any error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.permanent
}

// ClassOf returns the class of the outermost classified error in err's chain, or Transient
// for an unclassified non-nil error, or "" for nil.
func ClassOf(err error) Class {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Transient
}
