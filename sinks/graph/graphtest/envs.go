package graphtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// The per-environment tests (issue 13: a graph loaded into test landed in the production
// graph, GET /v1/graph/stats?env=prod counted it). Each env is a graph of its own.

// smallGraph is a → b → c over cites, with a property naming where it was loaded.
func smallGraph(where string) graph.Batch {
	p := map[string]any{"loaded_in": where}
	return graph.Batch{
		Nodes: []graph.Node{{ID: "a", Type: graph.TypeRule, Properties: p}, {ID: "b", Type: graph.TypeConcept, Properties: p}, {ID: "c", Type: graph.TypeStep, Properties: p}},
		Edges: []graph.Edge{{Source: "a", Type: graph.EdgeCites, Target: "b", Properties: p}, {Source: "b", Type: graph.EdgeCites, Target: "c"}},
	}
}

// testEnvIsolation: a load into test is invisible from dev and prod — stats, node, edge,
// neighbours — and visible from test.
func testEnvIsolation(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	if _, err := s.ApplyBatch(ctx, "test", smallGraph("test"), "SLUICE_GRAPH:1"); err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"dev", "prod"} {
		st, err := s.Stats(ctx, other)
		if err != nil || st.TotalNodes() != 0 || st.TotalEdges() != 0 {
			t.Errorf("Stats(%s) after a test load = %+v, %v; want empty", other, st, err)
		}
		if n, err := s.GetNode(ctx, other, "a"); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("GetNode(%s, a) = %+v, %v; want ErrNotFound", other, n, err)
		}
		if e, err := s.GetEdge(ctx, other, graph.EdgeID("a", graph.EdgeCites, "b")); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("GetEdge(%s) = %+v, %v; want ErrNotFound", other, e, err)
		}
		if ns, err := s.Neighbors(ctx, other, "a", 3, nil); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("Neighbors(%s, a) = %v, %v; want ErrNotFound", other, ids(ns), err)
		}
	}
	st, err := s.Stats(ctx, "test")
	if err != nil || st.TotalNodes() != 3 || st.TotalEdges() != 2 {
		t.Errorf("Stats(test) = %+v, %v; want 3 nodes, 2 edges", st, err)
	}
	ns, err := s.Neighbors(ctx, "test", "a", 3, nil)
	if got := ids(ns); err != nil || len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Errorf("Neighbors(test, a) = %v, %v; want [b c]", got, err)
	}
}

