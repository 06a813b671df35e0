package sqlitedb_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/sinks/sqlitedb"
)

func TestOpenWALWriterAndReadOnlyReaders(t *testing.T) {
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, sqlitedb.Config{Path: filepath.Join(t.TempDir(), "x.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct{ pragma, want string }{
		{"journal_mode", "wal"}, {"synchronous", "2"}, {"busy_timeout", "5000"},
	} {
		var got string
		if err := db.W.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil || got != tc.want {
			t.Errorf("PRAGMA %s = %q (%v), want %q", tc.pragma, got, err, tc.want)
		}
	}
	if _, err := db.W.ExecContext(ctx, "CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.R.ExecContext(ctx, "INSERT INTO t VALUES (1)"); err == nil {
		t.Fatal("the read pool accepted a write")
	}
	if _, err := sqlitedb.Open(ctx, sqlitedb.Config{Path: "a?b"}); err == nil {
		t.Fatal("a path with '?' was accepted")
	}
}
