// Package requirements is the domain core of requirement and feature-request mutations
// (issue 5): the records of the Python requirements service (reference §2), the commands that
// change them, their validation, a pure state machine (Apply), Python-compatible checksums, a
// checksum-chained audit trail, and the Store interface. It imports no storage, broker or HTTP
// code: the stores are in sinks/reqstore (SQLite, AstraDB), the command worker that applies
// commands and projects them into the graph in pipeline.
//
// Commands are plain JSON (schema sluice.command.v1). A worker decodes one with
// DecodeCommand, hands it to Store.ApplyCommand with the JetStream message id, and acks the
// message once the outcome is stored and projected. A refusal (already decided, illegal
// transition, stale version, not found, invalid) is an outcome, not an error: it is recorded
// and returned to the caller, and never dead-lettered.
//
// See README.md for where Sluice deliberately differs from the Python service.
package requirements

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Status is the status of a feature request.
type Status string

// The six statuses of the feature-request schema.
const (
	StatusPending    Status = "pending"
	StatusApproved   Status = "approved"
	StatusRejected   Status = "rejected"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusCancelled  Status = "cancelled"
)

// Statuses returns the six statuses in schema order. The slice is new on every call.
func Statuses() []Status {
	return []Status{StatusPending, StatusApproved, StatusRejected, StatusInProgress, StatusCompleted, StatusCancelled}
}

// Valid reports whether s is one of Statuses().
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusApproved, StatusRejected, StatusInProgress, StatusCompleted, StatusCancelled:
		return true
	}
	return false
}

// ErrNotFound is returned (wrapped) by the Store's single-record reads when no record has the
// requested id.
var ErrNotFound = errors.New("requirements: not found")

// TimestampLayout is how Sluice writes timestamps: RFC 3339 in UTC with microseconds
// ("2025-09-06T21:59:47.664330Z"), the Python isoformat() shape plus a zone. Strings in this
// layout sort in time order, and beside a legacy naive timestamp of the same instant too.
const TimestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// FormatTimestamp formats t in TimestampLayout, in UTC.
func FormatTimestamp(t time.Time) string { return t.UTC().Format(TimestampLayout) }

// ParseTimestamp reads a stored timestamp: RFC 3339 (any fraction, Z or an offset), or a
// legacy naive Python isoformat() ("2025-09-06T21:59:47.664330", seconds or fraction), which
// carries no zone and is read as UTC (the Python service wrote server local time; the zone is
// lost).
func ParseTimestamp(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05.999999999", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("parse timestamp %q: neither RFC 3339 nor a naive ISO 8601 date-time", s)
}

