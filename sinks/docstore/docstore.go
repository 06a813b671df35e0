// Package docstore is the embedded document store Sluice uses when no AstraDB endpoint is
// configured: one SQLite file (pure Go, modernc.org/sqlite) in WAL mode with synchronous=FULL,
// so a committed write is fsynced before WriteDocs returns.
//
// All collections share one table keyed by (collection, id). Writes go through a single
// writer connection, one transaction per WriteDocs call; reads use a separate pool and never
// wait for writers.
package docstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/sqlitedb"
)

// ErrNotFound is returned (wrapped) by GetDoc when the collection holds no document with the
// requested id.
var ErrNotFound = errors.New("docstore: document not found")

// ErrClosed is returned (wrapped) by every method called after Close. It is not permanent:
// a message whose write failed this way is redelivered to a store that is open.
var ErrClosed = errors.New("docstore: store is closed")

// ErrInvalidCollection is returned (wrapped, and marked permanent with class
// fault.Validation) when a collection name breaks the Data API rule
// ^[A-Za-z][A-Za-z0-9_]{0,47}$.
var ErrInvalidCollection = errors.New("docstore: invalid collection name")

const (
	defaultMaxReadConns = 8
	// busyTimeoutMS is how long a connection waits for a lock held by another connection
	// (another process on the same file, or a checkpoint) before failing with SQLITE_BUSY.
	busyTimeoutMS = 5000
	// schemaVersion is stored in PRAGMA user_version: the number of migrations applied.
	schemaVersion = 3
	// maxCollectionLen is the Data API's name limit.
	maxCollectionLen = 48
	// defaultListLimit is what ListIDs uses for limit <= 0.
	defaultListLimit = 1000
)

// migrations[i] takes a file from schema version i to i+1. They run in order, in one
// transaction, at Open.
var migrations = []string{
	schema,
	// 2: documents by the Sluice job that wrote them, for job rollback.
	`CREATE INDEX IF NOT EXISTS documents_by_job ON documents (collection, json_extract(body, '$.sluice_job'))`,
	// 3: previous versions of documents another job rewrote, and rollback outcomes.
	previousSchema,
}

// schema is applied idempotently at Open. A rowid table (not WITHOUT ROWID) because rows are
// 1.5 KB chunks and larger: SQLite advises WITHOUT ROWID only for rows under about 1/20 of a
// page, since its b-tree interior cells would hold whole rows.
const schema = `
CREATE TABLE IF NOT EXISTS documents (
	collection TEXT NOT NULL,
	id         TEXT NOT NULL,
	version    INTEGER NOT NULL,
	body       TEXT NOT NULL,
	hash       BLOB NOT NULL,
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (collection, id)
)`

// Config configures a Store. The zero value of each optional field means its default.
type Config struct {
	// Path is the SQLite database file. Its parent directory is created if missing.
	// Required; must not contain '?'.
	Path string
	// MaxReadConns bounds the read connection pool (GetDoc, CountDocs, ListIDs, Ping).
	// Optional; 0 means 8; negative is invalid.
	MaxReadConns int
	// Logger receives debug records of writes. Optional; nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxReadConns == 0 {
		c.MaxReadConns = defaultMaxReadConns
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with c at once. It does not touch the file system.
func (c Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("docstore: Path is required"))
	}
	if strings.ContainsRune(c.Path, '?') {
		errs = append(errs, fmt.Errorf("docstore: Path %q must not contain '?'", c.Path))
	}
	if c.MaxReadConns < 0 {
		errs = append(errs, fmt.Errorf("docstore: MaxReadConns is %d, want >= 0", c.MaxReadConns))
	}
	return errors.Join(errs...)
}

// Store is the embedded document store. It is safe for concurrent use. WriteDocs and
// DeleteDocs calls run one at a time (they share the single writer connection); reads run
// in parallel with them and with each other, up to Config.MaxReadConns.
type Store struct {
	log    *slog.Logger
	path   string
	w      *sql.DB   // the one writer connection (MaxOpenConns 1, BEGIN IMMEDIATE)
	r      *sql.DB   // read-only pool
	upsert *sql.Stmt // prepared on w

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store at cfg.Path, switches it to WAL mode and
// creates or checks the schema. It blocks for the file I/O and honours ctx. The caller must
// call Close. It fails if the file's schema version is newer than this build knows.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("docstore: resolve path %q: %w", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("docstore: create directory for %s: %w", path, err)
	}
	s := &Store{log: cfg.Logger, path: path}
	if err := s.open(ctx, cfg); err != nil {
		s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context, cfg Config) error {
	db, err := sqlitedb.Open(ctx, sqlitedb.Config{Path: s.path, BusyTimeout: busyTimeoutMS * time.Millisecond, MaxReadConns: cfg.MaxReadConns})
	if err != nil {
		return fmt.Errorf("docstore: %w", err)
	}
	s.w, s.r = db.W, db.R
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if s.upsert, err = s.w.PrepareContext(ctx, upsertSQL); err != nil {
		return fmt.Errorf("docstore: prepare upsert: %w", err)
	}
	return nil
}

// migrate creates the schema on a new file and refuses a file from a newer build.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("docstore: begin schema transaction: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("docstore: read schema version: %w", err)
	}
	switch {
	case v == schemaVersion:
		return nil
	case v > schemaVersion:
		return fmt.Errorf("docstore: %s has schema version %d, this build knows %d", s.path, v, schemaVersion)
	}
	for i := v; i < schemaVersion; i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("docstore: migrate schema to version %d: %w", i+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion)); err != nil {
		return fmt.Errorf("docstore: set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("docstore: commit schema: %w", err)
	}
	return nil
}

