package graphtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// The ApplyBatches tests: many marked batches in one transaction, each as ApplyBatch would
// apply it on its own.

func node(id string, props map[string]any) graph.Node {
	return graph.Node{ID: id, Type: graph.TypeArtifact, Properties: props}
}

func applyBatches(t *testing.T, s graph.Store, bs []graph.MarkedBatch) []graph.BatchResult {
	t.Helper()
	res := s.ApplyBatches(context.Background(), bs)
	if len(res) != len(bs) {
		t.Fatalf("ApplyBatches of %d batches returned %d results", len(bs), len(res))
	}
	return res
}

// testApplyBatches: each batch of a group behaves as ApplyBatch called for it in turn — its
// own marker (a marker recorded by an earlier batch of the same group skips the later one),
// the nodes of earlier batches visible, a failing batch rolled back alone.
func (m markers) testApplyBatches(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	bs := []graph.MarkedBatch{
		{Env: env, MsgID: "command:a", Batch: graph.Batch{Nodes: []graph.Node{node("a", map[string]any{"v": 1})}}},
		// An edge to the node the batch before wrote, in the same transaction.
		{Env: env, MsgID: "command:b", Batch: graph.Batch{Nodes: []graph.Node{node("b", nil)},
			Edges: []graph.Edge{{Source: "b", Type: graph.EdgePartOf, Target: "a"}}}},
		// No marker: applies every time.
		{Env: env, MsgID: "", Batch: graph.Batch{Nodes: []graph.Node{node("c", nil)}}},
		// The same marker again in one group (a duplicate command): skipped.
		{Env: env, MsgID: "command:a", Batch: graph.Batch{Nodes: []graph.Node{node("a", map[string]any{"v": "dup"})}}},
		// Fails in the database (missing endpoint), after writing its node: rolled back alone.
		{Env: env, MsgID: "command:bad-edge", Batch: graph.Batch{Nodes: []graph.Node{node("orphan", nil)},
			Edges: []graph.Edge{{Source: "orphan", Type: graph.EdgeCites, Target: "nowhere"}}}},
		// Refused before the transaction (unknown type).
		{Env: env, MsgID: "command:bad-type", Batch: graph.Batch{Nodes: []graph.Node{{ID: "x", Type: "rule"}}}},
		// A later batch updating a node of an earlier one.
		{Env: env, MsgID: "command:a2", Batch: graph.Batch{Nodes: []graph.Node{node("a", map[string]any{"w": 2})}}},
	}
	res := applyBatches(t, s, bs)
	want := []graph.Result{
		{NodesCreated: 1},
		{NodesCreated: 1, EdgesCreated: 1},
		{NodesCreated: 1},
		{AlreadyApplied: true},
		{},
		{},
		{NodesUpdated: 1},
	}
	for i, r := range res {
		switch i {
		case 4, 5:
			wantInvalid(t, r.Err, fmt.Sprintf("batch %d (%s)", i, bs[i].MsgID))
		default:
			if r.Err != nil || r.Result != want[i] {
				t.Errorf("batch %d (%s): %+v, %v; want %+v", i, bs[i].MsgID, r.Result, r.Err, want[i])
			}
		}
	}
	a := getNode(t, s, "a")
	if a.Version != 2 || num(a.Properties["v"]) != "1" || num(a.Properties["w"]) != "2" {
		t.Errorf("node a %+v: want version 2, v=1 (the duplicate skipped), w=2", a)
	}
	for _, id := range []string{"orphan", "x"} {
		if _, err := s.GetNode(ctx, env, id); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("node %s of a failed batch: %v, want ErrNotFound", id, err)
		}
	}
	if e, err := s.GetEdge(ctx, env, graph.EdgeID("b", graph.EdgePartOf, "a")); err != nil || e.Version != 1 {
		t.Errorf("edge b->a: %+v, %v", e, err)
	}
	if n := m.count(t, s); n != 3 {
		t.Errorf("%d markers, want 3 (a, b, a2; none for the failed batches)", n)
	}
	applyGroupAgain(t, s, bs)
}

// applyGroupAgain delivers testApplyBatches' group again: every marked batch is skipped,
// the unmarked one applies again, the failed ones fail again, and the corrected one applies
// once.
func applyGroupAgain(t *testing.T, s graph.Store, bs []graph.MarkedBatch) {
	t.Helper()
	bs[4].Batch.Edges[0].Target = "a"
	res := applyBatches(t, s, bs)
	for i, r := range res {
		switch i {
		case 2:
			if r.Err != nil || r.Result != (graph.Result{NodesUpdated: 1}) {
				t.Errorf("unmarked batch again: %+v, %v; want applied", r.Result, r.Err)
			}
		case 4:
			if r.Err != nil || r.Result != (graph.Result{NodesCreated: 1, EdgesCreated: 1}) {
				t.Errorf("corrected batch: %+v, %v; want applied", r.Result, r.Err)
			}
		case 5:
			wantInvalid(t, r.Err, "bad type again")
		default:
			if r.Err != nil || !r.Result.AlreadyApplied {
				t.Errorf("batch %d (%s) again: %+v, %v; want AlreadyApplied", i, bs[i].MsgID, r.Result, r.Err)
			}
		}
	}
	if a := getNode(t, s, "a"); a.Version != 2 {
		t.Errorf("node a at version %d after a redelivered group, want 2", a.Version)
	}
	if c := getNode(t, s, "c"); c.Version != 2 {
		t.Errorf("node c (unmarked) at version %d, want 2", c.Version)
	}
}

