package reqstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// DefaultAstraCollection is AstraConfig.Collection's default.
const DefaultAstraCollection = "sluice_requirements"

// defaultConflictRetries is AstraConfig.ConflictRetries' default.
const defaultConflictRetries = 8

// Document kinds: every document of the collection carries one in its "kind" field.
const (
	kindFeature = "feature_request"
	kindVersion = "requirements_version"
	kindAudit   = "audit"
	kindMarker  = "marker"
)

// astraIndexDeny lists the fields no query filters or sorts on: free text and whole documents,
// which may exceed the Data API's 8000-byte limit for indexed strings and would only cost
// index space. Changing it changes the collection's options, so an existing collection then
// fails OpenAstra with EXISTING_COLLECTION_DIFFERENT_SETTINGS.
var astraIndexDeny = []string{"title", "description", "rejection_reason", "reason", "document", "outcome", "audit"}

// errConflict is a conditional write that found another writer's document: re-read and retry.
var errConflict = errors.New("requirements: concurrent writer")

// AstraConfig configures an AstraStore. The zero value of each optional field means its
// default.
type AstraConfig struct {
	// Client sends the Data API commands. Required. The store does not close it.
	Client *dataapi.Client
	// Collection is the one collection holding every document (feature requests, requirements
	// versions, audit entries, apply markers). Optional; "" means DefaultAstraCollection.
	Collection string
	// Validator checks every command in ApplyCommand. Optional; nil compiles the embedded
	// schemas at open.
	Validator *requirements.Validator
	// Now is the clock for apply markers' applied_at and the audit entries' append order.
	// Optional; nil means time.Now.
	Now func() time.Time
	// ConflictRetries is how many times ApplyCommand re-reads and re-applies after a
	// conditional write lost to a concurrent writer of the same key, before it returns a
	// transient error. Optional; 0 means 8; negative is invalid.
	ConflictRetries int
}

// Validate reports every problem with c at once. It does not contact the server.
func (c AstraConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("requirements: AstraConfig.Client is required"))
	}
	if c.ConflictRetries < 0 {
		errs = append(errs, fmt.Errorf("requirements: AstraConfig.ConflictRetries is %d, want >= 0", c.ConflictRetries))
	}
	return errors.Join(errs...)
}

// AstraStore is the Store on one AstraDB collection, through the Data API. Every record is a
// document with a "kind" and a deterministic _id:
//
//	feature_request       _id = request_id
//	requirements_version  _id = "rv:<version_id>"
//	audit                 _id = "audit:<request_id>:<seq, 10 digits>"   (insert only)
//	marker                _id = "cmd:<command_id>" and "marker:<message id>"
//
// The Data API has no multi-document transactions. ApplyCommand is exactly-once in effect
// anyway: the record's document (feature request or requirements version) is the commit
// point, written with a conditional single-document write, and carries the command id and the
// audit entry it adds; the audit document and the apply markers are derived from it and
// written after it, idempotently, so a retry after a crash at any point completes them. See
// README.md ("AstraDB").
//
// It is safe for concurrent use, from goroutines and from processes sharing the collection.
type AstraStore struct {
	c               *dataapi.Client
	coll            string
	v               *requirements.Validator
	now             func() time.Time
	conflictRetries int

	closed atomic.Bool

	mu       sync.Mutex // guards lastLine
	lastLine int64
}

// OpenAstra returns a store on cfg.Collection, creating the collection when it is missing
// (idempotent; an existing collection with other indexing options is an error). It blocks
// for the round trip and honours ctx. Close marks the store closed; cfg.Client stays the
// caller's.
func OpenAstra(ctx context.Context, cfg AstraConfig) (*AstraStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Collection == "" {
		cfg.Collection = DefaultAstraCollection
	}
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = defaultConflictRetries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Validator == nil {
		v, err := requirements.NewValidator()
		if err != nil {
			return nil, err
		}
		cfg.Validator = v
	}
	if err := cfg.Client.CreateCollection(ctx, cfg.Collection, dataapi.CollectionOptions{IndexingDeny: slices.Clone(astraIndexDeny)}); err != nil {
		return nil, fmt.Errorf("requirements: open astra store: %w", err)
	}
	return &AstraStore{c: cfg.Client, coll: cfg.Collection, v: cfg.Validator, now: cfg.Now, conflictRetries: cfg.ConflictRetries}, nil
}

