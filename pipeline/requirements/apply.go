package requirements

import (
	"fmt"
	"strconv"
)

// RefusalCode says why a command was refused.
type RefusalCode string

// Refusal codes. Every one is an outcome for the caller (HTTP 409, or 404 for not_found,
// 422 for invalid), never a fault to retry or dead-letter.
const (
	// RefusalAlreadyDecided: the request was already approved or rejected (or has moved on
	// from approved). Retrying can never succeed.
	RefusalAlreadyDecided RefusalCode = "already_decided"
	// RefusalIllegalTransition: the status cannot move to the requested one (e.g. completed
	// before in_progress, anything out of a final status).
	RefusalIllegalTransition RefusalCode = "illegal_transition"
	// RefusalStaleVersion: the command's expected_version is not the request's version;
	// re-read and retry may succeed.
	RefusalStaleVersion RefusalCode = "stale_version"
	// RefusalNotFound: no feature request has the command's request_id.
	RefusalNotFound RefusalCode = "not_found"
	// RefusalAlreadyExists: a submission names a request_id that is already stored.
	RefusalAlreadyExists RefusalCode = "already_exists"
	// RefusalInvalid: the command breaks the schema or a validation rule.
	RefusalInvalid RefusalCode = "invalid"
)

// Refusal is a command that was not applied, with the reason. It is returned as an error by
// Apply and Validator.Check, and carried in Outcome.Refusal by the Store; use errors.As.
type Refusal struct {
	Code    RefusalCode `json:"code"`
	Message string      `json:"message"`
	// CurrentStatus and CurrentVersion describe the stored request when one exists, so a
	// caller can re-read less often.
	CurrentStatus  Status `json:"current_status,omitempty"`
	CurrentVersion int64  `json:"current_version,omitempty"`
}

// Error returns "<code>: <message>".
func (r *Refusal) Error() string { return string(r.Code) + ": " + r.Message }

func refuse(code RefusalCode, f *FeatureRequest, format string, args ...any) *Refusal {
	r := &Refusal{Code: code, Message: fmt.Sprintf(format, args...)}
	if f != nil {
		r.CurrentStatus, r.CurrentVersion = f.Status, f.Version
	}
	return r
}

// State is what Apply reads and writes: the feature request a command names (nil when none is
// stored) and, for requirements submissions, the largest stored version id.
type State struct {
	// Feature is the stored feature request of the command's key, or nil.
	Feature *FeatureRequest
	// LatestVersionID is the largest stored requirements version id, 0 when none.
	LatestVersionID int64
	// Version is set by Apply on a requirements submission: the new version. Input ignores it.
	Version *Version
}

// legal lists the statuses each status may move to through a decision or a transition.
var legal = map[Status][]Status{
	StatusPending:    {StatusApproved, StatusRejected, StatusCancelled},
	StatusApproved:   {StatusInProgress, StatusCancelled},
	StatusInProgress: {StatusCompleted, StatusCancelled},
}

// CanMove reports whether a feature request may move from status from to status to.
func CanMove(from, to Status) bool {
	for _, s := range legal[from] {
		if s == to {
			return true
		}
	}
	return false
}

