package pipeline_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
)

var _ commands.GraphBatchApplier = graph.Store(nil)

// recordingGraph is a real SQLite graph store that records, for each ApplyBatches call (one
// graph transaction), the marker of each batch and what became of it. after, when set, runs
// once a call returned, on the caller's goroutine.
type recordingGraph struct {
	*graph.SQLite
	entered atomic.Int64
	mu      sync.Mutex
	calls   [][]projection
	after   func([]projection)
}

type projection struct {
	marker string
	err    error
	result graph.Result
}

func (g *recordingGraph) ApplyBatches(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult {
	g.entered.Add(1)
	res := g.SQLite.ApplyBatches(ctx, bs)
	call := make([]projection, len(bs))
	for i, b := range bs {
		call[i] = projection{marker: b.MsgID, err: res[i].Err, result: res[i].Result}
	}
	g.mu.Lock()
	g.calls = append(g.calls, call)
	g.mu.Unlock()
	if g.after != nil {
		g.after(call)
	}
	return res
}

func (g *recordingGraph) snapshot() [][]projection {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][]projection(nil), g.calls...)
}

// openGraphFile opens the cmdEnv's graph file with busy, and a plain database/sql handle on
// the same file for the test to lock it and install triggers, as another process could.
func (ce *cmdEnv) openGraphFile(t *testing.T, busy time.Duration) (*graph.SQLite, *sql.DB) {
	t.Helper()
	gs, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: ce.graphPath, BusyTimeout: busy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gs.Close() })
	other, err := sql.Open("sqlite", ce.graphPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = other.Close() })
	return gs, other
}

// lockGraph takes the graph file's write lock on a connection of its own and returns the
// function that releases it.
func lockGraph(t *testing.T, db *sql.DB) (release func()) {
	t.Helper()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Error(err)
			}
			_ = conn.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// submitAll submits cmds at once and waits until the store has applied each one (its apply