// Close marks the store closed: later calls return ErrClosed. It does not wait for calls
// already running and does not close the Client. It is idempotent and returns nil.
func (s *AstraStore) Close() error {
	s.closed.Store(true)
	return nil
}

func (s *AstraStore) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// ---- documents ----

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

// ---- ApplyCommand ----

// ApplyCommand implements Store without a multi-document transaction:
//
//  1. An apply marker for cmd.CommandID or msgID returns the recorded outcome.
//  2. The record cmd names is read. If it was written by this very command (its
//     last_command_id, or a requirements version's command_id), an earlier attempt stopped
//     after its commit point: the outcome is rebuilt from the record and step 5 follows.
//  3. Apply runs. A refusal goes to step 5.
//  4. The new record, carrying its audit entry and the command id, is written conditionally:
//     findOneAndReplace on {_id, version: previous}, or insertOne for a new record. A miss
//     means a concurrent writer of the same key: re-read and go to step 2, at most
//     AstraConfig.ConflictRetries times, then a transient error. Then the audit entry is
//     inserted as its own document (with the previous entry, in case its writer stopped
//     before doing so); DOCUMENT_ALREADY_EXISTS with the same checksum is success.
//  5. The markers cmd:<command_id> and marker:<msgID> are inserted with the outcome.
//
// A crash anywhere leaves either nothing, or a committed record whose audit entry and
// markers the redelivery completes; the record is never written twice. An error is transient
// unless marked fault.Permanent; the call may be retried. It blocks for 3 to 7 Data API round
// trips.
func (s *AstraStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var markers []string
	if cmd.CommandID != "" {
		markers = append(markers, "cmd:"+cmd.CommandID)
	}
	if msgID != "" {
		markers = append(markers, "marker:"+msgID)
	}
	if out, ok, err := s.recorded(ctx, cmd, msgID, markers); err != nil || ok {
		return out, err
	}
	out := requirements.Outcome{CommandID: cmd.CommandID, Type: cmd.Type, Key: cmd.Key()}
	if err := s.v.Check(cmd); err != nil {
		if !errors.As(err, &out.Refusal) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: validate: %w", cmd.CommandID, err)
		}
		return s.writeMarkers(ctx, cmd, msgID, markers, out)
	}
	for attempt := 0; ; attempt++ {
		var err error
		if cmd.Type == requirements.TypeSubmitRequirements {
			err = s.applyVersion(ctx, cmd, &out)
		} else {
			err = s.applyFeature(ctx, cmd, &out)
		}
		if errors.Is(err, errConflict) {
			if attempt < s.conflictRetries {
				continue
			}
			return requirements.Outcome{}, fault.Retry(fault.Transient, fmt.Errorf("apply command %s: lost %d conditional writes to concurrent writers: %w", cmd.CommandID, attempt+1, err))
		}
		if err != nil {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		return s.writeMarkers(ctx, cmd, msgID, markers, out)
	}
}

