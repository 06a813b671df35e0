package graph_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/sinks/graph"
)

// TestMigrateFromV1 opens a database made by schema version 1 (no index on applied_at) that
// holds markers: the store migrates it forward, keeps the markers, and prunes the old ones.
func TestMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	tests := []struct {
		name string
		// create builds a version 1 database with markers old:0..2 (two days old) and
		// kept (now), and returns how to open it and how to query it.
		create func(t *testing.T) (open func() (graph.Store, error), query func(q string) ([]string, error))
		// indexes lists graph_applied's indexes.
		indexes string
	}{
		{"sqlite", func(t *testing.T) (func() (graph.Store, error), func(string) ([]string, error)) {
			path, db := oldSQLite(t, 1, `INSERT INTO schema_migrations VALUES (1, 'graph nodes, edges and apply markers', 0)`)
			for _, id := range []string{"old:0", "old:1", "old:2"} {
				if _, err := db.ExecContext(ctx, `INSERT INTO graph_applied VALUES (?, ?)`, id, now.Add(-48*time.Hour).UnixMicro()); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO graph_applied VALUES ('kept', ?)`, now.UnixMicro()); err != nil {
				t.Fatal(err)
			}
			open := func() (graph.Store, error) { return graph.OpenSQLite(ctx, graph.SQLiteConfig{Path: path}) }
			query := func(q string) ([]string, error) {
				rows, err := db.QueryContext(ctx, q)
				if err != nil {
					return nil, err
				}
				return graph.ScanStrings(rows)
			}
			return open, query
		}, `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'graph_applied' AND sql IS NOT NULL ORDER BY name`},
		{"postgres", func(t *testing.T) (func() (graph.Store, error), func(string) ([]string, error)) {
			dsn, conn := oldPostgres(t, 1, `INSERT INTO schema_migrations VALUES (1, 'graph nodes, edges and apply markers', 0)`)
			if _, err := conn.Exec(ctx, `INSERT INTO graph_applied SELECT unnest($1::text[]), $2`, []string{"old:0", "old:1", "old:2"}, now.Add(-48*time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `INSERT INTO graph_applied VALUES ('kept', $1)`, now.UnixMicro()); err != nil {
				t.Fatal(err)
			}
			open := func() (graph.Store, error) {
				return graph.OpenPostgres(ctx, graph.PostgresConfig{DSN: dsn, MinConns: 1, MaxConns: 2})
			}
			query := func(q string) ([]string, error) {
				rows, err := conn.Query(ctx, q)
				if err != nil {
					return nil, err
				}
				return pgx.CollectRows(rows, pgx.RowTo[string])
			}
			return open, query
		}, `SELECT indexname::text FROM pg_indexes WHERE tablename = 'graph_applied' AND indexname <> 'graph_applied_pkey' ORDER BY indexname`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			open, query := tc.create(t)
			checkMigratedFromV1(t, now, open, query, tc.indexes)
		})
	}
}

// checkMigratedFromV1 opens the version 1 database of TestMigrateFromV1 with open and checks
// the migrations recorded, the new index (listed by the query indexes), the markers kept in
// dev and their pruning (relative to now), and that reopening finds nothing to migrate.
func checkMigratedFromV1(t *testing.T, now time.Time, open func() (graph.Store, error), query func(string) ([]string, error), indexes string) {
	ctx := context.Background()
	if idx, err := query(indexes); err != nil || len(idx) != 0 {
		t.Fatalf("version 1 indexes on graph_applied: %v, %v; want none", idx, err)
	}
	s, err := open()
	if err != nil {
		t.Fatalf("open a version 1 database: %v", err)
	}
	defer s.Close()
	versions, err := query(`SELECT CAST(version AS text) FROM schema_migrations ORDER BY version`)
	var want []string
	for v := range graph.SchemaVersion() {
		want = append(want, fmt.Sprint(v+1))
	}
	if err != nil || !slices.Equal(versions, want) {
		t.Errorf("schema_migrations versions %v, %v; want %v", versions, err, want)
	}
	if idx, err := query(indexes); err != nil || !slices.Equal(idx, []string{"graph_applied_applied_at"}) {
		t.Errorf("indexes on graph_applied after migrating: %v, %v; want graph_applied_applied_at", idx, err)
	}
	if n, err := graph.CountMarkers(ctx, s, graph.DefaultEnv); err != nil || n != 4 {
		t.Errorf("markers after migrating: %d, %v; want the 4 written by version 1, in dev", n, err)
	}
	b := graph.Batch{Nodes: []graph.Node{{ID: "m", Type: graph.TypeRule}}}
	if r, err := s.ApplyBatch(ctx, graph.DefaultEnv, b, "old:0"); err != nil || !r.AlreadyApplied {
		t.Errorf("old:0 before pruning: %+v, %v; want AlreadyApplied", r, err)
	}
	if n, err := s.PruneApplied(ctx, graph.DefaultEnv, "", now.Add(-graph.DefaultMarkerRetention)); err != nil || n != 3 {
		t.Errorf("PruneApplied = %d, %v; want 3", n, err)
	}
	if r, err := s.ApplyBatch(ctx, graph.DefaultEnv, b, "kept"); err != nil || !r.AlreadyApplied {
		t.Errorf("kept after pruning: %+v, %v; want AlreadyApplied", r, err)
	}
	// Reopening finds nothing to migrate.
	s2, err := open()
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = s2.Close()
}

// TestSQLitePruneUsesIndex: the chunk query searches the applied_at index instead of
// scanning graph_applied.
func TestSQLitePruneUsesIndex(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plan := queryPlan(t, db, `SELECT rowid FROM graph_applied WHERE env = ? AND applied_at < ? LIMIT ?`, "dev", 1, 10)
	if !slices.Contains(plan, "SEARCH graph_applied USING COVERING INDEX graph_applied_applied_at (env=? AND applied_at<?)") {
		t.Errorf("plan %q, want a search of graph_applied_applied_at", plan)
	}
}

// Regression: with graphs per env (schema version 3) SQLite planned the neighbours walk with
// the edges as the outer loop — every edge of the env scanned through an index led by env,
// the walk probed for each — and a 300-step budget took 6 s. Each step must search the edges
// of the node it reached, through the (env, source) and (env, target) indexes.
func TestSQLiteWalkUsesIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		name, filter string
		args         []any
	}{
		{"all types", "", []any{"a", 3, "dev", 100}},
		{"cites", " AND +e.type IN (?4)", []any{"a", 3, "dev", "cites", 100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := queryPlan(t, db, graph.SQLiteWalk(tc.filter, len(tc.args)), tc.args...)
			var searches []string
			for i, d := range plan {
				if strings.HasPrefix(d, "SEARCH e ") {
					searches = append(searches, d)
					if i == 0 || plan[i-1] != "SCAN w" {
						t.Errorf("edges searched before the walk is scanned: %q", plan)
					}
				}
			}
			if len(searches) != 2 || !strings.Contains(searches[0], "(env=? AND source=?)") || !strings.Contains(searches[1], "(env=? AND target=?)") {
				t.Errorf("edge searches %q, want one by (env, source) and one by (env, target); plan %q", searches, plan)
			}
		})
	}
}

// queryPlan returns the detail lines of SQLite's EXPLAIN QUERY PLAN for query.
func queryPlan(t *testing.T, db *sql.DB, query string, args ...any) []string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan
}

// failingPruner is a Store whose PruneApplied always fails; it records each cut.
type failingPruner struct {
	graph.Store // nil: RunMarkerPruner calls only PruneApplied
	cuts        chan time.Time
}

func (f *failingPruner) PruneApplied(ctx context.Context, env, prefix string, before time.Time) (int64, error) {
	if !slices.Contains(graph.Envs(), env) {
		return 0, fmt.Errorf("env %q, want one of %v", env, graph.Envs())
	}
	if prefix != "SLUICE_GRAPH:" {
		return 0, fmt.Errorf("prefix %q, want the one RunMarkerPruner was given", prefix)
	}
	select {
	case f.cuts <- before:
	default:
	}
	return 0, errors.New("database unavailable")
}

func TestRunMarkerPruner(t *testing.T) {
	tests := []struct {
		name        string
		every, keep time.Duration
		wantKeep    time.Duration
		wantCalls   int
	}{
		// The first prune runs at once; errors do not stop the ticks that follow.
		{"errors reported and retried", 5 * time.Millisecond, time.Hour, time.Hour, 4},
		// Zero means the defaults: only the first prune comes within the test.
		{"zero means defaults", 0, 0, graph.DefaultMarkerRetention, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			f := &failingPruner{cuts: make(chan time.Time, 100)}
			var reported atomic.Int32
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan struct{})
			var runErr error
			start := time.Now()
			go func() {
				defer close(stopped)
				runErr = graph.RunMarkerPruner(ctx, f, "SLUICE_GRAPH:", tc.every, tc.keep, func(error) { reported.Add(1) })
			}()
			for i := range tc.wantCalls {
				select {
				case cut := <-f.cuts:
					if lo, hi := start.Add(-tc.wantKeep), time.Now().Add(-tc.wantKeep); cut.Before(lo) || cut.After(hi) {
						t.Errorf("prune %d cut %v, want now-%v (between %v and %v)", i, cut, tc.wantKeep, lo, hi)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%d prunes in 5s, want %d", i, tc.wantCalls)
				}
			}
			// The error of the last prune reaches onErr just after its cut did: wait for it
			// before cancelling (a CI run cancelled in between and counted 3 of 4).
			for deadline := time.Now().Add(5 * time.Second); int(reported.Load()) < tc.wantCalls && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
			cancel()
			select {
			case <-stopped:
			case <-time.After(5 * time.Second):
				t.Fatal("RunMarkerPruner still running 5s after ctx ended")
			}
			if runErr != nil {
				t.Errorf("RunMarkerPruner = %v, want nil", runErr)
			}
			if n := int(reported.Load()); n < tc.wantCalls {
				t.Errorf("onErr called %d times, want at least %d", n, tc.wantCalls)
			}
		})
	}
}
