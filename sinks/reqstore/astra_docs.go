package reqstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// storedAudit is an audit entry as stored: the AuditEntry fields plus the command that wrote
// it and its append-order key.
type storedAudit struct {
	Seq          int64   `json:"seq"`
	Timestamp    string  `json:"timestamp"`
	RequestID    string  `json:"request_id"`
	OldStatus    string  `json:"old_status"`
	NewStatus    string  `json:"new_status"`
	Admin        string  `json:"admin"`
	Reason       *string `json:"reason"`
	PrevChecksum string  `json:"prev_checksum"`
	Checksum     string  `json:"checksum"`
	// CommandID is the command that appended the entry ("" for imports).
	CommandID string `json:"command_id"`
	// Line orders the whole trail: the appending process's clock in nanoseconds (strictly
	// increasing within a process), 19 digits, then "|" and the entry's _id.
	Line string `json:"line"`
}

func (a storedAudit) entry() requirements.AuditEntry {
	return requirements.AuditEntry{Seq: a.Seq, Timestamp: a.Timestamp, RequestID: a.RequestID, OldStatus: a.OldStatus, NewStatus: a.NewStatus,
		Admin: a.Admin, Reason: a.Reason, PrevChecksum: a.PrevChecksum, Checksum: a.Checksum}
}

type auditDoc struct {
	ID   string `json:"_id"`
	Kind string `json:"kind"`
	storedAudit
}

type featureDoc struct {
	ID   string `json:"_id"`
	Kind string `json:"kind"`
	requirements.FeatureRequest
	// SortKey orders ListFeatures: featureSortKey(created_at, request_id).
	SortKey string `json:"sort_key"`
	// LastCommandID is the command that wrote this version ("" for an import).
	LastCommandID string `json:"last_command_id"`
	// Audit is the audit entry of this version, also stored as its own document.
	Audit *storedAudit `json:"audit"`
}

type versionDoc struct {
	ID        string `json:"_id"`
	Kind      string `json:"kind"`
	VersionID int64  `json:"version_id"`
	Author    string `json:"author"`
	Timestamp string `json:"timestamp"`
	Checksum  string `json:"checksum"`
	// Document is the stored document as json.dumps(doc, indent=2): a JSON object would lose
	// its key order, on which the checksum depends.
	Document  string       `json:"document"`
	CommandID string       `json:"command_id"`
	Audit     *storedAudit `json:"audit"`
}

type markerDoc struct {
	ID        string `json:"_id"`
	Kind      string `json:"kind"`
	CommandID string `json:"command_id"`
	MsgID     string `json:"msg_id"`
	// Outcome is the Outcome as JSON text.
	Outcome   string `json:"outcome"`
	AppliedAt string `json:"applied_at"`
}

func versionDocID(id int64) string { return "rv:" + strconv.FormatInt(id, 10) }

func auditDocID(requestID string, seq int64) string {
	return fmt.Sprintf("audit:%s:%010d", requestID, seq)
}

// featureSortKey makes a string whose order is (created_us, request_id): created_us is biased
// to stay non-negative and zero-padded, so one $lt on it is the cursor condition.
func featureSortKey(createdUS int64, requestID string) string {
	return fmt.Sprintf("%019d|%s", createdUS+1<<62, requestID)
}

// lineKey returns the append-order key of an audit entry appended now.
func (s *AstraStore) lineKey(id string) string {
	s.mu.Lock()
	n := max(s.now().UnixNano(), s.lastLine+1, 0)
	s.lastLine = n
	s.mu.Unlock()
	return fmt.Sprintf("%019d|%s", n, id)
}

func (s *AstraStore) newAudit(e requirements.AuditEntry, commandID string) *storedAudit {
	return &storedAudit{Seq: e.Seq, Timestamp: e.Timestamp, RequestID: e.RequestID, OldStatus: e.OldStatus, NewStatus: e.NewStatus,
		Admin: e.Admin, Reason: e.Reason, PrevChecksum: e.PrevChecksum, Checksum: e.Checksum,
		CommandID: commandID, Line: s.lineKey(auditDocID(e.RequestID, e.Seq))}
}

func newFeatureDoc(f requirements.FeatureRequest, commandID string, a *storedAudit) (featureDoc, error) {
	created, err := requirements.ParseTimestamp(f.CreatedAt)
	if err != nil {
		return featureDoc{}, fmt.Errorf("feature request %s: %w", f.RequestID, err)
	}
	return featureDoc{ID: f.RequestID, Kind: kindFeature, FeatureRequest: f, SortKey: featureSortKey(created.UnixMicro(), f.RequestID),
		LastCommandID: commandID, Audit: a}, nil
}

func newVersionDoc(v requirements.Version, commandID string, a *storedAudit) versionDoc {
	return versionDoc{ID: versionDocID(v.VersionID), Kind: kindVersion, VersionID: v.VersionID, Author: v.Author, Timestamp: v.Timestamp,
		Checksum: v.Checksum, Document: string(v.JSON()), CommandID: commandID, Audit: a}
}

func (d versionDoc) version() (requirements.Version, error) {
	v, err := requirements.ParseVersion([]byte(d.Document))
	if err != nil {
		return requirements.Version{}, fmt.Errorf("stored requirements version %d: %w", d.VersionID, err)
	}
	return v, nil
}

func isAlreadyExists(err error) bool {
	var ae *dataapi.APIError
	return errors.As(err, &ae) && ae.Code == dataapi.CodeDocumentAlreadyExists
}

func encodeDoc(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fault.Permanent(fault.Validation, fmt.Errorf("encode document: %w", err))
	}
	return b, nil
}

// findByID reads the document _id into dst; found is false when there is none (or it is
// not of kind).
func (s *AstraStore) findByID(ctx context.Context, id, kind string, dst any) (bool, error) {
	raw, err := s.c.FindOne(ctx, s.coll, map[string]any{"_id": id}, nil)
	if errors.Is(err, dataapi.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", id, err)
	}
	var k struct {
		Kind string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &k); err != nil || k.Kind != kind {
		return false, nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return false, fmt.Errorf("decode %s: %w", id, err)
	}
	return true, nil
}
