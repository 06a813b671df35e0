package reqstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
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

// ApplyCommand implements Store. It blocks for one write transaction (queued behind other
// writers of this process; across processes SQLite's lock waits up to 5 s).
func (s *SQLiteStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: begin: %w", cmd.CommandID, err)
	}
	defer func() { _ = tx.Rollback() }()
	out, err := s.applyIn(ctx, tx, cmd, msgID, false)
	if err != nil {
		return requirements.Outcome{}, err
	}
	if err := tx.Commit(); err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: commit: %w", cmd.CommandID, err)
	}
	return out, nil
}

// ApplyCommands implements BatchApplier: every command in one write transaction (one synced
// commit for the whole batch), each inside its own savepoint, so a command that fails is rolled
// back alone and the others commit. It blocks for that transaction, queued behind other writers
// like ApplyCommand.
func (s *SQLiteStore) ApplyCommands(ctx context.Context, cmds []requirements.PendingCommand) []requirements.BatchResult {
	res := make([]requirements.BatchResult, len(cmds))
	fail := func(err error) []requirements.BatchResult {
		for i := range res {
			res[i] = requirements.BatchResult{Err: err}
		}
		return res
	}
	if err := s.check(); err != nil {
		return fail(err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fail(fmt.Errorf("apply %d commands: begin: %w", len(cmds), err))
	}
	defer func() { _ = tx.Rollback() }()
	stx := newStmtTx(tx)
	for i, c := range cmds {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT cmd`); err != nil {
			return fail(fmt.Errorf("apply %d commands: savepoint: %w", len(cmds), err))
		}
		out, err := s.applyIn(ctx, stx, c.Command, c.MsgID, c.Checked)
		if err != nil {
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO cmd`); rerr != nil {
				return fail(fmt.Errorf("apply %d commands: roll back %s: %w", len(cmds), c.Command.CommandID, rerr))
			}
			res[i].Err = err
		} else {
			res[i].Outcome = out
		}
		if _, err := tx.ExecContext(ctx, `RELEASE cmd`); err != nil {
			return fail(fmt.Errorf("apply %d commands: release savepoint: %w", len(cmds), err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("apply %d commands: commit: %w", len(cmds), err))
	}
	return res
}

// applyIn is ApplyCommand inside tx, which the caller commits. checked skips validating cmd
// (PendingCommand.Checked).
func (s *SQLiteStore) applyIn(ctx context.Context, tx execer, cmd requirements.Command, msgID string, checked bool) (requirements.Outcome, error) {
	markerID := cmd.CommandID
	if markerID == "" && msgID != "" {
		markerID = "msg:" + msgID
	}
	var recorded string
	err := tx.QueryRowContext(ctx, `SELECT outcome FROM applied_commands WHERE command_id = ? OR (msg_id IS NOT NULL AND msg_id = ?)`, markerID, msgID).Scan(&recorded)
	switch {
	case err == nil:
		var out requirements.Outcome
		if err := json.Unmarshal([]byte(recorded), &out); err != nil {
			return requirements.Outcome{}, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome: %w", cmd.CommandID, err))
		}
		out.AlreadyApplied = true
		return out, nil
	case !errors.Is(err, sql.ErrNoRows):
		return requirements.Outcome{}, fmt.Errorf("apply command %s: read apply marker: %w", cmd.CommandID, err)
	}

	out := requirements.Outcome{CommandID: cmd.CommandID, Type: cmd.Type, Key: cmd.Key()}
	var invalid error
	if !checked {
		invalid = s.v.Check(cmd)
	}
	if invalid != nil {
		if !errors.As(invalid, &out.Refusal) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: validate: %w", cmd.CommandID, invalid)
		}
	} else if err := s.applyValid(ctx, tx, cmd, &out); err != nil {
		return requirements.Outcome{}, err
	}
	if markerID == "" {
		// Nothing to key a marker on (only possible for an invalid command).
		return out, nil
	}
	body, err := json.Marshal(out)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: encode outcome: %w", cmd.CommandID, err)
	}
	var msg any
	if msgID != "" {
		msg = msgID
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO applied_commands (command_id, msg_id, outcome, applied_at) VALUES (?, ?, ?, ?)`,
		markerID, msg, string(body), requirements.FormatTimestamp(s.now())); err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: write apply marker: %w", cmd.CommandID, err)
	}
	return out, nil
}

// applyValid loads the state cmd names, applies it, and writes the result into tx, filling
// out. A refusal goes into out.Refusal; an error means the transaction must be abandoned.
func (s *SQLiteStore) applyValid(ctx context.Context, tx execer, cmd requirements.Command, out *requirements.Outcome) error {
	var st requirements.State
	if cmd.Type == requirements.TypeSubmitRequirements {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM requirements_versions`).Scan(&st.LatestVersionID); err != nil {
			return fmt.Errorf("apply command %s: read latest version: %w", cmd.CommandID, err)
		}
	} else {
		f, err := getFeature(ctx, tx, cmd.Key())
		switch {
		case err == nil:
			st.Feature = &f
		case !errors.Is(err, requirements.ErrNotFound):
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
	}
	prevVersion := int64(0)
	if st.Feature != nil {
		prevVersion = st.Feature.Version
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		if errors.As(err, &out.Refusal) {
			return nil
		}
		return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
	}
	switch {
	case next.Version != nil:
		if err := insertVersion(ctx, tx, *next.Version); err != nil {
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		out.Version = next.Version
	case next.Feature != nil:
		if err := writeFeature(ctx, tx, *next.Feature, prevVersion); err != nil {
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		out.Feature = next.Feature
	}
	chained, err := appendAudit(ctx, tx, entry)
	if err != nil {
		return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
	}
	out.Audit, out.Applied = &chained, true
	return nil
}

func insertVersion(ctx context.Context, tx execer, v requirements.Version) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO requirements_versions (version_id, author, timestamp, checksum, document) VALUES (?, ?, ?, ?, ?)`,
		v.VersionID, v.Author, v.Timestamp, v.Checksum, string(v.JSON())); err != nil {
		return fmt.Errorf("insert requirements version %d: %w", v.VersionID, err)
	}
	return nil
}

func nullable(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// writeFeature inserts f (prevVersion 0) or updates the stored row at prevVersion.
func writeFeature(ctx context.Context, tx execer, f requirements.FeatureRequest, prevVersion int64) error {
	created, err := requirements.ParseTimestamp(f.CreatedAt)
	if err != nil {
		return fmt.Errorf("write feature request %s: %w", f.RequestID, err)
	}
	if prevVersion == 0 {
		_, err = tx.ExecContext(ctx, `INSERT INTO feature_requests (request_id, title, description, priority, requester, status, created_at, created_us, updated_at, approved_by, rejection_reason, version, key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.RequestID, f.Title, f.Description, f.Priority, f.Requester, string(f.Status), f.CreatedAt, created.UnixMicro(),
			nullable(f.UpdatedAt), nullable(f.ApprovedBy), nullable(f.RejectionReason), f.Version, f.Key)
		if err != nil {
			return fmt.Errorf("insert feature request %s: %w", f.RequestID, err)
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE feature_requests SET status = ?, updated_at = ?, approved_by = ?, rejection_reason = ?, version = ?
		WHERE request_id = ? AND version = ?`,
		string(f.Status), nullable(f.UpdatedAt), nullable(f.ApprovedBy), nullable(f.RejectionReason), f.Version, f.RequestID, prevVersion)
	if err != nil {
		return fmt.Errorf("update feature request %s: %w", f.RequestID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		// Cannot happen inside the write transaction that read the row; retrying re-reads it.
		return fmt.Errorf("update feature request %s: version %d changed underneath (%d rows, %v)", f.RequestID, prevVersion, n, err)
	}
	return nil
}

// appendAudit chains e after the last entry of its request and inserts it.
func appendAudit(ctx context.Context, tx execer, e requirements.AuditEntry) (requirements.AuditEntry, error) {
	var prev *requirements.AuditEntry
	var p requirements.AuditEntry
	err := tx.QueryRowContext(ctx, `SELECT seq, checksum FROM audit WHERE request_id = ? ORDER BY seq DESC LIMIT 1`, e.RequestID).Scan(&p.Seq, &p.Checksum)
	switch {
	case err == nil:
		prev = &p
	case !errors.Is(err, sql.ErrNoRows):
		return requirements.AuditEntry{}, fmt.Errorf("read audit head of %s: %w", e.RequestID, err)
	}
	e = requirements.ChainEntry(prev, e)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit (request_id, seq, timestamp, old_status, new_status, admin, reason, prev_checksum, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.RequestID, e.Seq, e.Timestamp, e.OldStatus, e.NewStatus, e.Admin, nullable(e.Reason), e.PrevChecksum, e.Checksum); err != nil {
		return requirements.AuditEntry{}, fmt.Errorf("append audit entry %s/%d: %w", e.RequestID, e.Seq, err)
	}
	return e, nil
}

const featureColumns = `request_id, title, description, priority, requester, status, created_at, updated_at, approved_by, rejection_reason, version, key`

type scanner interface{ Scan(dest ...any) error }

func scanFeature(row scanner) (requirements.FeatureRequest, error) {
	var f requirements.FeatureRequest
	var status string
	var updated, approved, reason sql.NullString
	if err := row.Scan(&f.RequestID, &f.Title, &f.Description, &f.Priority, &f.Requester, &status, &f.CreatedAt, &updated, &approved, &reason, &f.Version, &f.Key); err != nil {
		return requirements.FeatureRequest{}, err
	}
	f.Status = requirements.Status(status)
	f.UpdatedAt, f.ApprovedBy, f.RejectionReason = fromNull(updated), fromNull(approved), fromNull(reason)
	return f, nil
}

func fromNull(n sql.NullString) *string {
	if !n.Valid {
		return nil
	}
	return &n.String
}

func getFeature(ctx context.Context, q queryer, id string) (requirements.FeatureRequest, error) {
	f, err := scanFeature(q.QueryRowContext(ctx, `SELECT `+featureColumns+` FROM feature_requests WHERE request_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.FeatureRequest{}, fmt.Errorf("feature request %s: %w", id, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.FeatureRequest{}, fmt.Errorf("read feature request %s: %w", id, err)
	}
	return f, nil
}

// CommandOutcome implements Store.
func (s *SQLiteStore) CommandOutcome(ctx context.Context, commandID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var raw string
	err := s.r.QueryRowContext(ctx, `SELECT outcome FROM applied_commands WHERE command_id = ?`, commandID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.Outcome{}, fmt.Errorf("outcome of command %s: %w", commandID, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("read outcome of command %s: %w", commandID, err)
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return requirements.Outcome{}, fmt.Errorf("decode outcome of command %s: %w", commandID, err)
	}
	return out, nil
}

// ListVersions implements Store.
func (s *SQLiteStore) ListVersions(ctx context.Context) ([]requirements.VersionInfo, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT version_id, timestamp, author, checksum FROM requirements_versions ORDER BY version_id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	defer rows.Close()
	out := []requirements.VersionInfo{}
	for rows.Next() {
		var v requirements.VersionInfo
		if err := rows.Scan(&v.VersionID, &v.Timestamp, &v.Author, &v.Checksum); err != nil {
			return nil, fmt.Errorf("list requirements versions: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	return out, nil
}

// LatestVersion implements Store.
func (s *SQLiteStore) LatestVersion(ctx context.Context) (requirements.Version, error) {
	return s.version(ctx, `SELECT document FROM requirements_versions ORDER BY version_id DESC LIMIT 1`, "latest")
}

// GetVersion implements Store.
func (s *SQLiteStore) GetVersion(ctx context.Context, id int64) (requirements.Version, error) {
	return s.version(ctx, `SELECT document FROM requirements_versions WHERE version_id = ?`, strconv.FormatInt(id, 10), id)
}

func (s *SQLiteStore) version(ctx context.Context, query, what string, args ...any) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	var doc string
	err := s.r.QueryRowContext(ctx, query, args...).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.Version{}, fmt.Errorf("requirements version %s: %w", what, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %s: %w", what, err)
	}
	v, err := requirements.ParseVersion([]byte(doc))
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %s: %w", what, err)
	}
	return v, nil
}

// ListFeatures implements Store.
func (s *SQLiteStore) ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	if err := s.check(); err != nil {
		return requirements.FeaturePage{}, err
	}
	limit := clampLimit(q.Limit, requirements.DefaultFeatureLimit)
	afterUS, afterID := int64(1<<62), "\U0010FFFF"
	if q.Cursor != "" {
		var err error
		if afterUS, afterID, err = decodeCursor(q.Cursor); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
	}
	query := `SELECT ` + featureColumns + `, created_us FROM feature_requests WHERE (created_us, request_id) < (?, ?)`
	args := []any{afterUS, afterID}
	if q.Status != "" {
		query += ` AND status = ?`
		args = append(args, string(q.Status))
	}
	query += ` ORDER BY created_us DESC, request_id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	defer rows.Close()
	page := requirements.FeaturePage{Features: []requirements.FeatureRequest{}}
	var lastUS int64
	for rows.Next() {
		var f requirements.FeatureRequest
		var status string
		var updated, approved, reason sql.NullString
		var us int64
		if err := rows.Scan(&f.RequestID, &f.Title, &f.Description, &f.Priority, &f.Requester, &status, &f.CreatedAt, &updated, &approved, &reason, &f.Version, &f.Key, &us); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		if len(page.Features) == limit {
			last := page.Features[limit-1]
			page.NextCursor = encodeCursor(lastUS, last.RequestID)
			break
		}
		f.Status = requirements.Status(status)
		f.UpdatedAt, f.ApprovedBy, f.RejectionReason = fromNull(updated), fromNull(approved), fromNull(reason)
		page.Features = append(page.Features, f)
		lastUS = us
	}
	if err := rows.Err(); err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	return page, nil
}

// GetFeature implements Store.
func (s *SQLiteStore) GetFeature(ctx context.Context, requestID string) (requirements.FeatureRequest, error) {
	if err := s.check(); err != nil {
		return requirements.FeatureRequest{}, err
	}
	return getFeature(ctx, s.r, requestID)
}

const auditColumns = `seq, timestamp, request_id, old_status, new_status, admin, reason, prev_checksum, checksum`

func scanAudit(rows *sql.Rows) (requirements.AuditEntry, error) {
	var e requirements.AuditEntry
	var reason sql.NullString
	if err := rows.Scan(&e.Seq, &e.Timestamp, &e.RequestID, &e.OldStatus, &e.NewStatus, &e.Admin, &reason, &e.PrevChecksum, &e.Checksum); err != nil {
		return requirements.AuditEntry{}, err
	}
	e.Reason = fromNull(reason)
	return e, nil
}

func collectAudit(rows *sql.Rows, err error) ([]requirements.AuditEntry, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []requirements.AuditEntry{}
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ListAudit implements Store.
func (s *SQLiteStore) ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	limit = clampLimit(limit, requirements.DefaultAuditLimit)
	var out []requirements.AuditEntry
	var err error
	if requestID == "" {
		out, err = collectAudit(s.r.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit ORDER BY line DESC LIMIT ?`, limit))
	} else {
		out, err = collectAudit(s.r.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE request_id = ? ORDER BY line DESC LIMIT ?`, requestID, limit))
	}
	if err != nil {
		return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
	}
	return out, nil
}

// VerifyAudit implements Store. It reads the whole trail and every record's version in one
// read transaction, so it sees one consistent snapshot.
func (s *SQLiteStore) VerifyAudit(ctx context.Context) (requirements.Integrity, error) {
	if err := s.check(); err != nil {
		return requirements.Integrity{}, err
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	entries, err := collectAudit(tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit ORDER BY line`))
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read entries: %w", err)
	}
	_, problems := requirements.VerifyChain(entries)
	heads := map[string]int64{}
	for _, e := range entries {
		heads[e.RequestID] = max(heads[e.RequestID], e.Seq)
	}
	// Each feature request has one entry per version; each requirements version one entry.
	rows, err := tx.QueryContext(ctx, `SELECT request_id, version FROM feature_requests UNION ALL SELECT CAST(version_id AS TEXT), 1 FROM requirements_versions ORDER BY 1`)
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var version int64
		if err := rows.Scan(&id, &version); err != nil {
			return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
		}
		if heads[id] != version {
			problems = append(problems, fmt.Sprintf("Request %s: audit trail ends at seq %d, the record is at version %d", id, heads[id], version))
		}
	}
	if err := rows.Err(); err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	if problems == nil {
		problems = []string{}
	}
	return requirements.Integrity{Valid: len(problems) == 0, Problems: problems, Entries: len(entries)}, nil
}