// recorded looks the markers up. When one exists it returns its outcome with AlreadyApplied
// set, after inserting the other marker if it belongs to the same command and is missing
// (an earlier attempt stopped between the two).
func (s *AstraStore) recorded(ctx context.Context, cmd requirements.Command, msgID string, markers []string) (requirements.Outcome, bool, error) {
	if len(markers) == 0 {
		return requirements.Outcome{}, false, nil
	}
	ids := make([]any, len(markers))
	for i, m := range markers {
		ids[i] = m
	}
	docs, _, err := s.c.FindPage(ctx, s.coll, map[string]any{"_id": map[string]any{"$in": ids}}, dataapi.FindOptions{})
	if err != nil {
		return requirements.Outcome{}, false, fmt.Errorf("apply command %s: read apply markers: %w", cmd.CommandID, err)
	}
	found := map[string]markerDoc{}
	for _, raw := range docs {
		var m markerDoc
		if err := json.Unmarshal(raw, &m); err != nil {
			return requirements.Outcome{}, false, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode apply marker: %w", cmd.CommandID, err))
		}
		found[m.ID] = m
	}
	if len(found) == 0 {
		return requirements.Outcome{}, false, nil
	}
	var m markerDoc
	for _, id := range markers { // the command's own marker first
		if d, ok := found[id]; ok {
			m = d
			break
		}
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(m.Outcome), &out); err != nil {
		return requirements.Outcome{}, false, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome: %w", cmd.CommandID, err))
	}
	if out.CommandID == cmd.CommandID && len(found) < len(markers) {
		if _, err := s.writeMarkers(ctx, cmd, msgID, markers, out); err != nil {
			return requirements.Outcome{}, false, err
		}
	}
	out.AlreadyApplied = true
	return out, true, nil
}

// writeMarkers inserts the apply markers of out. A marker already stored with another
// outcome (a concurrent attempt of the same message recorded first) wins: its outcome is
// returned with AlreadyApplied set.
func (s *AstraStore) writeMarkers(ctx context.Context, cmd requirements.Command, msgID string, markers []string, out requirements.Outcome) (requirements.Outcome, error) {
	if len(markers) == 0 {
		return out, nil
	}
	body, err := json.Marshal(out)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: encode outcome: %w", cmd.CommandID, err)
	}
	at := requirements.FormatTimestamp(s.now())
	for _, id := range markers {
		doc, err := encodeDoc(markerDoc{ID: id, Kind: kindMarker, CommandID: cmd.CommandID, MsgID: msgID, Outcome: string(body), AppliedAt: at})
		if err != nil {
			return requirements.Outcome{}, err
		}
		err = s.c.InsertOne(ctx, s.coll, doc)
		if err == nil {
			continue
		}
		if !isAlreadyExists(err) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: write apply marker %s: %w", cmd.CommandID, id, err)
		}
		var prev markerDoc
		ok, rerr := s.findByID(ctx, id, kindMarker, &prev)
		if rerr != nil || !ok {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: apply marker %s exists but cannot be read (%v): %w", cmd.CommandID, id, rerr, err)
		}
		if prev.Outcome == string(body) {
			continue // our own earlier attempt
		}
		var rec requirements.Outcome
		if err := json.Unmarshal([]byte(prev.Outcome), &rec); err != nil {
			return requirements.Outcome{}, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome of %s: %w", cmd.CommandID, id, err))
		}
		rec.AlreadyApplied = true
		return rec, nil
	}
	return out, nil
}

// insertAudit stores entries as audit documents. The last one is the caller's own: if it is
// already stored, it must carry the same checksum (an earlier attempt wrote it); the others
// are previous entries written again in case their writer stopped before storing them.
func (s *AstraStore) insertAudit(ctx context.Context, entries ...*storedAudit) error {
	docs := make([]json.RawMessage, 0, len(entries))
	for _, a := range entries {
		d, err := encodeDoc(auditDoc{ID: auditDocID(a.RequestID, a.Seq), Kind: kindAudit, storedAudit: *a})
		if err != nil {
			return err
		}
		docs = append(docs, d)
	}
	errs, err := s.c.InsertMany(ctx, s.coll, docs)
	if err != nil {
		return fmt.Errorf("append audit entries: %w", err)
	}
	for i, e := range errs {
		if e == nil {
			continue
		}
		if !isAlreadyExists(e) {
			return fmt.Errorf("append audit entry %s/%d: %w", entries[i].RequestID, entries[i].Seq, e)
		}
		if i != len(entries)-1 {
			continue // a previous entry already there, as it should be
		}
		id := auditDocID(entries[i].RequestID, entries[i].Seq)
		var got auditDoc
		ok, rerr := s.findByID(ctx, id, kindAudit, &got)
		if rerr != nil {
			return fmt.Errorf("append audit entry %s: %w", id, rerr)
		}
		if !ok || got.Checksum != entries[i].Checksum {
			return fault.Permanent(fault.Rejected, fmt.Errorf("append audit entry %s: a different entry is stored under its id (the trail was edited)", id))
		}
	}
	return nil
}

