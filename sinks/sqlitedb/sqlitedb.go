// Package sqlitedb opens a SQLite file the way every Sluice store uses it (modernc.org/sqlite,
// pure Go): one writer connection in WAL mode with synchronous=FULL, so a commit is on disk
// when it returns, and a pool of read-only connections that never wait for the writer.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"modernc.org/sqlite" // the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Config says how to open a file.
type Config struct {
	// Path of the database file. Required; must not contain '?'.
	Path string
	// BusyTimeout is how long a connection waits for a lock another connection (or process)
	// holds before failing with SQLITE_BUSY. Default 5 s.
	BusyTimeout time.Duration
	// MaxReadConns bounds the read pool. Default 8.
	MaxReadConns int
	// ForeignKeys turns on foreign key enforcement on the writer.
	ForeignKeys bool
}

// DB is an open file: W is the single writer (transactions begin IMMEDIATE), R the
// read-only pool. Both are safe for concurrent use. Close closes both.
type DB struct {
	W, R *sql.DB
}

// Open opens cfg.Path (creating it if missing), checks that WAL mode took, and pings the
// read pool. The caller must Close it.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	if cfg.Path == "" || strings.Contains(cfg.Path, "?") {
		return nil, errors.New("sqlitedb: Path is required and must not contain '?'")
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	if cfg.MaxReadConns <= 0 {
		cfg.MaxReadConns = 8
	}
	busy := fmt.Sprintf("busy_timeout(%d)", cfg.BusyTimeout.Milliseconds())
	q := url.Values{}
	q.Add("_pragma", busy)
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	if cfg.ForeignKeys {
		q.Add("_pragma", "foreign_keys(1)")
	}
	q.Set("_txlock", "immediate")
	db := &DB{}
	w, err := sql.Open("sqlite", cfg.Path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open writer on %s: %w", cfg.Path, err)
	}
	db.W = w
	// One writer connection: SQLite serialises writers anyway, and queueing in database/sql
	// honours ctx instead of spinning on SQLITE_BUSY; it also keeps prepared statements.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	var mode string
	// The first connection switches a new file to WAL, which takes an exclusive lock that the
	// busy timeout does not wait for: processes opening the same new file at once get
	// SQLITE_BUSY from the pragma itself. Retry it within the busy timeout.
	for deadline := time.Now().Add(cfg.BusyTimeout); ; time.Sleep(10 * time.Millisecond) {
		err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode)
		if err == nil {
			break
		}
		var se *sqlite.Error
		if !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) || ctx.Err() != nil {
			_ = db.Close()
			return nil, fmt.Errorf("read journal mode of %s: %w", cfg.Path, err)
		}
	}
	if !strings.EqualFold(mode, "wal") {
		_ = db.Close()
		return nil, fmt.Errorf("%s: journal mode is %q, want wal", cfg.Path, mode)
	}
	rq := url.Values{}
	rq.Add("_pragma", busy)
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", cfg.Path+"?"+rq.Encode())
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open readers on %s: %w", cfg.Path, err)
	}
	db.R = r
	r.SetMaxOpenConns(cfg.MaxReadConns)
	r.SetMaxIdleConns(cfg.MaxReadConns)
	if err := r.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open readers on %s: %w", cfg.Path, err)
	}
	return db, nil
}

// Close closes the read pool and the writer.
func (db *DB) Close() error {
	var errs []error
	if db.R != nil {
		errs = append(errs, db.R.Close())
	}
	if db.W != nil {
		errs = append(errs, db.W.Close())
	}
	return errors.Join(errs...)
}
