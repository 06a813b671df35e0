package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/sinks/graph/pgtest"
)

// A durable cluster keeps every committed row through Crash and Restart, refuses connections
// while it is down, and answers on the same DSN afterwards.
func TestCrashAndRestartKeepCommittedRows(t *testing.T) {
	c := pgtest.StartClusterWith(pgtest.Config{Durable: true})
	t.Cleanup(c.Stop)
	dsn := c.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE t (n int PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	const rows = 500
	for i := range rows {
		if _, err := conn.Exec(ctx, `INSERT INTO t VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Crash(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SELECT 1`); err == nil {
		t.Fatal("a connection opened before the crash still answers")
	}
	_ = conn.Close(ctx)
	if down, err := pgx.Connect(ctx, dsn); err == nil {
		down.Close(ctx)
		t.Fatal("connected to a crashed server")
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil || n != rows {
		t.Fatalf("after the crash the table holds %d rows (%v), want every committed one: %d", n, err, rows)
	}
}