// applyFeature runs steps 2-4 for a feature-request command, filling out. It returns
// errConflict when a concurrent writer got there first.
func (s *AstraStore) applyFeature(ctx context.Context, cmd requirements.Command, out *requirements.Outcome) error {
	var cur featureDoc
	found, err := s.findByID(ctx, cmd.Key(), kindFeature, &cur)
	if err != nil {
		return err
	}
	if found && cur.LastCommandID == cmd.CommandID && cur.Audit != nil {
		// Committed by an earlier attempt that stopped before its audit document or markers.
		if err := s.insertAudit(ctx, cur.Audit); err != nil {
			return err
		}
		f, e := cur.FeatureRequest, cur.Audit.entry()
		out.Applied, out.Refusal, out.Feature, out.Audit = true, nil, &f, &e
		return nil
	}
	var st requirements.State
	var prev *requirements.AuditEntry
	if found {
		f := cur.FeatureRequest
		st.Feature = &f
		if cur.Audit != nil {
			p := cur.Audit.entry()
			prev = &p
		}
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		out.Refusal = nil
		if errors.As(err, &out.Refusal) {
			out.Applied, out.Feature, out.Audit = false, nil, nil
			return nil
		}
		return err
	}
	chained := s.newAudit(requirements.ChainEntry(prev, entry), cmd.CommandID)
	doc, err := newFeatureDoc(*next.Feature, cmd.CommandID, chained)
	if err != nil {
		return fault.Permanent(fault.Validation, err)
	}
	raw, err := encodeDoc(doc)
	if err != nil {
		return err
	}
	if !found {
		if err := s.c.InsertOne(ctx, s.coll, raw); err != nil {
			if isAlreadyExists(err) {
				return errConflict
			}
			return fmt.Errorf("insert feature request %s: %w", doc.ID, err)
		}
	} else {
		res, err := s.c.FindOneAndReplace(ctx, s.coll, map[string]any{"_id": doc.ID, "version": cur.Version}, raw, false)
		if err != nil {
			return fmt.Errorf("replace feature request %s at version %d: %w", doc.ID, cur.Version, err)
		}
		if res.Matched == 0 {
			return errConflict
		}
	}
	toStore := []*storedAudit{chained}
	if found && cur.Audit != nil {
		toStore = []*storedAudit{cur.Audit, chained}
	}
	if err := s.insertAudit(ctx, toStore...); err != nil {
		return err
	}
	e := chained.entry()
	out.Applied, out.Refusal, out.Feature, out.Audit = true, nil, next.Feature, &e
	return nil
}

// applyVersion runs steps 2-4 for a requirements submission, filling out. It returns
// errConflict when a concurrent submission took the same version id.
func (s *AstraStore) applyVersion(ctx context.Context, cmd requirements.Command, out *requirements.Outcome) error {
	var mine versionDoc
	raw, err := s.c.FindOne(ctx, s.coll, map[string]any{"kind": kindVersion, "command_id": cmd.CommandID}, nil)
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &mine); err != nil {
			return fmt.Errorf("decode requirements version of command %s: %w", cmd.CommandID, err)
		}
		v, err := mine.version()
		if err != nil {
			return err
		}
		if mine.Audit == nil {
			return fault.Permanent(fault.Rejected, fmt.Errorf("requirements version %d has no audit entry", mine.VersionID))
		}
		if err := s.insertAudit(ctx, mine.Audit); err != nil {
			return err
		}
		e := mine.Audit.entry()
		out.Applied, out.Refusal, out.Version, out.Audit = true, nil, &v, &e
		return nil
	case !errors.Is(err, dataapi.ErrNotFound):
		return fmt.Errorf("read requirements version of command %s: %w", cmd.CommandID, err)
	}
	latest, found, err := s.latestVersionDoc(ctx, map[string]any{"document": 0})
	if err != nil {
		return err
	}
	var st requirements.State
	if found {
		st.LatestVersionID = latest.VersionID
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		out.Refusal = nil
		if errors.As(err, &out.Refusal) {
			out.Applied, out.Version, out.Audit = false, nil, nil
			return nil
		}
		return err
	}
	chained := s.newAudit(requirements.ChainEntry(nil, entry), cmd.CommandID)
	doc, err := encodeDoc(newVersionDoc(*next.Version, cmd.CommandID, chained))
	if err != nil {
		return err
	}
	if err := s.c.InsertOne(ctx, s.coll, doc); err != nil {
		if isAlreadyExists(err) {
			return errConflict
		}
		return fmt.Errorf("insert requirements version %d: %w", next.Version.VersionID, err)
	}
	toStore := []*storedAudit{chained}
	if found && latest.Audit != nil {
		toStore = []*storedAudit{latest.Audit, chained}
	}
	if err := s.insertAudit(ctx, toStore...); err != nil {
		return err
	}
	e := chained.entry()
	out.Applied, out.Refusal, out.Version, out.Audit = true, nil, next.Version, &e
	return nil
}

