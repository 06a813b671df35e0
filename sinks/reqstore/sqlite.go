package reqstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/sqlitedb"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrClosed is returned (wrapped) by every SQLiteStore method called after Close. It is not
// permanent: a message that failed this way is redelivered to a store that is open.
var ErrClosed = errors.New("requirements: store is closed")

const (
	sqliteBusyTimeoutMS  = 5000
	sqliteDefaultReaders = 4
	// sqliteSchemaVersion is kept in PRAGMA user_version.
	sqliteSchemaVersion = 1
)

// sqliteSchema creates the tables. The audit table is append-only: triggers refuse UPDATE and
// DELETE (someone with the file can drop them, which VerifyAudit then detects through the
// checksums).
const sqliteSchema = `
CREATE TABLE requirements_versions (
	version_id INTEGER PRIMARY KEY,
	author     TEXT NOT NULL,
	timestamp  TEXT NOT NULL,
	checksum   TEXT NOT NULL,
	document   TEXT NOT NULL -- json.dumps(doc, indent=2): key order kept
);
CREATE TABLE feature_requests (
	request_id       TEXT PRIMARY KEY,
	title            TEXT NOT NULL,
	description      TEXT NOT NULL,
	priority         TEXT NOT NULL,
	requester        TEXT NOT NULL,
	status           TEXT NOT NULL CHECK (status IN ('pending','approved','rejected','in_progress','completed','cancelled')),
	created_at       TEXT NOT NULL,
	created_us       INTEGER NOT NULL, -- created_at as Unix microseconds (naive read as UTC), for ordering
	updated_at       TEXT,
	approved_by      TEXT,
	rejection_reason TEXT,
	version          INTEGER NOT NULL CHECK (version >= 1),
	key              TEXT NOT NULL
);
CREATE INDEX feature_requests_by_created ON feature_requests (created_us DESC, request_id DESC);
CREATE INDEX feature_requests_by_status ON feature_requests (status, created_us DESC, request_id DESC);
CREATE TABLE audit (
	line          INTEGER PRIMARY KEY AUTOINCREMENT,
	request_id    TEXT NOT NULL,
	seq           INTEGER NOT NULL,
	timestamp     TEXT NOT NULL,
	old_status    TEXT NOT NULL,
	new_status    TEXT NOT NULL,
	admin         TEXT NOT NULL,
	reason        TEXT,
	prev_checksum TEXT NOT NULL,
	checksum      TEXT NOT NULL,
	UNIQUE (request_id, seq)
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TABLE applied_commands (
	command_id TEXT PRIMARY KEY,
	msg_id     TEXT UNIQUE, -- NULL when the command came without a message id
	outcome    TEXT NOT NULL, -- Outcome as JSON
	applied_at TEXT NOT NULL
);
`

// SQLiteConfig configures a SQLiteStore. The zero value of each optional field means its
// default.
type SQLiteConfig struct {
	// Path is the SQLite database file; its directory is created if missing. Required; must
	// not contain '?'.
	Path string
	// MaxReadConns bounds the read pool. Optional; 0 means 4; negative is invalid.
	MaxReadConns int
	// Validator checks every command in ApplyCommand. Optional; nil compiles the embedded
	// schemas at open.
	Validator *requirements.Validator
	// Now is the clock for apply markers' applied_at. Optional; nil means time.Now.
	Now func() time.Time
}

// Validate reports every problem with c at once. It does not touch the file system.
func (c SQLiteConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, errors.New("requirements: SQLiteConfig.Path is required"))
	}
	if strings.ContainsRune(c.Path, '?') {
		errs = append(errs, fmt.Errorf("requirements: SQLiteConfig.Path %q must not contain '?'", c.Path))
	}
	if c.MaxReadConns < 0 {
		errs = append(errs, fmt.Errorf("requirements: SQLiteConfig.MaxReadConns is %d, want >= 0", c.MaxReadConns))
	}
	return errors.Join(errs...)
}

// SQLiteStore is the Store on one SQLite file (modernc.org/sqlite, WAL, synchronous=FULL: a
// returned ApplyCommand is on disk). Writes go through one connection with BEGIN IMMEDIATE, so
// ApplyCommand calls run one at a time per process and across processes sharing the file;
// reads use a separate pool and never wait for writers. It is safe for concurrent use.
type SQLiteStore struct {
	w, r *sql.DB
	v    *requirements.Validator
	now  func() time.Time

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// OpenSQLite opens (creating if needed) the store at cfg.Path and creates its tables. It
// blocks for the file I/O and honours ctx. The caller must call Close.
func OpenSQLite(ctx context.Context, cfg SQLiteConfig) (*SQLiteStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MaxReadConns == 0 {
		cfg.MaxReadConns = sqliteDefaultReaders
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
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("requirements: resolve path %q: %w", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("requirements: create directory for %s: %w", path, err)
	}
	s := &SQLiteStore{v: cfg.Validator, now: cfg.Now}
	if err := s.open(ctx, path, cfg.MaxReadConns); err != nil {
		_ = s.closeDBs()
		return nil, err
	}
	return s, nil
}

func (s *SQLiteStore) open(ctx context.Context, path string, readers int) error {
	db, err := sqlitedb.Open(ctx, sqlitedb.Config{Path: path, BusyTimeout: sqliteBusyTimeoutMS * time.Millisecond, MaxReadConns: readers})
	if err != nil {
		return fmt.Errorf("requirements: %w", err)
	}
	s.w, s.r = db.W, db.R
	return s.migrate(ctx, path)
}

func (s *SQLiteStore) migrate(ctx context.Context, path string) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("requirements: begin schema transaction: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("requirements: read schema version: %w", err)
	}
	switch {
	case v == sqliteSchemaVersion:
		return nil
	case v > sqliteSchemaVersion:
		return fmt.Errorf("requirements: %s has schema version %d, this build knows %d", path, v, sqliteSchemaVersion)
	}
	if _, err := tx.ExecContext(ctx, sqliteSchema); err != nil {
		return fmt.Errorf("requirements: create tables: %w", err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", sqliteSchemaVersion)); err != nil {
		return fmt.Errorf("requirements: set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("requirements: commit schema: %w", err)
	}
	return nil
}

// Close closes the store, waiting for calls already running. It is idempotent; methods
// called after Close return ErrClosed.
func (s *SQLiteStore) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.closeDBs()
	})
	return s.closeErr
}

func (s *SQLiteStore) closeDBs() error {
	var errs []error
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

func (s *SQLiteStore) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// queryer is what the load helpers need from *sql.Tx and *sql.DB.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// execer is what applying a command needs of its transaction: *sql.Tx, or a stmtTx.
type execer interface {
	queryer
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// stmtTx is a transaction that prepares each statement once: ApplyCommands runs the same
// few statements for every command of a batch, and preparing them each time was 4% of a busy
// server's CPU. The statements close with the transaction.
type stmtTx struct {
	*sql.Tx
	stmts map[string]*sql.Stmt
}

func newStmtTx(tx *sql.Tx) *stmtTx { return &stmtTx{Tx: tx, stmts: map[string]*sql.Stmt{}} }

func (t *stmtTx) stmt(ctx context.Context, query string) (*sql.Stmt, error) {
	if st, ok := t.stmts[query]; ok {
		return st, nil
	}
	st, err := t.Tx.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	t.stmts[query] = st
	return st, nil
}

func (t *stmtTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (t *stmtTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (t *stmtTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := t.stmt(ctx, query)
	if err != nil {
		// The plain call reports the same error through the row.
		return t.Tx.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}