// testEnvSameID: the same node and edge ids in two envs are independent rows: their own
// type, properties and versions; a traversal in one never crosses into the other; an edge
// in one env cannot end at a node that exists only in another.
func testEnvSameID(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	if _, err := s.ApplyBatch(ctx, "dev", smallGraph("dev"), "m1"); err != nil {
		t.Fatal(err)
	}
	prod := graph.Batch{
		Nodes: []graph.Node{{ID: "a", Type: graph.TypeEntity, Properties: map[string]any{"loaded_in": "prod"}}, {ID: "z", Type: graph.TypeEntity}},
		Edges: []graph.Edge{{Source: "a", Type: graph.EdgeCites, Target: "z"}},
	}
	if r, err := s.ApplyBatch(ctx, "prod", prod, "m2"); err != nil || r.NodesCreated != 2 || r.NodesUpdated != 0 || r.EdgesCreated != 1 {
		t.Fatalf("prod batch with ids dev holds: %+v, %v; want 2 nodes and 1 edge created", r, err)
	}
	if _, err := s.ApplyBatch(ctx, "dev", graph.Batch{Nodes: []graph.Node{{ID: "a", Type: graph.TypeRule, Properties: map[string]any{"again": true}}}}, "m3"); err != nil {
		t.Fatal(err)
	}
	dev, prodA := getNodeIn(t, s, "dev", "a"), getNodeIn(t, s, "prod", "a")
	if dev.Type != graph.TypeRule || dev.Version != 2 || dev.Properties["loaded_in"] != "dev" || dev.Properties["again"] != true {
		t.Errorf("dev a = %+v; want Rule, version 2, dev's properties", dev)
	}
	if prodA.Type != graph.TypeEntity || prodA.Version != 1 || prodA.Properties["loaded_in"] != "prod" || prodA.Properties["again"] != nil {
		t.Errorf("prod a = %+v; want Entity, version 1, prod's properties only", prodA)
	}
	if ns, err := s.Neighbors(ctx, "prod", "a", 5, nil); err != nil || len(ns) != 1 || ns[0].ID != "z" {
		t.Errorf("Neighbors(prod, a) = %v, %v; want [z]", ids(ns), err)
	}
	if ns, err := s.Neighbors(ctx, "dev", "a", 5, nil); err != nil || len(ids(ns)) != 2 {
		t.Errorf("Neighbors(dev, a) = %v, %v; want [b c]", ids(ns), err)
	}
	// The same edge triple in two envs: two edges.
	if _, err := s.ApplyBatch(ctx, "prod", graph.Batch{Nodes: []graph.Node{{ID: "b", Type: graph.TypeConcept}},
		Edges: []graph.Edge{{Source: "a", Type: graph.EdgeCites, Target: "b", Properties: map[string]any{"w": 2}}}}, "m4"); err != nil {
		t.Fatal(err)
	}
	id := graph.EdgeID("a", graph.EdgeCites, "b")
	de, err1 := s.GetEdge(ctx, "dev", id)
	pe, err2 := s.GetEdge(ctx, "prod", id)
	if err1 != nil || err2 != nil || de.Version != 1 || pe.Version != 1 || de.Properties["w"] != nil || pe.Properties["loaded_in"] != nil {
		t.Errorf("edge %s: dev %+v (%v), prod %+v (%v); want two independent edges at version 1", id, de, err1, pe, err2)
	}
	// c exists in dev only: an edge to it in test is missing its endpoint.
	_, err := s.ApplyBatch(ctx, "test", graph.Batch{Nodes: []graph.Node{{ID: "t", Type: graph.TypeStep}},
		Edges: []graph.Edge{{Source: "t", Type: graph.EdgeCites, Target: "c"}}}, "m5")
	var missing *graph.MissingEndpointsError
	if !errors.As(err, &missing) || !fault.IsPermanent(err) {
		t.Errorf("test edge to a dev-only node: %v; want a permanent MissingEndpointsError", err)
	}
	if _, err := s.GetNode(ctx, "test", "t"); !errors.Is(err, graph.ErrNotFound) {
		t.Errorf("the refused batch left node t in test: %v", err)
	}
	for _, tc := range []struct {
		env          string
		nodes, edges int
	}{{"dev", 3, 2}, {"prod", 3, 2}, {"test", 0, 0}} {
		if st, err := s.Stats(ctx, tc.env); err != nil || st.TotalNodes() != tc.nodes || st.TotalEdges() != tc.edges {
			t.Errorf("Stats(%s) = %+v, %v; want %d nodes, %d edges", tc.env, st, err, tc.nodes, tc.edges)
		}
	}
}

func getNodeIn(t *testing.T, s graph.Store, env, id string) graph.Node {
	t.Helper()
	n, err := s.GetNode(context.Background(), env, id)
	if err != nil {
		t.Fatalf("GetNode(%s, %s): %v", env, id, err)
	}
	return n
}

// testEnvMarkers: apply markers are per env. The same message id applied to two envs is two
// batches (each applied once); a redelivery in one env is still recognised; ApplyBatches
// keeps each batch's env, including two batches with one marker in different envs.
func testEnvMarkers(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	b := graph.Batch{Nodes: []graph.Node{{ID: "n", Type: graph.TypeRule}}}
	for _, e := range graph.Envs() {
		if r, err := s.ApplyBatch(ctx, e, b, "SLUICE_GRAPH:7"); err != nil || r.AlreadyApplied || r.NodesCreated != 1 {
			t.Errorf("ApplyBatch(%s, SLUICE_GRAPH:7) = %+v, %v; want applied", e, r, err)
		}
	}
	if r, err := s.ApplyBatch(ctx, "test", b, "SLUICE_GRAPH:7"); err != nil || !r.AlreadyApplied {
		t.Errorf("redelivery in test = %+v, %v; want AlreadyApplied", r, err)
	}
	res := s.ApplyBatches(ctx, []graph.MarkedBatch{
		{Env: "dev", MsgID: "command:x", Batch: b},
		{Env: "prod", MsgID: "command:x", Batch: b},
		{Env: "dev", MsgID: "command:x", Batch: b}, // the first batch's marker
		{Env: "staging", MsgID: "command:y", Batch: b},
	})
	for i, want := range []bool{false, false, true} {
		if res[i].Err != nil || res[i].Result.AlreadyApplied != want {
			t.Errorf("ApplyBatches[%d] = %+v; want AlreadyApplied %v", i, res[i], want)
		}
	}
	if err := res[3].Err; !errors.Is(err, graph.ErrInvalid) || !fault.IsPermanent(err) {
		t.Errorf("ApplyBatches[3] in env staging: %v; want a permanent ErrInvalid", err)
	}
	for _, tc := range []struct {
		env     string
		version int64
	}{{"dev", 2}, {"test", 1}, {"prod", 2}} {
		if v := getNodeIn(t, s, tc.env, "n").Version; v != tc.version {
			t.Errorf("%s n version %d, want %d", tc.env, v, tc.version)
		}
	}
}

