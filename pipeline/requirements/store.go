package requirements

import (
	"context"
	"errors"
)

// Outcome is what applying one command did. It is recorded with the command's apply marker,
// so a redelivered or resubmitted command gets the same Outcome back (with AlreadyApplied set)
// and is never applied twice.
type Outcome struct {
	CommandID string      `json:"command_id"`
	Type      CommandType `json:"type"`
	// Key is the command's aggregate key (Command.Key).
	Key string `json:"key"`
	// Applied is true when the command changed state (on its first application).
	Applied bool `json:"applied"`
	// AlreadyApplied is true when this call found the command's apply marker and returns the
	// recorded outcome without applying anything. It is never stored.
	AlreadyApplied bool `json:"already_applied,omitempty"`
	// Refusal is set when the command was refused; then Applied is false.
	Refusal *Refusal `json:"refusal,omitempty"`
	// Version is the new requirements version (SubmitRequirements).
	Version *Version `json:"version,omitempty"`
	// Feature is the feature request after the command (feature commands).
	Feature *FeatureRequest `json:"feature,omitempty"`
	// Audit is the audit entry the command appended, chained and checksummed.
	Audit *AuditEntry `json:"audit,omitempty"`
}

// VersionInfo is one row of the versions list (Python: version_id, timestamp, author,
// checksum; file_path is "requirements/{version_id}.json").
type VersionInfo struct {
	VersionID int64  `json:"version_id"`
	Timestamp string `json:"timestamp"`
	Author    string `json:"author"`
	Checksum  string `json:"checksum"`
}

// Paging limits.
const (
	// DefaultFeatureLimit is ListFeatures' page size for Limit <= 0 (Python's default).
	DefaultFeatureLimit = 50
	// DefaultAuditLimit is ListAudit's limit for limit <= 0 (Python's default).
	DefaultAuditLimit = 100
	// MaxListLimit caps every page size.
	MaxListLimit = 1000
)

// FeatureQuery selects a page of feature requests.
type FeatureQuery struct {
	// Status filters by status. Optional; "" means every status.
	Status Status
	// Cursor continues after the last request of a previous page (its NextCursor). Optional;
	// "" starts at the newest.
	Cursor string
	// Limit is the page size. Optional; 0 or negative means DefaultFeatureLimit; above
	// MaxListLimit means MaxListLimit.
	Limit int
}