// testApplyBatchesEdges: an empty group, a group of one, a group of only refused batches.
func testApplyBatchesEdges(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	if res := s.ApplyBatches(context.Background(), nil); len(res) != 0 {
		t.Errorf("ApplyBatches(nil) = %v, want no results", res)
	}
	one := []graph.MarkedBatch{{Env: env, MsgID: "one", Batch: graph.Batch{Nodes: []graph.Node{node("one", nil)}}}}
	if r := applyBatches(t, s, one)[0]; r.Err != nil || r.Result != (graph.Result{NodesCreated: 1}) {
		t.Errorf("group of one: %+v, %v", r.Result, r.Err)
	}
	if r := apply(t, s, one[0].Batch, "one"); !r.AlreadyApplied {
		t.Errorf("ApplyBatch with the marker ApplyBatches recorded: %+v, want AlreadyApplied", r)
	}
	bad := []graph.MarkedBatch{
		{Env: env, MsgID: "bad1", Batch: graph.Batch{Nodes: []graph.Node{{ID: "", Type: graph.TypeRule}}}},
		{Env: env, MsgID: "bad2", Batch: graph.Batch{Nodes: []graph.Node{{ID: "y", Type: "nope"}}}},
	}
	for i, r := range applyBatches(t, s, bad) {
		wantInvalid(t, r.Err, fmt.Sprintf("refused batch %d", i))
	}
}

// testApplyBatchesCanceled: a group whose ctx has ended writes nothing, and every batch
// gets a transient error.
func testApplyBatchesCanceled(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	bs := []graph.MarkedBatch{
		{Env: env, MsgID: "k1", Batch: graph.Batch{Nodes: []graph.Node{node("k1", nil)}}},
		{Env: env, MsgID: "k2", Batch: graph.Batch{Nodes: []graph.Node{node("k2", nil)}}},
	}
	for i, r := range s.ApplyBatches(ctx, bs) {
		if r.Err == nil || fault.IsPermanent(r.Err) {
			t.Errorf("batch %d with an ended ctx: %v, want a transient error", i, r.Err)
		}
	}
	st, err := s.Stats(context.Background(), env)
	if err != nil || st.TotalNodes() != 0 {
		t.Errorf("stats %+v, %v; want nothing written", st, err)
	}
	for i, r := range applyBatches(t, s, bs) {
		if r.Err != nil || r.Result.NodesCreated != 1 {
			t.Errorf("batch %d retried: %+v, %v", i, r.Result, r.Err)
		}
	}
}

func testApplyBatchesAfterClose(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	res := s.ApplyBatches(context.Background(), []graph.MarkedBatch{{Env: env, MsgID: "z", Batch: graph.Batch{Nodes: []graph.Node{node("z", nil)}}}})
	if len(res) != 1 || !errors.Is(res[0].Err, graph.ErrClosed) || fault.IsPermanent(res[0].Err) {
		t.Errorf("ApplyBatches after Close = %+v, want transient ErrClosed", res)
	}
}

// testApplyBatchesConcurrent: groups applied at once by several callers, each naming the
// same shared nodes in its own order (PostgreSQL: lock conflicts and deadlocks between
// whole groups, retried), every batch applied exactly once.
func testApplyBatchesConcurrent(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	const callers, groups, per, shared = 4, 6, 5, 4
	errs := make(chan error, callers*groups*per)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for g := range groups {
				bs := make([]graph.MarkedBatch, per)
				for i := range bs {
					var b graph.Batch
					for _, k := range rng.Perm(shared) {
						b.Nodes = append(b.Nodes, node(fmt.Sprintf("s%d", k), map[string]any{fmt.Sprintf("c%d", c): g*per + i}))
					}
					b.Nodes = append(b.Nodes, node(fmt.Sprintf("own%d_%d_%d", c, g, i), nil))
					bs[i] = graph.MarkedBatch{Env: env, MsgID: fmt.Sprintf("c%d:g%d:b%d", c, g, i), Batch: b}
				}
				for i, r := range s.ApplyBatches(context.Background(), bs) {
					if r.Err != nil {
						errs <- fmt.Errorf("caller %d group %d batch %d: %w", c, g, i, r.Err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for k := range shared {
		n := getNode(t, s, fmt.Sprintf("s%d", k))
		if n.Version != callers*groups*per {
			t.Errorf("s%d version %d, want %d", k, n.Version, callers*groups*per)
		}
		for c := range callers {
			if got := num(n.Properties[fmt.Sprintf("c%d", c)]); got != fmt.Sprint(groups*per-1) {
				t.Errorf("s%d c%d = %s, want %d (each caller's last batch)", k, c, got, groups*per-1)
			}
		}
	}
}