func (s *AstraStore) latestVersionDoc(ctx context.Context, projection any) (versionDoc, bool, error) {
	raw, err := s.c.FindOne(ctx, s.coll, map[string]any{"kind": kindVersion}, &dataapi.FindOneOptions{Sort: map[string]any{"version_id": -1}, Projection: projection})
	if errors.Is(err, dataapi.ErrNotFound) {
		return versionDoc{}, false, nil
	}
	if err != nil {
		return versionDoc{}, false, fmt.Errorf("read latest requirements version: %w", err)
	}
	var d versionDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		return versionDoc{}, false, fmt.Errorf("decode latest requirements version: %w", err)
	}
	return d, true, nil
}

// ---- reads ----

// CommandOutcome implements Store. It blocks for one round trip.
func (s *AstraStore) CommandOutcome(ctx context.Context, commandID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var m markerDoc
	ok, err := s.findByID(ctx, "cmd:"+commandID, kindMarker, &m)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("read outcome of command %s: %w", commandID, err)
	}
	if !ok {
		return requirements.Outcome{}, fmt.Errorf("outcome of command %s: %w", commandID, requirements.ErrNotFound)
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(m.Outcome), &out); err != nil {
		return requirements.Outcome{}, fmt.Errorf("decode outcome of command %s: %w", commandID, err)
	}
	return out, nil
}

// findDesc returns up to n documents (n <= 0: all) matching filter, sorted by field
// descending, starting below after (nil: from the top). A sorted find returns one page and no
// page state, so it pages with a "$lt" condition on field, which must be unique among the
// matches. Each page sorts its candidates in memory on the server (at most 10,000).
func (s *AstraStore) findDesc(ctx context.Context, filter map[string]any, field string, after any, n int, projection any) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for n <= 0 || len(out) < n {
		f := maps.Clone(filter)
		if after != nil {
			f[field] = map[string]any{"$lt": after}
		}
		opts := dataapi.FindOptions{Sort: map[string]any{field: -1}, Projection: projection}
		if n > 0 {
			opts.Limit = n - len(out)
		}
		docs, _, err := s.c.FindPage(ctx, s.coll, f, opts)
		if err != nil {
			return nil, err
		}
		if len(docs) == 0 {
			break
		}
		out = append(out, docs...)
		var last map[string]json.RawMessage
		if err := json.Unmarshal(docs[len(docs)-1], &last); err != nil {
			return nil, fmt.Errorf("decode page: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(last[field]))
		dec.UseNumber()
		after = nil
		if err := dec.Decode(&after); err != nil || after == nil {
			return nil, fmt.Errorf("page ends with a document without %s", field)
		}
	}
	return out, nil
}

// ListVersions implements Store. It pages through the versions, newest first.
func (s *AstraStore) ListVersions(ctx context.Context) ([]requirements.VersionInfo, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	docs, err := s.findDesc(ctx, map[string]any{"kind": kindVersion}, "version_id", nil, 0, map[string]any{"document": 0, "audit": 0})
	if err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	out := make([]requirements.VersionInfo, 0, len(docs))
	for _, raw := range docs {
		var d versionDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("list requirements versions: %w", err)
		}
		out = append(out, requirements.VersionInfo{VersionID: d.VersionID, Timestamp: d.Timestamp, Author: d.Author, Checksum: d.Checksum})
	}
	return out, nil
}