// Close closes the store. It waits for calls already running, then releases the file.
// It is idempotent: later calls return the first call's result. Methods called after Close
// return ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.closeDBs()
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.upsert != nil {
		errs = append(errs, s.upsert.Close())
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("docstore: close %s: %w", s.path, err)
	}
	return nil
}

// checkOpen returns a wrapped ErrClosed after Close.
func (s *Store) checkOpen(op string) error {
	if s.closed.Load() {
		return fmt.Errorf("docstore: %s: %w", op, ErrClosed)
	}
	return nil
}

// checkCollection enforces the Data API's name rule, so that what the embedded store accepts
// AstraDB accepts too. The error is permanent.
func checkCollection(name string) error {
	ok := len(name) >= 1 && len(name) <= maxCollectionLen && isLetter(name[0])
	for i := 1; ok && i < len(name); i++ {
		c := name[i]
		ok = isLetter(c) || (c >= '0' && c <= '9') || c == '_'
	}
	if !ok {
		return fault.Permanent(fault.Validation, fmt.Errorf("collection %q: %w", name, ErrInvalidCollection))
	}
	return nil
}

func isLetter(c byte) bool { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') }

// GetDoc returns the stored body of the document id in collection, byte for byte as it was
// written. It returns an error wrapping ErrNotFound when there is none. Safe for concurrent
// use; it does not wait for writers.
func (s *Store) GetDoc(ctx context.Context, collection, id string) (json.RawMessage, error) {
	if err := s.checkOpen("get document"); err != nil {
		return nil, err
	}
	if err := checkCollection(collection); err != nil {
		return nil, err
	}
	var body []byte
	err := s.r.QueryRowContext(ctx,
		"SELECT body FROM documents WHERE collection = ? AND id = ?", collection, id).Scan(&body)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("get document %s/%s: %w", collection, id, ErrNotFound)
	case err != nil:
		return nil, fmt.Errorf("get document %s/%s: %w", collection, id, err)
	}
	return body, nil
}

// CountDocs returns how many documents collection holds (0 for an unknown collection).
// Safe for concurrent use.
func (s *Store) CountDocs(ctx context.Context, collection string) (int64, error) {
	if err := s.checkOpen("count documents"); err != nil {
		return 0, err
	}
	if err := checkCollection(collection); err != nil {
		return 0, err
	}
	var n int64
	if err := s.r.QueryRowContext(ctx,
		"SELECT COUNT(*) FROM documents WHERE collection = ?", collection).Scan(&n); err != nil {
		return 0, fmt.Errorf("count documents in %s: %w", collection, err)
	}
	return n, nil
}

// ListIDs returns up to limit ids of collection that sort after after, in ascending byte
// order; pass the last id of one page as after to get the next. An empty result means the
// end. limit <= 0 means 1000. Safe for concurrent use.
func (s *Store) ListIDs(ctx context.Context, collection, after string, limit int) ([]string, error) {
	if err := s.checkOpen("list ids"); err != nil {
		return nil, err
	}
	if err := checkCollection(collection); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = defaultListLimit
	}
	rows, err := s.r.QueryContext(ctx,
		"SELECT id FROM documents WHERE collection = ? AND id > ? ORDER BY id LIMIT ?",
		collection, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list ids in %s after %q: %w", collection, after, err)
	}
	defer func() { _ = rows.Close() }()
	ids := make([]string, 0, min(limit, 256))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("list ids in %s: %w", collection, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list ids in %s: %w", collection, err)
	}
	return ids, nil
}

// DeleteDocs deletes the documents with ids from collection in one synced transaction and
// returns how many existed. Missing ids are not an error. It waits for the writer connection
// (behind any running WriteDocs) and honours ctx; on error nothing is deleted.
func (s *Store) DeleteDocs(ctx context.Context, collection string, ids []string) (int64, error) {
	if err := s.checkOpen("delete documents"); err != nil {
		return 0, err
	}
	if err := checkCollection(collection); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("delete documents from %s: begin: %w", collection, err)
	}
	defer func() { _ = tx.Rollback() }()
	stmt, err := tx.PrepareContext(ctx, "DELETE FROM documents WHERE collection = ? AND id = ?")
	if err != nil {
		return 0, fmt.Errorf("delete documents from %s: prepare: %w", collection, err)
	}
	defer func() { _ = stmt.Close() }()
	var n int64
	for _, id := range ids {
		res, err := stmt.ExecContext(ctx, collection, id)
		if err != nil {
			return 0, fmt.Errorf("delete document %s/%s: %w", collection, id, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("delete document %s/%s: %w", collection, id, err)
		}
		n += k
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("delete documents from %s: commit: %w", collection, err)
	}
	return n, nil
}

// DeleteJobDocs deletes every document of collection whose "sluice_job" field is jobID (the
// documents that job wrote and no later job rewrote), and returns how many. It blocks behind
// other writes; it honours ctx.
func (s *Store) DeleteJobDocs(ctx context.Context, collection, jobID string) (int64, error) {
	if err := s.checkOpen("delete job documents"); err != nil {
		return 0, err
	}
	if err := checkCollection(collection); err != nil {
		return 0, err
	}
	res, err := s.w.ExecContext(ctx, "DELETE FROM documents WHERE collection = ? AND json_extract(body, '$.sluice_job') = ?", collection, jobID)
	if err != nil {
		return 0, fmt.Errorf("delete documents of job %s from %s: %w", jobID, collection, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete documents of job %s from %s: %w", jobID, collection, err)
	}
	return n, nil
}

// Ping checks that the store is open and its file answers on both the read pool and the
// writer connection. It may wait behind a running write; it honours ctx.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.checkOpen("ping"); err != nil {
		return err
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("docstore: ping readers: %w", err)
	}
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("docstore: ping writer: %w", err)
	}
	return nil
}