// Import implements Store. It runs in one write transaction.
func (s *SQLiteStore) Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error) {
	if err := s.check(); err != nil {
		return requirements.ImportReport{}, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return requirements.ImportReport{}, fmt.Errorf("import: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rep := requirements.ImportReport{Versions: []int64{}, Features: []string{}}
	for _, file := range files {
		kind, err := requirements.ClassifyLegacy(file.Data)
		if err != nil {
			return requirements.ImportReport{}, fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		if kind == "requirements" {
			err = s.importVersion(ctx, tx, file, &rep)
		} else {
			err = s.importFeature(ctx, tx, file, &rep)
		}
		if err != nil {
			return requirements.ImportReport{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return requirements.ImportReport{}, fmt.Errorf("import: commit: %w", err)
	}
	return rep, nil
}

func (s *SQLiteStore) importVersion(ctx context.Context, tx *sql.Tx, file requirements.LegacyFile, rep *requirements.ImportReport) error {
	v, err := requirements.ParseVersion(file.Data)
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	ok, sum, err := v.VerifyChecksum()
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	if !ok {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: stored checksum %s, content gives %s", file.Name, v.Checksum, sum))
	}
	var stored string
	err = tx.QueryRowContext(ctx, `SELECT document FROM requirements_versions WHERE version_id = ?`, v.VersionID).Scan(&stored)
	switch {
	case err == nil:
		if !bytes.Equal([]byte(stored), v.JSON()) {
			return fault.Permanent(fault.Rejected, fmt.Errorf("import %s: version %d is stored with different content", file.Name, v.VersionID))
		}
		rep.Skipped = append(rep.Skipped, file.Name)
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	if v.Timestamp == "" {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: metadata.timestamp is missing", file.Name))
	}
	if err := insertVersion(ctx, tx, v); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	reason := "imported from " + file.Name
	if _, err := appendAudit(ctx, tx, requirements.AuditEntry{Timestamp: v.Timestamp, RequestID: strconv.FormatInt(v.VersionID, 10), NewStatus: requirements.NewStatusSubmitted, Admin: requirements.ImportActor, Reason: &reason}); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	rep.Versions = append(rep.Versions, v.VersionID)
	return nil
}

func (s *SQLiteStore) importFeature(ctx context.Context, tx *sql.Tx, file requirements.LegacyFile, rep *requirements.ImportReport) error {
	f, err := requirements.ParseLegacyFeatureRequest(file.Data)
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	cur, err := getFeature(ctx, tx, f.RequestID)
	switch {
	case err == nil:
		if !bytes.Equal(cur.LegacyJSON(), f.LegacyJSON()) {
			return fault.Permanent(fault.Rejected, fmt.Errorf("import %s: feature request %s is stored with different content", file.Name, f.RequestID))
		}
		rep.Skipped = append(rep.Skipped, file.Name)
		return nil
	case !errors.Is(err, requirements.ErrNotFound):
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	if err := writeFeature(ctx, tx, f, 0); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	at := f.CreatedAt
	if f.UpdatedAt != nil {
		at = *f.UpdatedAt
	}
	reason := "imported from " + file.Name
	if _, err := appendAudit(ctx, tx, requirements.AuditEntry{Timestamp: at, RequestID: f.RequestID, NewStatus: string(f.Status), Admin: requirements.ImportActor, Reason: &reason}); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	rep.Features = append(rep.Features, f.RequestID)
	return nil
}