// LatestVersion implements Store. It blocks for one round trip.
func (s *AstraStore) LatestVersion(ctx context.Context) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	d, ok, err := s.latestVersionDoc(ctx, nil)
	if err != nil {
		return requirements.Version{}, err
	}
	if !ok {
		return requirements.Version{}, fmt.Errorf("requirements version latest: %w", requirements.ErrNotFound)
	}
	return d.version()
}

// GetVersion implements Store. It blocks for one round trip.
func (s *AstraStore) GetVersion(ctx context.Context, id int64) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	var d versionDoc
	ok, err := s.findByID(ctx, versionDocID(id), kindVersion, &d)
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %d: %w", id, err)
	}
	if !ok {
		return requirements.Version{}, fmt.Errorf("requirements version %d: %w", id, requirements.ErrNotFound)
	}
	return d.version()
}

// ListFeatures implements Store. The cursor is the same as SQLiteStore's; a page costs one
// round trip per server page (the Data API's page size, 20 or 50) plus one.
func (s *AstraStore) ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	if err := s.check(); err != nil {
		return requirements.FeaturePage{}, err
	}
	limit := clampLimit(q.Limit, requirements.DefaultFeatureLimit)
	var after any
	if q.Cursor != "" {
		us, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		after = featureSortKey(us, id)
	}
	filter := map[string]any{"kind": kindFeature}
	if q.Status != "" {
		filter["status"] = string(q.Status)
	}
	docs, err := s.findDesc(ctx, filter, "sort_key", after, limit+1, map[string]any{"audit": 0})
	if err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	page := requirements.FeaturePage{Features: []requirements.FeatureRequest{}}
	for _, raw := range docs[:min(limit, len(docs))] {
		var d featureDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		page.Features = append(page.Features, d.FeatureRequest)
	}
	if len(docs) > limit {
		last := page.Features[limit-1]
		created, err := requirements.ParseTimestamp(last.CreatedAt)
		if err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		page.NextCursor = encodeCursor(created.UnixMicro(), last.RequestID)
	}
	return page, nil
}

// GetFeature implements Store. It blocks for one round trip.
func (s *AstraStore) GetFeature(ctx context.Context, requestID string) (requirements.FeatureRequest, error) {
	if err := s.check(); err != nil {
		return requirements.FeatureRequest{}, err
	}
	var d featureDoc
	ok, err := s.findByID(ctx, requestID, kindFeature, &d)
	if err != nil {
		return requirements.FeatureRequest{}, fmt.Errorf("read feature request %s: %w", requestID, err)
	}
	if !ok {
		return requirements.FeatureRequest{}, fmt.Errorf("feature request %s: %w", requestID, requirements.ErrNotFound)
	}
	return d.FeatureRequest, nil
}

// ListAudit implements Store. For one request the order is seq descending; for all requests
// it is the append order (the appending processes' clocks, strictly increasing within one
// process).
func (s *AstraStore) ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	limit = clampLimit(limit, requirements.DefaultAuditLimit)
	filter, field := map[string]any{"kind": kindAudit}, "line"
	if requestID != "" {
		filter["request_id"], field = requestID, "seq"
	}
	docs, err := s.findDesc(ctx, filter, field, nil, limit, nil)
	if err != nil {
		return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
	}
	out := make([]requirements.AuditEntry, 0, len(docs))
	for _, raw := range docs {
		var d auditDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
		}
		out = append(out, d.entry())
	}
	return out, nil
}