// FeatureRequest is one feature request as stored: the ten keys the Python service stores
// (reference §2.2) plus Sluice's Version and Key. The extra fields a submission may carry
// (category, business_value, …) are validated and, as in Python, not stored.
type FeatureRequest struct {
	// RequestID is "FR-" plus digits; the key of the request.
	RequestID   string `json:"request_id"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Priority    string `json:"priority"`
	Requester   string `json:"requester"`
	Status      Status `json:"status"`
	// CreatedAt and UpdatedAt are kept as stored: naive ISO strings in legacy records,
	// TimestampLayout in Sluice's. UpdatedAt is nil until the first change.
	CreatedAt string  `json:"created_at"`
	UpdatedAt *string `json:"updated_at"`
	// ApprovedBy is the actor of the last decision (also set by a rejection, as in Python).
	ApprovedBy *string `json:"approved_by"`
	// RejectionReason is the reason of a rejection. Sluice never sets it on approval (Python
	// did, when a reason was given; legacy records keep whatever they hold).
	RejectionReason *string `json:"rejection_reason"`
	// Version counts applied mutations: 1 after submission (or import), +1 per decision or
	// transition. Commands may carry it as expected_version.
	Version int64 `json:"version"`
	// Key is the subject key the request's commands are published under (= RequestID).
	Key string `json:"key"`
}

// legacyKeys are the ten keys of a stored Python feature request, in the Python order.
var legacyKeys = [...]string{"request_id", "title", "description", "priority", "requester", "status", "created_at", "updated_at", "approved_by", "rejection_reason"}

func optString(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// LegacyObject returns f as the Python service stores and serves it: exactly the ten keys, in
// the Python order.
func (f FeatureRequest) LegacyObject() *Object {
	return NewObject(
		Member{"request_id", f.RequestID},
		Member{"title", f.Title},
		Member{"description", f.Description},
		Member{"priority", f.Priority},
		Member{"requester", f.Requester},
		Member{"status", string(f.Status)},
		Member{"created_at", f.CreatedAt},
		Member{"updated_at", optString(f.UpdatedAt)},
		Member{"approved_by", optString(f.ApprovedBy)},
		Member{"rejection_reason", optString(f.RejectionReason)},
	)
}

// LegacyJSON returns the file the Python service would write for f: json.dumps(…, indent=2) of
// LegacyObject. For an imported legacy file it is byte-identical to the file.
func (f FeatureRequest) LegacyJSON() []byte {
	b, err := Dumps(f.LegacyObject(), DumpOptions{Indent: 2})
	if err != nil {
		panic(fmt.Sprintf("requirements: LegacyJSON: %v", err)) // only strings and nil: cannot fail
	}
	return b
}

// ParseLegacyFeatureRequest reads a feature request file as stored by the Python service (or
// by LegacyJSON). Unknown keys are ignored; request_id, status and created_at are required and
// status must be one of Statuses(). The result has Version 1 and Key = RequestID.
func ParseLegacyFeatureRequest(b []byte) (FeatureRequest, error) {
	var f FeatureRequest
	if err := json.Unmarshal(b, &f); err != nil {
		return FeatureRequest{}, fmt.Errorf("parse feature request: %w", err)
	}
	var errs []error
	if !requestIDPattern.MatchString(f.RequestID) {
		errs = append(errs, fmt.Errorf("request_id %q does not match %s", f.RequestID, requestIDPattern))
	}
	if !f.Status.Valid() {
		errs = append(errs, fmt.Errorf("status %q is not a feature-request status", f.Status))
	}
	if _, err := ParseTimestamp(f.CreatedAt); err != nil {
		errs = append(errs, fmt.Errorf("created_at: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return FeatureRequest{}, fmt.Errorf("parse feature request: %w", err)
	}
	f.Version, f.Key = 1, f.RequestID
	return f, nil
}

// Version is one immutable requirements version: the stored document in its
// original key order (the checksum depends on it), and the metadata fields pulled out of it.
type Version struct {
	// VersionID is metadata.version_id: Unix milliseconds of the submission.
	VersionID int64 `json:"version_id"`
	// Author is metadata.author, the actor who submitted it (not the body's top-level
	// "author", which stays inside Document).
	Author string `json:"author"`
	// Timestamp is metadata.timestamp as stored (naive in legacy records).
	Timestamp string `json:"timestamp"`
	// Checksum is metadata.checksum: see RequirementsChecksum.
	Checksum string `json:"checksum"`
	// Document is the whole stored document, metadata included, in key order.
	Document *Object `json:"document"`
}

// JSON returns the document as the Python service writes its file: json.dumps(doc, indent=2).
// For an imported legacy file it is byte-identical to the file.
func (v Version) JSON() []byte {
	b, err := Dumps(v.Document, DumpOptions{Indent: 2})
	if err != nil {
		panic(fmt.Sprintf("requirements: Version.JSON: %v", err)) // decoded JSON only
	}
	return b
}

// VerifyChecksum recomputes the document's checksum and reports whether it equals the stored
// one, and the recomputed value.
func (v Version) VerifyChecksum() (bool, string, error) {
	sum, err := RequirementsChecksum(v.Document)
	if err != nil {
		return false, "", err
	}
	return sum == v.Checksum, sum, nil
}

// RequirementsChecksum is the Python service's requirements checksum: the hex SHA-256 of
// json.dumps(doc_without_checksum, indent=2), where doc_without_checksum is doc without
// metadata.checksum (other keys in their order). doc is not modified.
func RequirementsChecksum(doc *Object) (string, error) {
	c := doc.Clone()
	if md, ok := c.Get("metadata"); ok {
		if mdo, ok := md.(*Object); ok {
			mdo.Delete("checksum")
		}
	}
	b, err := Dumps(c, DumpOptions{Indent: 2})
	if err != nil {
		return "", fmt.Errorf("requirements checksum: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// ParseVersion reads a requirements version file as stored by the Python service
// (or by Version.JSON), keeping key order. It needs metadata.version_id (a positive
// integer); metadata.author, timestamp and checksum are read when present. It does not verify
// the checksum (see VerifyChecksum) and accepts the top-level "author" and naive timestamps of
// legacy files.
func ParseVersion(b []byte) (Version, error) {
	v, err := DecodeOrdered(b)
	if err != nil {
		return Version{}, fmt.Errorf("parse requirements version: %w", err)
	}
	doc, ok := v.(*Object)
	if !ok {
		return Version{}, errors.New("parse requirements version: not a JSON object")
	}
	mdv, _ := doc.Get("metadata")
	md, ok := mdv.(*Object)
	if !ok {
		return Version{}, errors.New("parse requirements version: no metadata object")
	}
	rv := Version{Document: doc}
	idv, _ := md.Get("version_id")
	n, ok := idv.(json.Number)
	if ok {
		rv.VersionID, err = strconv.ParseInt(string(n), 10, 64)
	}
	if !ok || err != nil || rv.VersionID < 1 {
		return Version{}, fmt.Errorf("parse requirements version: metadata.version_id %v is not a positive integer", idv)
	}
	rv.Author, _ = md.GetString("author")
	rv.Timestamp, _ = md.GetString("timestamp")
	rv.Checksum, _ = md.GetString("checksum")
	return rv, nil
}

// GetString returns member key of o when it is a string.
func (o *Object) GetString(key string) (string, bool) {
	v, _ := o.Get(key)
	s, ok := v.(string)
	return s, ok
}

// AuditEntry is one line of the audit trail: the Python AuditLogEntry fields plus Seq and
// PrevChecksum, which chain the entries of one request (see AuditChecksum and VerifyChain).
type AuditEntry struct {
	// Seq is the entry's position in its request's chain, from 1; for a feature request it
	// equals the request's Version after the mutation.
	Seq       int64  `json:"seq"`
	Timestamp string `json:"timestamp"`
	// RequestID is the feature request's id, or the decimal version_id of a requirements
	// version.
	RequestID string `json:"request_id"`
	// OldStatus is "" for a submission or import.
	OldStatus string `json:"old_status"`
	// NewStatus is a Status, or "submitted" for a requirements version.
	NewStatus string `json:"new_status"`
	// Admin is the actor: the API token's name (never a body field), or "import".
	Admin  string  `json:"admin"`
	Reason *string `json:"reason"`
	// PrevChecksum is the Checksum of the previous entry of the same RequestID, "" for the
	// first.
	PrevChecksum string `json:"prev_checksum"`
	Checksum     string `json:"checksum"`
}

// NewStatusSubmitted is the NewStatus of a requirements version's audit entry.
const NewStatusSubmitted = "submitted"

// AuditChecksum is the Python audit checksum extended to the chain fields: the hex SHA-256 of
// json.dumps(entry_without_checksum, sort_keys=True) where the entry holds timestamp,
// request_id, old_status, new_status, admin, reason, prev_checksum and seq. Without the last
// two it is exactly the Python formula, which LegacyAuditChecksum computes.
func AuditChecksum(e AuditEntry) string {
	return auditSum(map[string]any{
		"timestamp": e.Timestamp, "request_id": e.RequestID, "old_status": e.OldStatus,
		"new_status": e.NewStatus, "admin": e.Admin, "reason": optString(e.Reason),
		"prev_checksum": e.PrevChecksum, "seq": e.Seq,
	})
}

// LegacyAuditChecksum is the Python service's audit checksum of an entry without chain
// fields: the hex SHA-256 of json.dumps({timestamp, request_id, old_status, new_status, admin,
// reason}, sort_keys=True).
func LegacyAuditChecksum(e AuditEntry) string {
	return auditSum(map[string]any{
		"timestamp": e.Timestamp, "request_id": e.RequestID, "old_status": e.OldStatus,
		"new_status": e.NewStatus, "admin": e.Admin, "reason": optString(e.Reason),
	})
}

func auditSum(m map[string]any) string {
	b, err := Dumps(m, DumpOptions{Indent: -1, SortKeys: true})
	if err != nil {
		panic(fmt.Sprintf("requirements: audit checksum: %v", err)) // strings, int64, nil only
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
