package graph_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/graph/graphtest"
	"github.com/sluice-dev/sluice/sinks/graph/pgtest"
)

var (
	_ graph.Store = (*graph.SQLite)(nil)
	_ graph.Store = (*graph.Postgres)(nil)
)

// pg is the PostgreSQL cluster shared by every test of this binary, started in TestMain.
var pg *pgtest.Cluster

func TestMain(m *testing.M) {
	pg = pgtest.StartCluster()
	code := m.Run()
	closeBigGraphs()
	pg.Stop()
	os.Exit(code)
}

func newSQLite(t testing.TB, opts graph.Options) graph.Store {
	t.Helper()
	s, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: filepath.Join(t.TempDir(), "graph.db"), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newPostgres(t testing.TB, opts graph.Options) graph.Store {
	t.Helper()
	s, err := graph.OpenPostgres(context.Background(), graph.PostgresConfig{DSN: pg.Database(t), Options: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// hooks reach graph_applied through export_test.go.
var hooks = graphtest.Hooks{InsertMarkers: graph.InsertMarkers, CountMarkers: graph.CountMarkers}

func TestSQLiteConformance(t *testing.T) {
	graphtest.Run(t, func(t *testing.T, o graph.Options) graph.Store { return newSQLite(t, o) }, hooks)
}

func TestPostgresConformance(t *testing.T) {
	graphtest.Run(t, func(t *testing.T, o graph.Options) graph.Store { return newPostgres(t, o) }, hooks)
}

// TestMigrationsConcurrent opens several stores on one empty database at once: every open
// succeeds and each migration is recorded once.
func TestMigrationsConcurrent(t *testing.T) {
	sqlitePath := filepath.Join(t.TempDir(), "g.db")
	tests := []struct {
		name string
		open func() (graph.Store, error)
	}{
		{"sqlite", func() (graph.Store, error) {
			return graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: sqlitePath})
		}},
		{"postgres", func() func() (graph.Store, error) {
			dsn := pg.Database(t)
			return func() (graph.Store, error) {
				return graph.OpenPostgres(context.Background(), graph.PostgresConfig{DSN: dsn, MinConns: 1, MaxConns: 2})
			}
		}()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const n = 6
			stores := make(chan graph.Store, n)
			errs := make(chan error, n)
			var wg sync.WaitGroup
			for range n {
				wg.Go(func() {
					s, err := tc.open()
					if err != nil {
						errs <- err
						return
					}
					stores <- s
				})
			}
			wg.Wait()
			close(stores)
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			for s := range stores {
				if err := s.Ping(context.Background()); err != nil {
					t.Error(err)
				}
				_ = s.Close()
			}
		})
	}
	// Each version is recorded exactly once (primary key) and the newest is present.
	db, err := sql.Open("sqlite", sqlitePath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows, maxV int
	if err := db.QueryRow(`SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&rows, &maxV); err != nil {
		t.Fatal(err)
	}
	if rows != len(graphMigrationsWant()) || maxV != graph.SchemaVersion() {
		t.Errorf("schema_migrations has %d rows, max %d; want %d, %d", rows, maxV, graph.SchemaVersion(), graph.SchemaVersion())
	}
}

func graphMigrationsWant() []int {
	out := make([]int, graph.SchemaVersion())
	for i := range out {
		out[i] = i + 1
	}
	return out
}

// TestSQLiteBusyIsTransient: a write lock held by another connection past the busy timeout
// gives a transient error, never a permanent one.
func TestSQLiteBusyIsTransient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: path, BusyTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	_, err = s.ApplyBatch(context.Background(), graph.DefaultEnv, graph.Batch{Nodes: []graph.Node{{ID: "a", Type: graph.TypeRule}}}, "m")
	if err == nil || fault.IsPermanent(err) {
		t.Fatalf("ApplyBatch under a foreign write lock = %v, want a transient error", err)
	}
	if _, err := conn.ExecContext(context.Background(), "ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ApplyBatch(context.Background(), graph.DefaultEnv, graph.Batch{Nodes: []graph.Node{{ID: "a", Type: graph.TypeRule}}}, "m"); err != nil {
		t.Fatalf("retry after the lock is released: %v", err)
	}
}

func TestOpenDispatch(t *testing.T) {
	s, err := graph.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, ok := s.(*graph.SQLite); !ok {
		t.Errorf("a path opened %T, want *graph.SQLite", s)
	}
	p, err := graph.Open(context.Background(), pg.Database(t), graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pp, ok := p.(*graph.Postgres)
	if !ok {
		t.Fatalf("a postgres:// DSN opened %T", p)
	}
	if st := pp.PoolStats(); st.MaxConns != 20 {
		t.Errorf("pool MaxConns = %d, want 20", st.MaxConns)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.GetNode(context.Background(), graph.DefaultEnv, "x"); !errors.Is(err, graph.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
}