// FeaturePage is one page of feature requests, newest created_at first (ties by request_id,
// descending).
type FeaturePage struct {
	Features []FeatureRequest `json:"features"`
	// NextCursor continues the listing; "" when this is the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ErrBadCursor is returned (wrapped) by ListFeatures for a cursor it did not make.
var ErrBadCursor = errors.New("requirements: malformed cursor")

// Integrity is the result of verifying the audit trail.
type Integrity struct {
	// Valid is true when Problems is empty.
	Valid bool `json:"integrity_valid"`
	// Problems are "Line N: checksum mismatch", "Line N: chain broken" (see VerifyChain), and
	// "Request R: …" / "Version V: …" when a record's history and its audit entries disagree
	// (an entry was removed from the end of a chain).
	Problems []string `json:"compromised_entries"`
	// Entries is the number of audit entries checked.
	Entries int `json:"entries"`
}

// LegacyFile is one file stored by the Python service: a requirements version
// (requirements/{version_id}.json) or a feature request (features/FR-….json).
type LegacyFile struct {
	// Name is the file's name, for messages.
	Name string
	// Data is the file's content.
	Data []byte
}

// ImportReport says what Import did.
type ImportReport struct {
	Versions []int64  `json:"versions"`
	Features []string `json:"features"`
	// Skipped names files already imported with the same content.
	Skipped []string `json:"skipped,omitempty"`
	// Warnings are kept-but-suspicious findings, e.g. a requirements checksum that does not
	// verify (the Python service only logged those too).
	Warnings []string `json:"warnings,omitempty"`
}

// ImportActor is the audit entry's admin for imported records.
const ImportActor = "import"

// Store keeps requirements versions, feature requests, their audit trail and the apply
// markers of commands. Implementations are safe for concurrent use and keep per-record
// consistency under concurrent ApplyCommand calls (from goroutines or processes). The
// interface carries no storage types, so a document store (AstraDB) can implement it.
type Store interface {
	// ApplyCommand applies cmd exactly once in effect: if an apply marker exists for
	// cmd.CommandID or msgID (the JetStream message id; "" means none), it returns the
	// recorded outcome with AlreadyApplied set and changes nothing. Otherwise it validates
	// cmd, loads the state it names, runs Apply, and writes the new state, the chained audit
	// entry and the apply marker. The SQLite store writes them in one transaction; the AstraDB
	// store, which has none, writes the state first as its commit point and lets a retry
	// complete the rest (see README). A refusal is recorded with its marker too, and returned
	// in Outcome.Refusal with a nil error. After an error the call may be retried with the same
	// arguments (it is transient unless marked fault.Permanent).
	ApplyCommand(ctx context.Context, cmd Command, msgID string) (Outcome, error)
	// CommandOutcome returns the recorded outcome of a command id, or an error wrapping
	// ErrNotFound when it has not been applied (yet).
	CommandOutcome(ctx context.Context, commandID string) (Outcome, error)
	// ListVersions returns every requirements version, newest first.
	ListVersions(ctx context.Context) ([]VersionInfo, error)
	// LatestVersion returns the newest version, or an error wrapping ErrNotFound.
	LatestVersion(ctx context.Context) (Version, error)
	// GetVersion returns version id, or an error wrapping ErrNotFound.
	GetVersion(ctx context.Context, id int64) (Version, error)
	// ListFeatures returns one page of feature requests; a cursor it did not make gives an
	// error wrapping ErrBadCursor.
	ListFeatures(ctx context.Context, q FeatureQuery) (FeaturePage, error)
	// GetFeature returns one feature request, or an error wrapping ErrNotFound.
	GetFeature(ctx context.Context, requestID string) (FeatureRequest, error)
	// ListAudit returns the newest limit audit entries of requestID ("" for all requests),
	// newest first; limit <= 0 means DefaultAuditLimit, capped at MaxListLimit.
	ListAudit(ctx context.Context, requestID string, limit int) ([]AuditEntry, error)
	// VerifyAudit checks the whole audit trail (see Integrity).
	VerifyAudit(ctx context.Context) (Integrity, error)
	// Import stores files written by the Python service, each with one audit entry by
	// ImportActor: all or nothing on SQLite; on AstraDB checked first and written
	// idempotently, so a failed import completes when run again. A file already imported with the same content is skipped; one
	// that conflicts with a stored record fails the import.
	Import(ctx context.Context, files []LegacyFile) (ImportReport, error)
}

// PendingCommand is one command of a batch for BatchApplier.ApplyCommands, with the
// JetStream message id it came in (as for Store.ApplyCommand).
type PendingCommand struct {
	Command Command
	MsgID   string
	// Checked says Command came from Validator.DecodeCommand (the command worker's decode),
	// so the store does not validate it a second time (a third of a command's schema checks;
	// 5% of a busy server's CPU). Leave it false for a command from anywhere else.
	Checked bool
}

// BatchResult is what ApplyCommands did with one command: its Outcome, or the error
// ApplyCommand would have returned for it (then nothing of it was written).
type BatchResult struct {
	Outcome Outcome
	Err     error
}

// BatchApplier is a Store that applies several commands for the cost of one write: the
// command worker groups the commands of different partitions (so of different keys) that
// arrive together. SQLiteStore implements it; AstraStore, which has no transactions and no
// synced commit to share, does not.
type BatchApplier interface {
	// ApplyCommands applies each command exactly as ApplyCommand would, in order, and returns
	// one result per command. Each command succeeds or fails on its own: a failed one leaves
	// nothing behind and the others are written. The commands must have pairwise different
	// keys (their order against each other is not kept by the caller). Safe for concurrent
	// use.
	ApplyCommands(ctx context.Context, cmds []PendingCommand) []BatchResult
}

// ClassifyLegacy reports whether a Python file is a requirements version ("requirements") or
// a feature request ("feature"), by its content: a version has a metadata object, a feature
// request a request_id.
func ClassifyLegacy(data []byte) (string, error) {
	v, err := DecodeOrdered(data)
	if err != nil {
		return "", err
	}
	o, ok := v.(*Object)
	if !ok {
		return "", errors.New("not a JSON object")
	}
	if _, ok := o.Get("metadata"); ok {
		return "requirements", nil
	}
	if _, ok := o.Get("request_id"); ok {
		return "feature", nil
	}
	return "", errors.New("neither a requirements version (metadata) nor a feature request (request_id)")
}
