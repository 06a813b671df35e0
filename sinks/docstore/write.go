package docstore

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
	"github.com/sluice-dev/sluice/sinks/document"
)

// upsertSQL inserts a document or replaces the stored one when the write is not older:
//   - a higher version replaces (even with identical content, so that the stored version
//     keeps rising and a later redelivery of an intermediate version is still refused);
//   - the same version, or version 0 (unconditional), replaces only when the content hash
//     differs, so a redelivered message rewrites nothing;
//   - a lower version is skipped.
//
// A skipped row counts no change, which the caller reports as success.
const upsertSQL = `
INSERT INTO documents (collection, id, version, body, hash, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (collection, id) DO UPDATE SET
	version    = excluded.version,
	body       = excluded.body,
	hash       = excluded.hash,
	updated_at = excluded.updated_at
WHERE excluded.version > documents.version
   OR ((excluded.version = 0 OR excluded.version = documents.version)
       AND excluded.hash <> documents.hash)`

// row is one validated document, ready for the upsert.
type row struct {
	id      string
	version int64
	body    string
	hash    []byte
}

// WriteDocs upserts docs into collection in one synced transaction and returns one outcome
// per document, in order. It implements pipeline.DocSink.
//
// Each document is validated first: an empty ID, a Body that is not a valid UTF-8 JSON
// object, an "_id" member that is missing, not a string, repeated or different from ID, or
// a Version above math.MaxInt64 gives that document a permanent fault.Rejected outcome, and
// it is not written; the others are. A document older than the stored one (lower Version) is
// skipped and reported as success; an identical rewrite is skipped too. Documents with the
// same ID apply in slice order (the later wins on an equal Version).
//
// The second return is non-nil when the whole call failed and nothing was written: a
// permanent error wrapping ErrInvalidCollection for a bad collection name, else a transient
// one (cancelled ctx, SQLITE_BUSY, I/O error, ErrClosed). WriteDocs waits for the single
// writer connection behind other writes, honouring ctx. Safe for concurrent use; it does not
// retain docs.
func (s *Store) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	if err := checkCollection(collection); err != nil {
		return nil, fmt.Errorf("write documents: %w", err)
	}
	if err := s.checkOpen("write documents"); err != nil {
		return nil, err
	}
	outcomes := make([]error, len(docs))
	rows := make([]row, 0, len(docs))
	for i, d := range docs {
		if err := checkDoc(d); err != nil {
			outcomes[i] = fault.Permanent(fault.Rejected, fmt.Errorf("document %d (%q): %w", i, d.ID, err))
			continue
		}
		sum := sha256.Sum256(d.Body)
		rows = append(rows, row{id: d.ID, version: int64(d.Version), body: string(d.Body), hash: sum[:]})
	}
	if len(rows) == 0 {
		return outcomes, nil
	}
	start := time.Now()
	changed, err := s.writeRows(ctx, collection, rows)
	if err != nil {
		return nil, fmt.Errorf("write %d documents to %s: %w", len(rows), collection, err)
	}
	s.log.DebugContext(ctx, "docstore: wrote documents",
		"collection", collection, "docs", len(docs), "rejected", len(docs)-len(rows),
		"changed", changed, "duration", time.Since(start))
	return outcomes, nil
}

// writeRows upserts rows in one transaction and returns how many rows changed. The
// transaction is a span (child of ctx's): its command, collection and row count.
func (s *Store) writeRows(ctx context.Context, collection string, rows []row) (changed int64, err error) {
	ctx, span := telemetry.Tracer(telemetry.ScopeDocstore).Start(ctx, "sqlite upsert "+collection,
		trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrDBSystem.String("sqlite"), telemetry.AttrDBOperation.String("upsert"),
			telemetry.AttrDBCollection.String(collection), telemetry.AttrDocuments.Int(len(rows)))
	}
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "transaction failed")
		}
		span.End()
	}()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	stmt := tx.StmtContext(ctx, s.upsert)
	now := time.Now().UnixMilli()
	for _, r := range rows {
		res, err := stmt.ExecContext(ctx, collection, r.id, r.version, r.body, r.hash, now)
		if err != nil {
			return 0, fmt.Errorf("upsert document %s: %w", r.id, err)
		}
		if n, err := res.RowsAffected(); err == nil {
			changed += n
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return changed, nil
}

// Reasons a document is rejected.
var (
	errEmptyID     = errors.New("empty id")
	errNotUTF8     = errors.New("body is not valid UTF-8")
	errNotObject   = errors.New("body is not a JSON object")
	errNoBodyID    = errors.New(`body has no "_id"`)
	errDupBodyID   = errors.New(`body has "_id" more than once`)
	errVersionHigh = errors.New("version exceeds the store's maximum (2^63-1)")
)

// checkDoc validates d. It runs once per document on the write path, so it checks the body
// with json.Valid and then walks only the top level for "_id", allocating nothing for
// ordinary bodies.
func checkDoc(d document.Doc) error {
	if d.ID == "" {
		return errEmptyID
	}
	if d.Version > math.MaxInt64 {
		return errVersionHigh
	}
	if !utf8.Valid(d.Body) {
		return errNotUTF8
	}
	if !json.Valid(d.Body) {
		return fmt.Errorf("%w: invalid JSON", errNotObject)
	}
	raw, err := topLevelID(d.Body)
	if err != nil {
		return err
	}
	var id string
	if raw[0] != '"' || json.Unmarshal(raw, &id) != nil {
		return fmt.Errorf(`body "_id" is %s, want a string`, raw)
	}
	if id != d.ID {
		return fmt.Errorf(`body "_id" %q differs from the document id`, id)
	}
	return nil
}

// topLevelID returns the raw value of the top-level "_id" member of body, which json.Valid
// accepted. It fails when body is not an object or has no "_id", or more than one.
func topLevelID(body []byte) ([]byte, error) {
	var found []byte
	dup := false
	err := jsonscan.EachMember(body, func(key []byte, escaped bool, val []byte) bool {
		if jsonscan.KeyIs(key, escaped, "_id") {
			if found != nil {
				dup = true
				return false
			}
			found = val
		}
		return true
	})
	switch {
	case err != nil:
		return nil, errNotObject
	case dup:
		return nil, errDupBodyID
	case found == nil:
		return nil, errNoBodyID
	}
	return found, nil
}