// Apply applies cmd to s and returns the new state and the audit entry the mutation adds
// (Seq, PrevChecksum and Checksum are left for the store to fill; see ChainEntry). It is a
// pure function: s is not modified, nothing is read but its arguments, and every timestamp
// comes from cmd.IssuedAt, so applying the same command to the same state always gives the
// same result.
//
// A command that must not apply returns a *Refusal (and the unchanged state): not_found,
// already_exists, already_decided, illegal_transition, stale_version, or invalid for a
// command whose type and body do not match. Apply does not run schema validation; see
// Validator.Check. The legal moves are pending → approved | rejected | cancelled,
// approved → in_progress | cancelled and in_progress → completed | cancelled; a decision is
// possible only while pending.
func Apply(s State, cmd Command) (State, AuditEntry, error) {
	if _, err := cmd.body(); err != nil {
		return s, AuditEntry{}, &Refusal{Code: RefusalInvalid, Message: err.Error()}
	}
	at := FormatTimestamp(cmd.IssuedAt)
	switch cmd.Type {
	case TypeSubmitRequirements:
		return applySubmitRequirements(s, cmd, at)
	case TypeSubmitFeatureRequest:
		b := cmd.SubmitFeatureRequest
		if s.Feature != nil {
			return s, AuditEntry{}, refuse(RefusalAlreadyExists, s.Feature, "feature request %s already exists", b.RequestID)
		}
		f := &FeatureRequest{
			RequestID: b.RequestID, Title: b.Title, Description: b.Description, Priority: b.Priority,
			Requester: b.Requester, Status: StatusPending, CreatedAt: at, Version: 1, Key: b.RequestID,
		}
		next := s
		next.Feature = f
		return next, AuditEntry{Timestamp: at, RequestID: f.RequestID, NewStatus: string(StatusPending), Admin: cmd.Actor}, nil
	case TypeDecideFeatureRequest:
		b := cmd.Decide
		var to Status
		switch b.Action {
		case ActionApprove:
			to = StatusApproved
		case ActionReject:
			to = StatusRejected
		default:
			return s, AuditEntry{}, &Refusal{Code: RefusalInvalid, Message: fmt.Sprintf("action %q is not approve or reject", b.Action)}
		}
		f, err := guard(s.Feature, b.RequestID, to, b.ExpectedVersion)
		if err != nil {
			return s, AuditEntry{}, err
		}
		old := f.Status
		f.Status, f.UpdatedAt, f.ApprovedBy = to, &at, &cmd.Actor
		if to == StatusRejected {
			f.RejectionReason = b.Reason
		}
		next := s
		next.Feature = f
		return next, AuditEntry{Timestamp: at, RequestID: f.RequestID, OldStatus: string(old), NewStatus: string(to), Admin: cmd.Actor, Reason: b.Reason}, nil
	default: // TypeTransitionFeatureRequest; body() rejected unknown types
		b := cmd.Transition
		switch b.To {
		case StatusInProgress, StatusCompleted, StatusCancelled:
		default:
			return s, AuditEntry{}, &Refusal{Code: RefusalInvalid, Message: fmt.Sprintf("cannot transition to %q: only in_progress, completed and cancelled", b.To)}
		}
		f, err := guard(s.Feature, b.RequestID, b.To, b.ExpectedVersion)
		if err != nil {
			return s, AuditEntry{}, err
		}
		old := f.Status
		f.Status, f.UpdatedAt = b.To, &at
		next := s
		next.Feature = f
		return next, AuditEntry{Timestamp: at, RequestID: f.RequestID, OldStatus: string(old), NewStatus: string(b.To), Admin: cmd.Actor, Reason: b.Reason}, nil
	}
}

// guard checks a move of stored request cur to status to and returns a copy of cur with its
// version bumped, or a refusal. Legality is checked before the version: a move that can never
// succeed is reported as such, not as stale.
func guard(cur *FeatureRequest, id string, to Status, expected *int64) (*FeatureRequest, error) {
	if cur == nil {
		return nil, refuse(RefusalNotFound, nil, "feature request %s not found", id)
	}
	if !CanMove(cur.Status, to) {
		decision := to == StatusApproved || to == StatusRejected
		switch {
		case decision && cur.Status != StatusCancelled:
			return nil, refuse(RefusalAlreadyDecided, cur, "feature request %s was already decided: it is %s", id, cur.Status)
		default:
			return nil, refuse(RefusalIllegalTransition, cur, "feature request %s cannot move from %s to %s", id, cur.Status, to)
		}
	}
	if expected != nil && *expected != cur.Version {
		return nil, refuse(RefusalStaleVersion, cur, "feature request %s is at version %d, the command expected %d", id, cur.Version, *expected)
	}
	f := *cur
	f.Version++
	return &f, nil
}

func applySubmitRequirements(s State, cmd Command, at string) (State, AuditEntry, error) {
	b := cmd.SubmitRequirements
	// Version ids are Unix milliseconds, as in Python, but never collide: a second submission
	// within the same millisecond gets the next id instead of failing.
	id := max(cmd.IssuedAt.UnixMilli(), s.LatestVersionID+1)
	stakeholders := make([]any, len(b.Stakeholders))
	for i, o := range b.Stakeholders {
		stakeholders[i] = o.Clone()
	}
	criteria := make([]any, len(b.AcceptanceCriteria))
	for i, o := range b.AcceptanceCriteria {
		criteria[i] = o.Clone()
	}
	md := NewObject(
		Member{"version_id", id},
		Member{"author", cmd.Actor},
		Member{"timestamp", at},
		Member{"created_at", float64(cmd.IssuedAt.UnixMicro()) / 1e6},
	)
	doc := NewObject(
		Member{"title", b.Title},
		Member{"version", b.Version},
		Member{"description", b.Description},
		Member{"requirements", b.Requirements.Clone()},
		Member{"stakeholders", stakeholders},
		Member{"acceptance_criteria", criteria},
		Member{"author", b.Author},
		Member{"metadata", md},
	)
	sum, err := RequirementsChecksum(doc)
	if err != nil {
		return s, AuditEntry{}, &Refusal{Code: RefusalInvalid, Message: err.Error()}
	}
	md.Set("checksum", sum)
	next := s
	next.LatestVersionID = id
	next.Version = &Version{VersionID: id, Author: cmd.Actor, Timestamp: at, Checksum: sum, Document: doc}
	return next, AuditEntry{Timestamp: at, RequestID: strconv.FormatInt(id, 10), NewStatus: NewStatusSubmitted, Admin: cmd.Actor}, nil
}
