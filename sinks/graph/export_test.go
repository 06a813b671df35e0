package graph

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

// Test hooks into graph_applied, which Store can neither backdate nor count. They use the
// store's own writer connection or pool.

// InsertMarkers records an apply marker in env for each of msgIDs with applied_at = at, in
// one transaction.
func InsertMarkers(ctx context.Context, s Store, env string, at time.Time, msgIDs []string) error {
	ts := at.UnixMicro()
	switch s := s.(type) {
	case *SQLite:
		ids, err := json.Marshal(msgIDs)
		if err != nil {
			return err
		}
		_, err = s.w.ExecContext(ctx, `INSERT INTO graph_applied (env, msg_id, applied_at) SELECT ?, value, ? FROM json_each(?)`, env, ts, string(ids))
		return err
	case *Postgres:
		_, err := s.pool.Exec(ctx, `INSERT INTO graph_applied (env, msg_id, applied_at) SELECT $3, unnest($1::text[]), $2`, msgIDs, ts, env)
		return err
	}
	return fmt.Errorf("InsertMarkers: unknown store %T", s)
}

// CountMarkers returns the number of env's rows in graph_applied.
func CountMarkers(ctx context.Context, s Store, env string) (int64, error) {
	var n int64
	switch s := s.(type) {
	case *SQLite:
		err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM graph_applied WHERE env = ?`, env).Scan(&n)
		return n, err
	case *Postgres:
		err := s.pool.QueryRow(ctx, `SELECT COUNT(*) FROM graph_applied WHERE env = $1`, env).Scan(&n)
		return n, err
	}
	return 0, fmt.Errorf("CountMarkers: unknown store %T", s)
}

// MigrationSQL returns the statements of migration version for PostgreSQL or SQLite, so a
// test can build a database at an older schema version.
func MigrationSQL(version int, postgres bool) []string {
	for _, m := range migrations {
		if m.version == version {
			if postgres {
				return m.postgres
			}
			return m.sqlite
		}
	}
	return nil
}

// ScanStrings reads one string column from rows and closes them.
func ScanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	return scanStrings(rows, func(err error) error { return err })
}

// SQLiteWalk is the SQLite walk query of Neighbors (filter is its edge-type clause).
var SQLiteWalk = sqliteWalk