// VerifyAudit implements Store. It reads every audit document (unsorted pages, no sort
// limit), orders them by request and seq, and runs VerifyChain, so "Line N" counts in that
// order; then it compares each record's version with the last seq of its chain. It is not a
// snapshot: a command committed but not yet through its audit write shows as a short trail
// until it completes.
func (s *AstraStore) VerifyAudit(ctx context.Context) (requirements.Integrity, error) {
	if err := s.check(); err != nil {
		return requirements.Integrity{}, err
	}
	var entries []requirements.AuditEntry
	err := s.c.Find(ctx, s.coll, map[string]any{"kind": kindAudit}, dataapi.FindOptions{}, func(raw json.RawMessage) error {
		var d auditDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return err
		}
		entries = append(entries, d.entry())
		return nil
	})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read entries: %w", err)
	}
	slices.SortFunc(entries, func(a, b requirements.AuditEntry) int {
		return cmp.Or(cmp.Compare(a.RequestID, b.RequestID), cmp.Compare(a.Seq, b.Seq))
	})
	_, problems := requirements.VerifyChain(entries)
	heads := map[string]int64{}
	for _, e := range entries {
		heads[e.RequestID] = max(heads[e.RequestID], e.Seq)
	}
	type record struct {
		id      string
		version int64
	}
	var records []record
	err = s.c.Find(ctx, s.coll, map[string]any{"kind": map[string]any{"$in": []any{kindFeature, kindVersion}}},
		dataapi.FindOptions{Projection: map[string]any{"kind": 1, "request_id": 1, "version": 1, "version_id": 1}},
		func(raw json.RawMessage) error {
			var d struct {
				Kind      string `json:"kind"`
				RequestID string `json:"request_id"`
				Version   int64  `json:"version"`
				VersionID int64  `json:"version_id"`
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			if d.Kind == kindVersion {
				records = append(records, record{strconv.FormatInt(d.VersionID, 10), 1})
			} else {
				records = append(records, record{d.RequestID, d.Version})
			}
			return nil
		})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	slices.SortFunc(records, func(a, b record) int { return cmp.Compare(a.id, b.id) })
	for _, r := range records {
		if heads[r.id] != r.version {
			problems = append(problems, fmt.Sprintf("Request %s: audit trail ends at seq %d, the record is at version %d", r.id, heads[r.id], r.version))
		}
	}
	if problems == nil {
		problems = []string{}
	}
	return requirements.Integrity{Valid: len(problems) == 0, Problems: problems, Entries: len(entries)}, nil
}

// ---- Import ----

// importItem is one record Import will write (or found already stored).
type importItem struct {
	file    string
	id      string // _id
	doc     any    // featureDoc or versionDoc
	audit   *storedAudit
	skipped bool
	version int64 // requirements version id, 0 for a feature request
	feature string
}

// Import implements Store, without a transaction: it first reads and checks every file
// (parse, checksum warning, conflicts with stored records and within files) and writes
// nothing if any fails. Then it writes each record (its audit entry embedded) and its audit
// document idempotently. If that phase fails half way, the error says so and running the
// same Import again completes it: stored records are skipped and their audit documents
// written if missing. A record written concurrently by someone else with other content fails
// the import at that record.
func (s *AstraStore) Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error) {
	if err := s.check(); err != nil {
		return requirements.ImportReport{}, err
	}
	rep := requirements.ImportReport{Versions: []int64{}, Features: []string{}}
	var items []importItem
	seen := map[string]string{} // _id → content of an earlier file of this import
	for _, file := range files {
		it, content, err := s.planImport(ctx, file, &rep)
		if err != nil {
			return requirements.ImportReport{}, err
		}
		if prev, dup := seen[it.id]; dup {
			if prev != content {
				return requirements.ImportReport{}, fault.Permanent(fault.Rejected, fmt.Errorf("import %s: %s appears twice with different content", file.Name, it.id))
			}
			it.skipped = true
		}
		seen[it.id] = content
		items = append(items, it)
	}
	for i, it := range items {
		if !it.skipped {
			raw, err := encodeDoc(it.doc)
			if err != nil {
				return requirements.ImportReport{}, err
			}
			if err := s.c.InsertOne(ctx, s.coll, raw); err != nil {
				if !isAlreadyExists(err) {
					return requirements.ImportReport{}, fmt.Errorf("import %s (%d of %d files written; run the import again to complete it): %w", it.file, i, len(items), err)
				}
				// Written since the check: by an earlier attempt of this call's retry, or
				// concurrently. Same content is fine.
				again, _, perr := s.planImport(ctx, requirements.LegacyFile{Name: it.file, Data: files[i].Data}, &requirements.ImportReport{})
				if perr != nil || !again.skipped {
					return requirements.ImportReport{}, fault.Permanent(fault.Rejected, fmt.Errorf("import %s: %s was stored concurrently with other content (%v)", it.file, it.id, perr))
				}
				it.skipped, it.audit = true, again.audit
			}
		}
		if it.audit != nil {
			if err := s.insertAudit(ctx, it.audit); err != nil {
				return requirements.ImportReport{}, fmt.Errorf("import %s (run the import again to complete it): %w", it.file, err)
			}
		}
		switch {
		case it.skipped:
			rep.Skipped = append(rep.Skipped, it.file)
		case it.version != 0:
			rep.Versions = append(rep.Versions, it.version)
		default:
			rep.Features = append(rep.Features, it.feature)
		}
	}
	return rep, nil
}

