package graph_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/sinks/graph"
)

// oldSQLite creates a SQLite database holding the schema of migrations 1..version (as an
// older Sluice left it, before the store migrates it forward) and runs stmts on it. It
// returns the database's path and the open connection, closed when t ends.
func oldSQLite(t *testing.T, version int, stmts ...string) (string, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.db", version))
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	all := []string{`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)`}
	for v := 1; v <= version; v++ {
		all = append(all, graph.MigrationSQL(v, false)...)
	}
	for _, q := range append(all, stmts...) {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return path, db
}

// oldPostgres is oldSQLite on a fresh database of the shared PostgreSQL cluster: it
// returns the database's DSN and the open connection, closed when t ends.
func oldPostgres(t *testing.T, version int, stmts ...string) (string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	dsn := pg.Database(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	all := []string{`CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at bigint NOT NULL)`}
	for v := 1; v <= version; v++ {
		all = append(all, graph.MigrationSQL(v, true)...)
	}
	for _, q := range append(all, stmts...) {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return dsn, conn
}