// marker commits before the graph projection).
func (ce *cmdEnv) submitAll(t *testing.T, cmds []requirements.Command) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, len(cmds))
	for _, c := range cmds {
		wg.Go(func() {
			if _, err := ce.client.Submit(ctx, c); err != nil {
				errs <- fmt.Errorf("submit %s: %w", c.CommandID, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range cmds {
		waitFor(t, "the store to apply "+c.CommandID, func() bool {
			_, err := ce.store.CommandOutcome(ctx, c.CommandID)
			return err == nil
		})
	}
}

// awaitProjected waits for each command's outcome (published after its projection) and
// checks that its feature request was projected exactly once: node version 1.
func (ce *cmdEnv) awaitProjected(t *testing.T, cmds []requirements.Command) {
	t.Helper()
	ctx := context.Background()
	for _, c := range cmds {
		out, ok, err := ce.client.Await(ctx, c.CommandID, time.Minute)
		if err != nil || !ok || !out.Applied {
			t.Fatalf("outcome of %s: %+v, %v, %v", c.CommandID, out, ok, err)
		}
		n, err := ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID(c.SubmitFeatureRequest.RequestID))
		if err != nil || n.Version != 1 {
			t.Errorf("graph node of %s: %+v, %v; want version 1 (projected once)", c.CommandID, n, err)
		}
	}
	if dl := ce.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters, first %+v", len(dl), dl[0])
	}
}

func featureCmds(prefix string, n int) []requirements.Command {
	cmds := make([]requirements.Command, n)
	for i := range cmds {
		cmds[i] = featureCmd(fmt.Sprintf("FR-%s%05d", prefix, i))
		cmds[i].CommandID = fmt.Sprintf("cmd-%s-%d", prefix, i)
	}
	return cmds
}

// Regression (issue 12, item 4): the command worker ran one graph transaction — one fsync —
// per command while its store writes and publishes were grouped. Now the projections of
// commands handed over at once share one transaction; a projection that fails inside it
// (here a statement error raised by a trigger on one node) is rolled back and retried alone,
// and the others in its group commit once.
func TestCommandsGraphProjectionsGrouped(t *testing.T) {
	ce := newCmdEnv(t)
	ctx := context.Background()
	gs, other := ce.openGraphFile(t, time.Minute)
	// One command per partition (the last one fails): a partition holding two would hand the
	// second over only after the first's projection, alone.
	cmds := onePerPartition(ce)
	boom := cmds[len(cmds)-1]
	boomMarker := "command:" + boom.CommandID
	// json() of a non-JSON string fails at run time with SQLITE_ERROR: transient, and only
	// the statement fails, not the transaction.
	if _, err := other.ExecContext(ctx, fmt.Sprintf(`CREATE TRIGGER fail_boom BEFORE INSERT ON graph_nodes
		WHEN NEW.id = '%s' BEGIN SELECT json('injected failure'); END`, requirements.FeatureNodeID(boom.SubmitFeatureRequest.RequestID))); err != nil {
		t.Fatal(err)
	}
	var failures atomic.Int64
	rg := &recordingGraph{SQLite: gs, after: func(call []projection) {
		for _, p := range call {
			if p.marker == boomMarker && p.err != nil && failures.Add(1) == 2 {
				// The store recovers after two failed attempts.
				if _, err := other.ExecContext(ctx, `DROP TRIGGER fail_boom`); err != nil {
					t.Error(err)
				}
			}
		}
	}}
	ce.startCommandWorker(t, commands.WorkerConfig{Graph: rg})

	// Hold the graph's write lock while the commands reach the projection, so they queue
	// into one group behind the first; the failing one comes last, never alone in front.
	release := lockGraph(t, other)
	ce.submitAll(t, cmds[:len(cmds)-1])
	for _, c := range cmds[:len(cmds)-1] {
		m, err := ce.cs.Commands.GetLastMsgForSubject(ctx, "sluice.v1.features.*."+c.Key())
		if err != nil {
			t.Fatal(err)
		}
		if got, want := strings.Split(m.Subject, ".")[3], strconv.Itoa(commandPartition(c.Key(), ce.cs.Partitions)); got != want {
			t.Fatalf("%s stored in partition %s, computed %s: nats-server's partition hash changed", c.Key(), got, want)
		}
	}
	ce.submitAll(t, cmds[len(cmds)-1:])
	waitFor(t, "a projection waiting on the lock", func() bool { return rg.entered.Load() > 0 })
	time.Sleep(200 * time.Millisecond) // the last handler hands its projection over
	release()
	ce.awaitProjected(t, cmds)

	checkGroupedAttempts(t, rg, cmds, boom)
}

// onePerPartition returns one feature submission per command partition of ce, ids
// cmd-5000000-0 … (the last one is the scenario's failing one): a partition holding two would
// hand the second over only after the first's projection, alone.
func onePerPartition(ce *cmdEnv) []requirements.Command {
	var cmds []requirements.Command
	used := map[int]bool{}
	for i := 0; len(cmds) < ce.cs.Partitions; i++ {
		c := featureCmd(fmt.Sprintf("FR-5000000%05d", i))
		if p := commandPartition(c.Key(), ce.cs.Partitions); !used[p] {
			used[p] = true
			c.CommandID = fmt.Sprintf("cmd-5000000-%d", len(cmds))
			cmds = append(cmds, c)
		}
	}
	return cmds
}

// checkGroupedAttempts checks the projections recorded by rg: the failing one (boom) shared a
// graph transaction with one that committed, failed twice and was then applied; every other
// was applied once, never retried; and there were fewer transactions than commands plus the
// two retries.
func checkGroupedAttempts(t *testing.T, rg *recordingGraph, cmds []requirements.Command, boom requirements.Command) {
	t.Helper()
	boomMarker := "command:" + boom.CommandID
	attempts := map[string][]error{}
	sharedFailure := false
	for _, call := range rg.snapshot() {
		othersOK := 0
		for _, p := range call {
			attempts[p.marker] = append(attempts[p.marker], p.err)
			if p.marker != boomMarker && p.err == nil && !p.result.AlreadyApplied {
				othersOK++
			}
		}
		for _, p := range call {
			if p.marker == boomMarker && p.err != nil && othersOK > 0 {
				sharedFailure = true
			}
		}
	}
	if !sharedFailure {
		t.Errorf("the failing projection never shared a graph transaction with one that committed; calls %v", rg.snapshot())
	}
	for _, c := range cmds {
		errs := attempts["command:"+c.CommandID]
		switch {
		case c.CommandID == boom.CommandID:
			if len(errs) != 3 || errs[0] == nil || errs[1] == nil || errs[2] != nil {
				t.Errorf("failing projection attempts %v; want two failures, then applied", errs)
			}
		case len(errs) != 1 || errs[0] != nil:
			t.Errorf("projection of %s attempts %v; want applied once, never retried", c.CommandID, errs)
		}
	}
	if n := len(rg.snapshot()); n >= len(cmds)+2 {
		t.Errorf("%d graph transactions for %d commands (+2 retries): nothing was grouped", n, len(cmds))
	}
}

// A worker stopped while its graph transaction waits (the file locked past the drain
// timeout): the group completes after its callers gave their messages back; the next
// worker finds the apply markers, projects nothing twice, and settles every command.
func TestCommandsStoppedMidGraphGroup(t *testing.T) {
	ce := newCmdEnv(t)
	gs, other := ce.openGraphFile(t, 3*time.Second)
	rg := &recordingGraph{SQLite: gs}
	stop := ce.startCommandWorker(t, commands.WorkerConfig{Graph: rg, DrainTimeout: 300 * time.Millisecond})
	cmds := featureCmds("5100000", 8)

	release := lockGraph(t, other)
	ce.submitAll(t, cmds)
	waitFor(t, "a projection waiting on the lock", func() bool { return rg.entered.Load() > 0 })
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(time.Second) // past the drain timeout
	release()
	select {
	case err := <-stopped:
		if err != nil {
			t.Logf("first worker stopped: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not stop within 30 s of a stalled graph transaction")
	}
	committed := 0
	for _, call := range rg.snapshot() {
		for _, p := range call {
			if p.err == nil && !p.result.AlreadyApplied {
				committed++
			}
		}
	}
	t.Logf("before the stop: %d graph transactions, %d projections committed", len(rg.snapshot()), committed)

	gs2, _ := ce.openGraphFile(t, 3*time.Second)
	rg2 := &recordingGraph{SQLite: gs2}
	ce.startCommandWorker(t, commands.WorkerConfig{Graph: rg2})
	ce.awaitProjected(t, cmds)
	skipped := 0
	for _, call := range rg2.snapshot() {
		for _, p := range call {
			switch {
			case p.err != nil:
			case p.result.AlreadyApplied:
				skipped++
			default:
				committed++
			}
		}
	}
	t.Logf("after the restart: %d projections committed, %d skipped by their markers", committed, skipped)
	if committed != len(cmds) {
		t.Errorf("%d projections committed in all, want %d (each command once)", committed, len(cmds))
	}
}

// The command worker projects into one env's graph (issue 13: graphs are kept per env, and
// requirements are not): dev by default, GraphEnv when set; other envs never see the
// projection. A GraphEnv that is not dev, test or prod is refused at construction.
func TestCommandProjectionEnv(t *testing.T) {
	ctx := context.Background()
	t.Run("default dev", func(t *testing.T) {
		ce := newCmdEnv(t)
		ce.startCommandWorker(t, commands.WorkerConfig{})
		if out := ce.run(t, featureCmd("FR-7100000000001")); !out.Applied {
			t.Fatalf("outcome %+v", out)
		}
		id := requirements.FeatureNodeID("FR-7100000000001")
		if _, err := ce.graph.GetNode(ctx, "dev", id); err != nil {
			t.Errorf("dev: %v; want the projection", err)
		}
		for _, env := range []string{"test", "prod"} {
			if _, err := ce.graph.GetNode(ctx, env, id); !errors.Is(err, graph.ErrNotFound) {
				t.Errorf("%s: %v; want ErrNotFound", env, err)
			}
		}
	})
	t.Run("configured prod", func(t *testing.T) {
		ce := newCmdEnv(t)
		ce.startCommandWorker(t, commands.WorkerConfig{GraphEnv: "prod"})
		if out := ce.run(t, featureCmd("FR-7100000000002")); !out.Applied {
			t.Fatalf("outcome %+v", out)
		}
		id := requirements.FeatureNodeID("FR-7100000000002")
		if n, err := ce.graph.GetNode(ctx, "prod", id); err != nil || n.Version != 1 {
			t.Errorf("prod: %+v, %v; want the projection", n, err)
		}
		for _, env := range []string{"dev", "test"} {
			if _, err := ce.graph.GetNode(ctx, env, id); !errors.Is(err, graph.ErrNotFound) {
				t.Errorf("%s: %v; want ErrNotFound", env, err)
			}
		}
	})
	t.Run("invalid", func(t *testing.T) {
		ce := newCmdEnv(t)
		_, err := commands.NewWorker(commands.WorkerConfig{JS: ce.js, Streams: ce.cs, Store: ce.store, Key: testKey(t), Graph: ce.graph, GraphEnv: "staging"})
		if err == nil || !strings.Contains(err.Error(), "GraphEnv") {
			t.Errorf("NewCommandWorker with GraphEnv staging: %v; want refused", err)
		}
		_, err = commands.NewClient(commands.ClientConfig{JS: ce.js, Streams: ce.cs, Store: ce.store, Key: testKey(t), Graph: ce.graph, GraphEnv: "Prod"})
		if err == nil || !strings.Contains(err.Error(), "GraphEnv") {
			t.Errorf("NewCommandClient with GraphEnv Prod: %v; want refused", err)
		}
	})
}

// commandPartition returns the partition of the command stream a key is stored in: the
// stream's {{partition(n,2)}} transform is FNV-1a (32 bits) of the key modulo n in
// nats-server (TestCommandsGraphProjectionsGrouped checks it against stored subjects).
func commandPartition(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}
