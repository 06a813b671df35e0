package graph_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// Failures in the middle of an ApplyBatches group, injected by triggers in the real
// databases: a statement-level failure of one batch fails that batch alone; a failure that
// takes the transaction down fails every batch, and none of them is reported applied.

func group(ids ...string) []graph.MarkedBatch {
	bs := make([]graph.MarkedBatch, len(ids))
	for i, id := range ids {
		bs[i] = graph.MarkedBatch{Env: graph.DefaultEnv, MsgID: "command:" + id, Batch: graph.Batch{Nodes: []graph.Node{{ID: id, Type: graph.TypeArtifact}}}}
	}
	return bs
}

// wantGroup checks each result: nil in want means applied (one node created); otherwise the
// result's error must match the check.
func wantGroup(t *testing.T, res []graph.BatchResult, want []func(error) bool) {
	t.Helper()
	for i, r := range res {
		if want[i] == nil {
			if r.Err != nil || r.Result.NodesCreated != 1 {
				t.Errorf("batch %d: %+v, %v; want applied", i, r.Result, r.Err)
			}
			continue
		}
		if !want[i](r.Err) {
			t.Errorf("batch %d: err %v, result %+v; not the failure expected", i, r.Err, r.Result)
		}
	}
}

func transient(err error) bool { return err != nil && !fault.IsPermanent(err) }

func nodesStored(t *testing.T, s graph.Store) int {
	t.Helper()
	st, err := s.Stats(context.Background(), graph.DefaultEnv)
	if err != nil {
		t.Fatal(err)
	}
	return st.TotalNodes()
}

func TestSQLiteApplyBatchesFailingMidGroup(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "g.db")
	s, err := graph.OpenSQLite(ctx, graph.SQLiteConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	exec := func(q string) {
		t.Helper()
		if _, err := other.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// json() of a non-JSON string fails at run time with SQLITE_ERROR: a transient error of
	// this statement only; the transaction goes on.
	exec(`CREATE TRIGGER fail_one BEFORE INSERT ON graph_nodes WHEN NEW.id = 'boom' BEGIN SELECT json('injected failure'); END`)
	wantGroup(t, s.ApplyBatches(ctx, group("a", "boom", "c")), []func(error) bool{nil, transient, nil})
	if n := nodesStored(t, s); n != 2 {
		t.Errorf("%d nodes stored, want 2 (a and c)", n)
	}
	exec(`DROP TRIGGER fail_one`)
	// Retried alone, the failed batch applies; the others are skipped by their markers.
	res := s.ApplyBatches(ctx, group("a", "boom", "c"))
	if res[1].Err != nil || res[1].Result.NodesCreated != 1 || !res[0].Result.AlreadyApplied || !res[2].Result.AlreadyApplied {
		t.Errorf("retry: %+v", res)
	}

	// RAISE(ROLLBACK) ends the whole transaction from inside a batch: the batch before it,
	// already written in the transaction, must not be reported applied.
	exec(`CREATE TRIGGER kill_tx BEFORE INSERT ON graph_nodes WHEN NEW.id = 'rollback' BEGIN SELECT RAISE(ROLLBACK, 'injected rollback'); END`)
	wantGroup(t, s.ApplyBatches(ctx, group("d", "rollback", "e")), []func(error) bool{transient, transient, transient})
	if n := nodesStored(t, s); n != 3 {
		t.Errorf("%d nodes stored after a rolled-back group, want 3 (a, boom, c)", n)
	}
	exec(`DROP TRIGGER kill_tx`)
	wantGroup(t, s.ApplyBatches(ctx, group("d", "rollback", "e")), []func(error) bool{nil, nil, nil})
}

func TestPostgresApplyBatchesFailingMidGroup(t *testing.T) {
	ctx := context.Background()
	dsn := pg.Database(t)
	s, err := graph.OpenPostgres(ctx, graph.PostgresConfig{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string) {
		t.Helper()
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// One trigger, behaviour chosen by node id:
	//   boom      53000 insufficient_resources, a transient error of that batch only;
	//   conflict  40001 serialization_failure while the sequence is below 3: the whole
	//             group is retried (twice);
	//   kill      the session is terminated: the transaction is lost with every batch.
	exec(`CREATE SEQUENCE conflicts`)
	exec(`CREATE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF NEW.id = 'boom' THEN
				RAISE EXCEPTION 'injected failure' USING ERRCODE = '53000';
			ELSIF NEW.id = 'conflict' AND nextval('conflicts') < 3 THEN
				RAISE EXCEPTION 'injected conflict' USING ERRCODE = '40001';
			ELSIF NEW.id = 'kill' THEN
				PERFORM pg_terminate_backend(pg_backend_pid());
			END IF;
			RETURN NEW;
		END $$`)
	exec(`CREATE TRIGGER inject BEFORE INSERT ON graph_nodes FOR EACH ROW EXECUTE FUNCTION inject()`)

	wantGroup(t, s.ApplyBatches(ctx, group("a", "boom", "c")), []func(error) bool{nil, transient, nil})
	if n := nodesStored(t, s); n != 2 {
		t.Errorf("%d nodes stored, want 2 (a and c)", n)
	}

	// Serialization failures retry the whole group; each batch is applied once.
	wantGroup(t, s.ApplyBatches(ctx, group("f", "conflict", "g")), []func(error) bool{nil, nil, nil})
	var calls int64
	if err := conn.QueryRow(ctx, `SELECT last_value FROM conflicts`).Scan(&calls); err != nil || calls != 3 {
		t.Errorf("conflict trigger ran %d times (%v), want 3 (two failed attempts, one applied)", calls, err)
	}
	for _, id := range []string{"f", "g"} {
		if n, err := s.GetNode(ctx, graph.DefaultEnv, id); err != nil || n.Version != 1 {
			t.Errorf("node %s after retries: %+v, %v; want version 1", id, n, err)
		}
	}

	wantGroup(t, s.ApplyBatches(ctx, group("h", "kill", "i")), []func(error) bool{transient, transient, transient})
	for _, id := range []string{"h", "kill", "i"} {
		if _, err := s.GetNode(ctx, graph.DefaultEnv, id); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("node %s of a lost transaction: %v, want ErrNotFound", id, err)
		}
	}
	exec(`DROP TRIGGER inject ON graph_nodes`)
	wantGroup(t, s.ApplyBatches(ctx, group("h", "kill", "i")), []func(error) bool{nil, nil, nil})
}