// planImport parses and checks one file against the store. For a record already stored with
// the same content it returns skipped with the stored audit entry. content identifies the
// record's content for duplicate detection.
func (s *AstraStore) planImport(ctx context.Context, file requirements.LegacyFile, rep *requirements.ImportReport) (importItem, string, error) {
	kind, err := requirements.ClassifyLegacy(file.Data)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	reason := "imported from " + file.Name
	if kind == "requirements" {
		v, err := requirements.ParseVersion(file.Data)
		if err != nil {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		ok, sum, err := v.VerifyChecksum()
		if err != nil {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		if !ok {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: stored checksum %s, content gives %s", file.Name, v.Checksum, sum))
		}
		content := string(v.JSON())
		it := importItem{file: file.Name, id: versionDocID(v.VersionID), version: v.VersionID}
		var stored versionDoc
		found, err := s.findByID(ctx, it.id, kindVersion, &stored)
		if err != nil {
			return importItem{}, "", fmt.Errorf("import %s: %w", file.Name, err)
		}
		if found {
			if stored.Document != content {
				return importItem{}, "", fault.Permanent(fault.Rejected, fmt.Errorf("import %s: version %d is stored with different content", file.Name, v.VersionID))
			}
			it.skipped, it.audit = true, stored.Audit
			return it, content, nil
		}
		if v.Timestamp == "" {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: metadata.timestamp is missing", file.Name))
		}
		it.audit = s.newAudit(requirements.ChainEntry(nil, requirements.AuditEntry{Timestamp: v.Timestamp, RequestID: strconv.FormatInt(v.VersionID, 10), NewStatus: requirements.NewStatusSubmitted, Admin: requirements.ImportActor, Reason: &reason}), "")
		it.doc = newVersionDoc(v, "", it.audit)
		return it, content, nil
	}
	f, err := requirements.ParseLegacyFeatureRequest(file.Data)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	content := string(f.LegacyJSON())
	it := importItem{file: file.Name, id: f.RequestID, feature: f.RequestID}
	var stored featureDoc
	found, err := s.findByID(ctx, it.id, kindFeature, &stored)
	if err != nil {
		return importItem{}, "", fmt.Errorf("import %s: %w", file.Name, err)
	}
	if found {
		if string(stored.LegacyJSON()) != content {
			return importItem{}, "", fault.Permanent(fault.Rejected, fmt.Errorf("import %s: feature request %s is stored with different content", file.Name, f.RequestID))
		}
		it.skipped, it.audit = true, stored.Audit
		return it, content, nil
	}
	at := f.CreatedAt
	if f.UpdatedAt != nil {
		at = *f.UpdatedAt
	}
	it.audit = s.newAudit(requirements.ChainEntry(nil, requirements.AuditEntry{Timestamp: at, RequestID: f.RequestID, NewStatus: string(f.Status), Admin: requirements.ImportActor, Reason: &reason}), "")
	doc, err := newFeatureDoc(f, "", it.audit)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	it.doc = doc
	return it, content, nil
}