// testEnvPrune: pruning one env's markers leaves the other envs' markers (and so their
// redelivery protection) intact; RunMarkerPruner prunes every env.
func (m markers) testEnvPrune(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	old := time.Now().Add(-48 * time.Hour)
	for _, e := range graph.Envs() {
		m.insertIn(t, s, e, old, msgIDs("SLUICE_GRAPH", 5)...)
	}
	n, err := s.PruneApplied(ctx, "test", "SLUICE_GRAPH:", time.Now().Add(-time.Hour))
	if err != nil || n != 5 {
		t.Fatalf("PruneApplied(test) = %d, %v; want 5", n, err)
	}
	for _, tc := range []struct {
		env  string
		left int64
	}{{"dev", 5}, {"test", 0}, {"prod", 5}} {
		if got := m.countIn(t, s, tc.env); got != tc.left {
			t.Errorf("%s markers after pruning test: %d, want %d", tc.env, got, tc.left)
		}
	}
	b := graph.Batch{Nodes: []graph.Node{{ID: "p", Type: graph.TypeRule}}}
	if r, err := s.ApplyBatch(ctx, "prod", b, "SLUICE_GRAPH:0"); err != nil || !r.AlreadyApplied {
		t.Errorf("prod's marker after pruning test: %+v, %v; want AlreadyApplied", r, err)
	}
	if r, err := s.ApplyBatch(ctx, "test", b, "SLUICE_GRAPH:0"); err != nil || r.AlreadyApplied {
		t.Errorf("test's pruned marker: %+v, %v; want applied", r, err)
	}

	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- graph.RunMarkerPruner(pctx, s, "SLUICE_GRAPH:", time.Hour, time.Hour, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for m.countIn(t, s, "dev")+m.countIn(t, s, "prod") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("RunMarkerPruner left dev %d and prod %d old markers", m.countIn(t, s, "dev"), m.countIn(t, s, "prod"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := m.countIn(t, s, "test"); got != 1 {
		t.Errorf("test markers after RunMarkerPruner: %d, want the fresh one", got)
	}
}

// testEnvInvalid: an env other than dev, test and prod is refused by every method as a
// permanent validation error; nothing is written.
func testEnvInvalid(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	for _, bad := range []string{"", "staging", "Dev", "prod ", "dev\x00"} {
		calls := map[string]error{}
		_, calls["ApplyBatch"] = s.ApplyBatch(ctx, bad, smallGraph(bad), "m")
		calls["ApplyBatches"] = s.ApplyBatches(ctx, []graph.MarkedBatch{{Env: bad, MsgID: "m", Batch: smallGraph(bad)}})[0].Err
		_, calls["GetNode"] = s.GetNode(ctx, bad, "a")
		_, calls["GetEdge"] = s.GetEdge(ctx, bad, "a")
		_, calls["Neighbors"] = s.Neighbors(ctx, bad, "a", 1, nil)
		_, calls["Stats"] = s.Stats(ctx, bad)
		_, calls["PruneApplied"] = s.PruneApplied(ctx, bad, "", time.Now())
		for name, err := range calls {
			if !errors.Is(err, graph.ErrInvalid) || !fault.IsPermanent(err) {
				t.Errorf("%s(env %q) = %v; want a permanent ErrInvalid", name, bad, err)
			}
		}
	}
	for _, e := range graph.Envs() {
		if st, err := s.Stats(ctx, e); err != nil || st.TotalNodes() != 0 {
			t.Errorf("Stats(%s) = %+v, %v; want empty", e, st, err)
		}
	}
}
