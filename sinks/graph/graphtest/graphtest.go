// Package graphtest is the conformance suite every graph.Store backend passes. A backend's
// test calls Run with a constructor; each subtest gets a fresh, empty store.
package graphtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// NewStore returns a fresh, empty store with the given options and registers its cleanup
// (Close) with t. It is called from the test goroutine.
type NewStore func(t *testing.T, opts graph.Options) graph.Store

// Hooks reach beneath graph.Store into graph_applied, for the apply-marker tests: the Store
// interface can neither backdate a marker nor count them. A backend's test builds them on
// the store's own connections.
type Hooks struct {
	// InsertMarkers records an apply marker in env for each of msgIDs with applied_at = at,
	// in one transaction. Required.
	InsertMarkers func(ctx context.Context, s graph.Store, env string, at time.Time, msgIDs []string) error
	// CountMarkers returns the number of env's rows in graph_applied. Required.
	CountMarkers func(ctx context.Context, s graph.Store, env string) (int64, error)
}

// env is the environment the suite's single-env tests use; the Env* tests use all three.
const env = graph.DefaultEnv

// Run runs the suite as subtests of t. It fails t at once when a hook is missing.
func Run(t *testing.T, newStore NewStore, h Hooks) {
	t.Helper()
	if h.InsertMarkers == nil || h.CountMarkers == nil {
		t.Fatal("graphtest: Hooks.InsertMarkers and Hooks.CountMarkers are required")
	}
	m := markers{Hooks: h}
	tests := []struct {
		name string
		fn   func(*testing.T, NewStore)
	}{
		{"UpsertMergesAndKeepsType", testUpsert},
		{"RedeliveryDoesNotBump", testRedelivery},
		{"DuplicateIDsInOneBatch", testDuplicates},
		{"EdgeIDDeterministic", testEdgeID},
		{"PIIAndTruncation", testPII},
		{"PIIOff", testPIIOff},
		{"Fixture", testFixture},
		{"Validation", testValidation},
		{"RollbackOnLastEdge", testRollback},
		{"NeighborsBasics", testNeighborsBasics},
		{"NeighborsMatchBFS", testNeighborsBFS},
		{"NeighborsCap", testNeighborsCap},
		{"NeighborsVisitBudget", testNeighborsBudget},
		{"NeighborsHonoursContext", testNeighborsContext},
		{"ConcurrentOverlappingBatches", testConcurrent},
		{"ConcurrentRedelivery", testConcurrentRedelivery},
		{"ApplyBatchesEachOwnMarker", m.testApplyBatches},
		{"ApplyBatchesEdges", testApplyBatchesEdges},
		{"ApplyBatchesCanceled", testApplyBatchesCanceled},
		{"ApplyBatchesAfterClose", testApplyBatchesAfterClose},
		{"ApplyBatchesConcurrent", testApplyBatchesConcurrent},
		{"PruneApplied", m.testPrune},
		{"PruneAppliedManyChunks", m.testPruneChunks},
		{"PruneAppliedCanceled", m.testPruneCanceled},
		{"PruneAppliedAfterClose", testPruneAfterClose},
		{"MarkerPruner", m.testMarkerPruner},
		{"EnvIsolation", testEnvIsolation},
		{"EnvSameIDIndependent", testEnvSameID},
		{"EnvMarkers", testEnvMarkers},
		{"EnvPrune", m.testEnvPrune},
		{"EnvInvalid", testEnvInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore) })
	}
}

func apply(t *testing.T, s graph.Store, b graph.Batch, msg string) graph.Result {
	t.Helper()
	res, err := s.ApplyBatch(context.Background(), env, b, msg)
	if err != nil {
		t.Fatalf("ApplyBatch(%s): %v", msg, err)
	}
	return res
}

func getNode(t *testing.T, s graph.Store, id string) graph.Node {
	t.Helper()
	n, err := s.GetNode(context.Background(), env, id)
	if err != nil {
		t.Fatalf("GetNode(%s): %v", id, err)
	}
	return n
}

func num(v any) string { return fmt.Sprint(v) }

func testUpsert(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	r := apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "rule:a", Type: graph.TypeRule, Properties: map[string]any{"a": 1, "b": "x", "nested": map[string]any{"p": 1, "q": 2}}}}}, "m1")
	if r.NodesCreated != 1 || r.NodesUpdated != 0 {
		t.Fatalf("first apply result %+v, want 1 created", r)
	}
	first := getNode(t, s, "rule:a")
	if first.Version != 1 || first.Type != graph.TypeRule || first.CreatedAt.IsZero() || !first.CreatedAt.Equal(first.UpdatedAt) {
		t.Fatalf("after first apply: %+v", first)
	}
	// A later upsert with another type keeps the stored type (Python GraphStore behaviour).
	r = apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "rule:a", Type: graph.TypeConcept, Properties: map[string]any{"b": "y", "c": nil, "nested": map[string]any{"p": 3}}}}}, "m2")
	if r.NodesCreated != 0 || r.NodesUpdated != 1 {
		t.Fatalf("second apply result %+v, want 1 updated", r)
	}
	n := getNode(t, s, "rule:a")
	if n.Type != graph.TypeRule {
		t.Errorf("type = %s, want Rule kept", n.Type)
	}
	if n.Version != 2 {
		t.Errorf("version = %d, want 2", n.Version)
	}
	if num(n.Properties["a"]) != "1" || n.Properties["b"] != "y" {
		t.Errorf("properties %v: want a=1 kept and b=y", n.Properties)
	}
	if v, ok := n.Properties["c"]; !ok || v != nil {
		t.Errorf("c = %v (present %v), want explicit null", v, ok)
	}
	nested, _ := n.Properties["nested"].(map[string]any)
	if len(nested) != 1 || num(nested["p"]) != "3" {
		t.Errorf("nested = %v, want replaced whole by {p:3} (shallow merge)", nested)
	}
	if !n.CreatedAt.Equal(first.CreatedAt) || n.UpdatedAt.Before(first.UpdatedAt) {
		t.Errorf("timestamps: created %v -> %v, updated %v -> %v", first.CreatedAt, n.CreatedAt, first.UpdatedAt, n.UpdatedAt)
	}
	// An upsert that changes nothing still bumps the version, as in Python.
	apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "rule:a", Type: graph.TypeRule}}}, "m3")
	if n := getNode(t, s, "rule:a"); n.Version != 3 || n.Properties["b"] != "y" {
		t.Errorf("after empty upsert: version %d props %v, want 3 and unchanged", n.Version, n.Properties)
	}
	if _, err := s.GetNode(context.Background(), env, "rule:missing"); !errors.Is(err, graph.ErrNotFound) {
		t.Errorf("GetNode(missing) = %v, want ErrNotFound", err)
	}
}

func testRedelivery(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	b := graph.Batch{
		Nodes: []graph.Node{{ID: "a", Type: graph.TypeEntity}, {ID: "b", Type: graph.TypeEntity}},
		Edges: []graph.Edge{{Source: "a", Type: graph.EdgeCites, Target: "b"}},
	}
	apply(t, s, b, "SLUICE_GRAPH:1")
	for range 3 {
		if r := apply(t, s, b, "SLUICE_GRAPH:1"); !r.AlreadyApplied || r.NodesCreated+r.NodesUpdated+r.EdgesCreated+r.EdgesUpdated != 0 {
			t.Fatalf("redelivery result %+v, want AlreadyApplied and no changes", r)
		}
	}
	if n := getNode(t, s, "a"); n.Version != 1 {
		t.Errorf("version after redelivery = %d, want 1", n.Version)
	}
	e, err := s.GetEdge(context.Background(), env, graph.EdgeID("a", graph.EdgeCites, "b"))
	if err != nil || e.Version != 1 {
		t.Fatalf("edge after redelivery: %+v, %v; want version 1", e, err)
	}
	if r := apply(t, s, b, "SLUICE_GRAPH:2"); r.AlreadyApplied || r.NodesUpdated != 2 || r.EdgesUpdated != 1 {
		t.Errorf("new message result %+v, want 2 nodes and 1 edge updated", r)
	}
	// An empty message id records no marker: every call applies.
	apply(t, s, b, "")
	apply(t, s, b, "")
	if n := getNode(t, s, "a"); n.Version != 4 {
		t.Errorf("version = %d, want 4", n.Version)
	}
}

func testDuplicates(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	b := graph.Batch{
		Nodes: []graph.Node{
			{ID: "d", Type: graph.TypeStep, Properties: map[string]any{"a": 1, "b": 1}},
			{ID: "d", Type: graph.TypeRule, Properties: map[string]any{"b": 2}},
			{ID: "e", Type: graph.TypeStep},
		},
		Edges: []graph.Edge{
			{Source: "d", Type: graph.EdgePrereq, Target: "e", Properties: map[string]any{"x": 1}},
			{Source: "d", Type: graph.EdgePrereq, Target: "e", Properties: map[string]any{"y": 2}},
		},
	}
	r := apply(t, s, b, "dup")
	if r.NodesCreated != 2 || r.EdgesCreated != 1 {
		t.Fatalf("result %+v, want 2 nodes and 1 edge created", r)
	}
	n := getNode(t, s, "d")
	if n.Version != 1 || n.Type != graph.TypeStep || num(n.Properties["a"]) != "1" || num(n.Properties["b"]) != "2" {
		t.Errorf("node d = %+v, want version 1, type Step, a=1 b=2", n)
	}
	e, err := s.GetEdge(context.Background(), env, graph.EdgeID("d", graph.EdgePrereq, "e"))
	if err != nil || e.Version != 1 || len(e.Properties) != 2 {
		t.Errorf("edge = %+v, %v; want version 1 with x and y", e, err)
	}
}

func testEdgeID(t *testing.T, newStore NewStore) {
	// Value computed with Python: "edge:" + sha256("entity:a:cites:source:b").hexdigest()[:16].
	if got, want := graph.EdgeID("entity:a", "cites", "source:b"), "edge:9265b19a55d98f9b"; got != want {
		t.Fatalf("EdgeID = %s, want %s", got, want)
	}
	s := newStore(t, graph.Options{})
	b := graph.Batch{
		Nodes: []graph.Node{{ID: "entity:a", Type: graph.TypeEntity}, {ID: "source:b", Type: graph.TypeSourceDoc}},
		Edges: []graph.Edge{{Source: "entity:a", Type: graph.EdgeCites, Target: "source:b", Properties: map[string]any{"confidence": 0.9}}},
	}
	apply(t, s, b, "e1")
	b.Edges[0].ID = "edge:9265b19a55d98f9b" // a matching explicit id is accepted
	b.Edges[0].Properties = map[string]any{"chunk_id": "c1"}
	apply(t, s, b, "e2")
	e, err := s.GetEdge(context.Background(), env, "edge:9265b19a55d98f9b")
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != 2 || e.Source != "entity:a" || e.Target != "source:b" || e.Type != "cites" ||
		num(e.Properties["confidence"]) != "0.9" || e.Properties["chunk_id"] != "c1" {
		t.Errorf("edge = %+v, want one edge, version 2, merged properties", e)
	}
	st, err := s.Stats(context.Background(), env)
	if err != nil || st.Edges["cites"] != 1 || st.TotalEdges() != 1 {
		t.Errorf("stats = %+v, %v; want exactly 1 cites edge", st, err)
	}
}

func testPII(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	long := strings.Repeat("é", 1500)
	props := map[string]any{
		"keywords": []any{"a", "b"}, "api_key": "k", "monkey": 1, "Email": "x@y", "PHONE_number": "1",
		"ssn": "1", "password": "p", "token_id": "t", "name": "ok", "long": long,
		"exact": strings.Repeat("x", 1000), "nested": map[string]any{"password": "kept", "long": long},
	}
	apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "c", Type: graph.TypeConcept, Properties: props}, {ID: "d", Type: graph.TypeConcept}},
		Edges: []graph.Edge{{Source: "c", Type: graph.EdgeVariantOf, Target: "d", Properties: map[string]any{"secret_key": "s", "note": long}}}}, "p1")
	n := getNode(t, s, "c")
	for _, k := range []string{"keywords", "api_key", "monkey", "Email", "PHONE_number", "ssn", "password", "token_id"} {
		if n.Properties[k] != graph.Redacted {
			t.Errorf("%s = %v, want redacted", k, n.Properties[k])
		}
	}
	if n.Properties["name"] != "ok" {
		t.Errorf("name = %v", n.Properties["name"])
	}
	got, _ := n.Properties["long"].(string)
	if utf8.RuneCountInString(got) != 1003 || !strings.HasSuffix(got, "...") || !strings.HasPrefix(long, strings.TrimSuffix(got, "...")) {
		t.Errorf("long: %d runes, want 1000 characters + \"...\"", utf8.RuneCountInString(got))
	}
	if n.Properties["exact"] != strings.Repeat("x", 1000) {
		t.Errorf("a 1000-character string must not be cut")
	}
	nested, _ := n.Properties["nested"].(map[string]any)
	if nested["password"] != "kept" || nested["long"] != long {
		t.Errorf("nested values must not be inspected: %v", nested["password"])
	}
	e, err := s.GetEdge(context.Background(), env, graph.EdgeID("c", graph.EdgeVariantOf, "d"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Properties["secret_key"] != graph.Redacted || utf8.RuneCountInString(e.Properties["note"].(string)) != 1003 {
		t.Errorf("edge properties not sanitized: %v", e.Properties["secret_key"])
	}
}

func testPIIOff(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{KeepPII: true, NoTruncate: true})
	long := strings.Repeat("z", 2000)
	apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "c", Type: graph.TypeConcept, Properties: map[string]any{"api_key": "k", "long": long}}}}, "p")
	n := getNode(t, s, "c")
	if n.Properties["api_key"] != "k" || n.Properties["long"] != long {
		t.Errorf("with the rules off, properties must be stored as given: %v", n.Properties["api_key"])
	}
}

// FixtureDir finds testdata/chunks by walking up from this source file.
func fixtureDir(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Dir(file)
	for {
		p := filepath.Join(dir, "testdata", "chunks")
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testdata/chunks not found")
		}
		dir = parent
	}
}

// LoadFixture decodes a graph fixture file with graph.Decode.
func loadFixture(t *testing.T, name string) (graph.Batch, []graph.Warning) {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, w, _, err := graph.Decode(f)
	if err != nil {
		t.Fatalf("decode %s: %v", name, err)
	}
	return b, w
}

func testFixture(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	b, _ := loadFixture(t, "job_1757237159_c8623a8fec21_graphstore_batch.json")
	if len(b.Nodes) != 626 || len(b.Edges) != 1280 {
		t.Fatalf("fixture has %d nodes, %d edges; want 626, 1280", len(b.Nodes), len(b.Edges))
	}
	for i, e := range b.Edges {
		if graph.EdgeID(e.Source, e.Type, e.Target) != e.ID {
			t.Fatalf("edge %d: EdgeID differs from the Python id %s", i, e.ID)
		}
	}
	r := apply(t, s, b, "fixture:1")
	if r.NodesCreated != 626 || r.EdgesCreated != 1280 {
		t.Fatalf("result %+v", r)
	}
	st, err := s.Stats(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	wantNodes := map[string]int{"Concept": 24, "SourceDoc": 377, "Entity": 174, "Rule": 25, "Procedure": 3, "Step": 14, "Artifact": 6, "Decision": 3}
	wantEdges := map[string]int{"cites": 684, "part_of": 361, "implements": 176, "depends_on": 39, "prereq": 11, "produces": 7, "variant_of": 2}
	if fmt.Sprint(st.Nodes) != fmt.Sprint(wantNodes) || fmt.Sprint(st.Edges) != fmt.Sprint(wantEdges) {
		t.Errorf("stats = %v %v, want %v %v", st.Nodes, st.Edges, wantNodes, wantEdges)
	}
	redacted, truncated := 0, 0
	for _, in := range b.Nodes {
		n := getNode(t, s, in.ID)
		if n.Properties["keywords"] == graph.Redacted {
			redacted++
		}
		for _, v := range n.Properties {
			if s, ok := v.(string); ok && strings.HasSuffix(s, "...") && utf8.RuneCountInString(s) == 1003 {
				truncated++
			}
		}
	}
	if redacted != 9 || truncated != 40 {
		t.Errorf("redacted keywords %d (want 9), truncated strings %d (want 40)", redacted, truncated)
	}
	apply(t, s, b, "fixture:2")
	for _, in := range b.Nodes {
		if n := getNode(t, s, in.ID); n.Version != 2 {
			t.Fatalf("node %s version %d after second upsert, want 2", in.ID, n.Version)
		}
	}
	for _, in := range b.Edges[:50] {
		if e, err := s.GetEdge(ctx, env, in.ID); err != nil || e.Version != 2 {
			t.Fatalf("edge %s: %+v %v, want version 2", in.ID, e, err)
		}
	}
	if st2, _ := s.Stats(ctx, env); st2.TotalNodes() != 626 || st2.TotalEdges() != 1280 {
		t.Errorf("second upsert changed counts: %+v", st2)
	}
}

func wantInvalid(t *testing.T, err error, what string) {
	t.Helper()
	if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation || !errors.Is(err, graph.ErrInvalid) {
		t.Errorf("%s: err = %v, want permanent validation error wrapping ErrInvalid", what, err)
	}
}

func testValidation(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "stored", Type: graph.TypeRule}}}, "")
	ok := graph.Node{ID: "n", Type: graph.TypeRule}
	tests := []struct {
		name string
		b    graph.Batch
	}{
		{"unknown node type", graph.Batch{Nodes: []graph.Node{ok, {ID: "x", Type: "rule"}}}},
		{"empty node id", graph.Batch{Nodes: []graph.Node{{ID: "", Type: graph.TypeRule}}}},
		{"id too long", graph.Batch{Nodes: []graph.Node{{ID: strings.Repeat("a", graph.MaxIDBytes+1), Type: graph.TypeRule}}}},
		{"invalid UTF-8 id", graph.Batch{Nodes: []graph.Node{{ID: "a\xff", Type: graph.TypeRule}}}},
		{"unknown edge type", graph.Batch{Nodes: []graph.Node{ok}, Edges: []graph.Edge{{Source: "n", Type: "related_to", Target: "stored"}}}},
		{"edge id mismatch", graph.Batch{Nodes: []graph.Node{ok}, Edges: []graph.Edge{{ID: "edge:0000000000000000", Source: "n", Type: "cites", Target: "stored"}}}},
		{"missing endpoint", graph.Batch{Nodes: []graph.Node{ok}, Edges: []graph.Edge{{Source: "n", Type: "cites", Target: "nowhere"}}}},
		{"unencodable property", graph.Batch{Nodes: []graph.Node{{ID: "n", Type: graph.TypeRule, Properties: map[string]any{"f": func() {}}}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.ApplyBatch(ctx, env, tc.b, "bad:"+tc.name)
			wantInvalid(t, err, tc.name)
			if _, err := s.GetNode(ctx, env, "n"); !errors.Is(err, graph.ErrNotFound) {
				t.Errorf("node n written by a failed batch (err %v)", err)
			}
		})
	}
	// An endpoint stored by an earlier message is enough.
	apply(t, s, graph.Batch{Nodes: []graph.Node{ok}, Edges: []graph.Edge{{Source: "n", Type: "cites", Target: "stored"}}}, "good")
}

func testRollback(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	apply(t, s, graph.Batch{Nodes: []graph.Node{{ID: "old", Type: graph.TypeRule, Properties: map[string]any{"v": 1}}}}, "m0")
	b := graph.Batch{}
	for i := range 20 {
		b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("new%02d", i), Type: graph.TypeStep})
		b.Edges = append(b.Edges, graph.Edge{Source: fmt.Sprintf("new%02d", i), Type: graph.EdgePartOf, Target: "old"})
	}
	b.Nodes = append(b.Nodes, graph.Node{ID: "old", Type: graph.TypeRule, Properties: map[string]any{"v": 2}})
	good := b
	b.Edges = append(slices.Clone(b.Edges), graph.Edge{Source: "new00", Type: graph.EdgeCites, Target: "missing"})
	_, err := s.ApplyBatch(ctx, env, b, "m1")
	wantInvalid(t, err, "batch whose last edge is invalid")
	st, err := s.Stats(ctx, env)
	if err != nil || st.TotalNodes() != 1 || st.TotalEdges() != 0 {
		t.Errorf("after rollback: stats %+v %v, want only the old node", st, err)
	}
	if n := getNode(t, s, "old"); n.Version != 1 || num(n.Properties["v"]) != "1" {
		t.Errorf("old node changed by a rolled-back batch: %+v", n)
	}
	// The failed message left no apply marker: the corrected batch with the same id applies.
	if r := apply(t, s, good, "m1"); r.AlreadyApplied || r.NodesCreated != 20 || r.EdgesCreated != 20 {
		t.Errorf("corrected batch: %+v", r)
	}
}

func ids(ns []graph.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.ID
	}
	return out
}

func testNeighborsBasics(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	// A path p00 - p01 - ... - p14 (alternating edge direction) closed into a triangle at the start.
	b := graph.Batch{}
	for i := range 15 {
		b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("p%02d", i), Type: graph.TypeStep})
		if i > 0 {
			src, dst := fmt.Sprintf("p%02d", i-1), fmt.Sprintf("p%02d", i)
			if i%2 == 0 {
				src, dst = dst, src
			}
			b.Edges = append(b.Edges, graph.Edge{Source: src, Type: graph.EdgePrereq, Target: dst})
		}
	}
	b.Edges = append(b.Edges, graph.Edge{Source: "p02", Type: graph.EdgeCites, Target: "p00"})
	apply(t, s, b, "")
	tests := []struct {
		name  string
		depth int
		types []string
		want  []string
	}{
		{"depth 0", 0, nil, nil},
		{"negative depth", -3, nil, nil},
		{"depth 1 both directions and cycle", 1, nil, []string{"p01", "p02"}},
		{"depth 2", 2, nil, []string{"p01", "p02", "p03"}},
		{"filter prereq", 2, []string{"prereq"}, []string{"p01", "p02"}},
		{"filter cites", 5, []string{"cites"}, []string{"p02"}},
		{"filter matches nothing", 3, []string{"produces"}, nil},
		{"depth clamped to 10", 50, []string{"prereq"}, []string{"p01", "p02", "p03", "p04", "p05", "p06", "p07", "p08", "p09", "p10"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.Neighbors(ctx, env, "p00", tc.depth, tc.types)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids(got), tc.want) {
				t.Errorf("Neighbors = %v, want %v", ids(got), tc.want)
			}
		})
	}
	if _, err := s.Neighbors(ctx, env, "absent", 2, nil); !errors.Is(err, graph.ErrNotFound) {
		t.Errorf("Neighbors(absent) = %v, want ErrNotFound", err)
	}
	got, err := s.Neighbors(ctx, env, "p01", 1, nil)
	if err != nil || len(got) != 2 || got[0].Type != graph.TypeStep || got[0].Version != 1 {
		t.Errorf("Neighbors returns full nodes: %+v %v", got, err)
	}
}

// bfs is the reference: breadth-first over both directions, filtered by types, nearest
// first with ties by id, start excluded, capped at MaxNeighbors.
func bfs(edges []graph.Edge, start string, depth int, types []string) []string {
	depth = max(0, min(depth, graph.MaxDepth))
	adj := map[string][]string{}
	for _, e := range edges {
		if len(types) > 0 && !slices.Contains(types, e.Type) {
			continue
		}
		adj[e.Source] = append(adj[e.Source], e.Target)
		adj[e.Target] = append(adj[e.Target], e.Source)
	}
	dist := map[string]int{start: 0}
	frontier := []string{start}
	for d := 1; d <= depth && len(frontier) > 0; d++ {
		var next []string
		for _, u := range frontier {
			for _, v := range adj[u] {
				if _, seen := dist[v]; !seen {
					dist[v] = d
					next = append(next, v)
				}
			}
		}
		frontier = next
	}
	var out []string
	for id, d := range dist {
		if d > 0 {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b string) int {
		if dist[a] != dist[b] {
			return dist[a] - dist[b]
		}
		return strings.Compare(a, b)
	})
	if len(out) > graph.MaxNeighbors {
		out = out[:graph.MaxNeighbors]
	}
	return out
}

// RandomGraph builds a seeded random graph with n nodes and m edges over three edge types;
// it contains cycles and parallel edges of different types.
func randomGraph(seed uint64, n, m int) graph.Batch {
	rng := rand.New(rand.NewPCG(seed, 7))
	types := []string{graph.EdgeCites, graph.EdgePartOf, graph.EdgeDependsOn}
	var b graph.Batch
	for i := range n {
		b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("g%05d", i), Type: graph.NodeTypes()[i%8]})
	}
	seen := map[string]bool{}
	for len(b.Edges) < m {
		e := graph.Edge{Source: fmt.Sprintf("g%05d", rng.IntN(n)), Type: types[rng.IntN(3)], Target: fmt.Sprintf("g%05d", rng.IntN(n))}
		if id := graph.EdgeID(e.Source, e.Type, e.Target); !seen[id] {
			seen[id] = true
			b.Edges = append(b.Edges, e)
		}
	}
	return b
}

func testNeighborsBFS(t *testing.T, newStore NewStore) {
	ctx := context.Background()
	for _, g := range []struct {
		name string
		seed uint64
		n, m int
	}{{"sparse", 1, 400, 420}, {"medium", 2, 300, 700}, {"dense", 3, 150, 1200}} {
		t.Run(g.name, func(t *testing.T) {
			s := newStore(t, graph.Options{})
			b := randomGraph(g.seed, g.n, g.m)
			apply(t, s, b, "")
			rng := rand.New(rand.NewPCG(g.seed, 99))
			for range 8 {
				start := b.Nodes[rng.IntN(g.n)].ID
				for _, depth := range []int{1, 2, 4} {
					for _, types := range [][]string{nil, {graph.EdgeCites}, {graph.EdgePartOf, graph.EdgeDependsOn}} {
						got, err := s.Neighbors(ctx, env, start, depth, types)
						if err != nil {
							t.Fatal(err)
						}
						if want := bfs(b.Edges, start, depth, types); !slices.Equal(ids(got), want) {
							t.Fatalf("Neighbors(%s, %d, %v): %d nodes, BFS reference %d\n got %v\nwant %v", start, depth, types, len(got), len(want), ids(got), want)
						}
					}
				}
			}
		})
	}
}

func testNeighborsCap(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	// A hub with 600 direct neighbours, each with 2 more leaves, and edges back to the hub
	// (cycles): 1800 nodes within depth 2, 600 within depth 1.
	b := graph.Batch{Nodes: []graph.Node{{ID: "hub", Type: graph.TypeConcept}}}
	for i := range 600 {
		mid := fmt.Sprintf("m%04d", i)
		b.Nodes = append(b.Nodes, graph.Node{ID: mid, Type: graph.TypeEntity})
		b.Edges = append(b.Edges, graph.Edge{Source: "hub", Type: graph.EdgePartOf, Target: mid})
		for j := range 2 {
			leaf := fmt.Sprintf("l%04d_%d", i, j)
			b.Nodes = append(b.Nodes, graph.Node{ID: leaf, Type: graph.TypeSourceDoc})
			b.Edges = append(b.Edges, graph.Edge{Source: leaf, Type: graph.EdgeCites, Target: mid})
		}
		if i%10 == 0 {
			b.Edges = append(b.Edges, graph.Edge{Source: fmt.Sprintf("l%04d_0", i), Type: graph.EdgeDependsOn, Target: "hub"})
		}
	}
	apply(t, s, b, "")
	for _, depth := range []int{1, 2, 3} {
		got, err := s.Neighbors(ctx, env, "hub", depth, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := bfs(b.Edges, "hub", depth, nil)
		if !slices.Equal(ids(got), want) {
			t.Errorf("depth %d: %d nodes, want %d (BFS reference, nearest first, capped)", depth, len(got), len(want))
		}
		if depth >= 2 && len(got) != graph.MaxNeighbors {
			t.Errorf("depth %d: %d nodes, want the cap %d", depth, len(got), graph.MaxNeighbors)
		}
		if slices.Contains(ids(got), "hub") {
			t.Errorf("start node returned")
		}
	}
}

// denseLayers is layers of width nodes each, every node joined to every node of the next
// layer by a cites edge: the walk of (node, depth) pairs grows with width × layers × depth,
// and an unbounded traversal of a larger one runs for minutes.
func denseLayers(layers, width int) graph.Batch {
	var b graph.Batch
	name := func(l, i int) string { return fmt.Sprintf("d%02d_%03d", l, i) }
	for l := range layers {
		for i := range width {
			b.Nodes = append(b.Nodes, graph.Node{ID: name(l, i), Type: graph.TypeConcept})
			if l > 0 {
				for j := range width {
					b.Edges = append(b.Edges, graph.Edge{Source: name(l-1, j), Type: graph.EdgeCites, Target: name(l, i)})
				}
			}
		}
	}
	return b
}

// Regression: GET /v1/graph/nodes/{id}/neighbors?depth=10&types=cites on a 100k-edge graph
// ran 399 s, with no bound. Neighbors now stops a walk that passes Options.MaxVisits with
// ErrTraversalTooLarge, quickly, while queries under the budget answer as before.
func testNeighborsBudget(t *testing.T, newStore NewStore) {
	const layers, width = 8, 12 // 96 nodes, 1008 edges; depth 10 walks ≈ 1000 (node, depth) pairs
	s := newStore(t, graph.Options{MaxVisits: 300})
	ctx := context.Background()
	b := denseLayers(layers, width)
	apply(t, s, b, "")
	start := time.Now()
	_, err := s.Neighbors(ctx, env, "d00_000", 10, []string{graph.EdgeCites})
	if !errors.Is(err, graph.ErrTraversalTooLarge) {
		t.Fatalf("depth 10 over a dense graph with a 300-step budget: %v, want ErrTraversalTooLarge", err)
	}
	t.Logf("bounded traversal: %s", time.Since(start))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the bounded traversal took %s", took)
	}
	// Under the budget: exact, as the BFS reference.
	got, err := s.Neighbors(ctx, env, "d00_000", 2, []string{graph.EdgeCites})
	if err != nil {
		t.Fatal(err)
	}
	if want := bfs(b.Edges, "d00_000", 2, []string{graph.EdgeCites}); !slices.Equal(ids(got), want) {
		t.Errorf("depth 2: %v, want %v", ids(got), want)
	}
	// The default budget lets the whole dense graph through.
	s2 := newStore(t, graph.Options{})
	apply(t, s2, b, "")
	got, err = s2.Neighbors(ctx, env, "d00_000", 10, []string{graph.EdgeCites})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != layers*width-1 {
		t.Errorf("default budget: %d nodes, want %d", len(got), layers*width-1)
	}
}

// Neighbors honours its context: an ended context stops the traversal with its error.
func testNeighborsContext(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	apply(t, s, denseLayers(4, 8), "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Neighbors(ctx, env, "d00_000", 10, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	dctx, dcancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer dcancel()
	if _, err := s.Neighbors(dctx, env, "d00_000", 10, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("past deadline: %v, want context.DeadlineExceeded", err)
	}
}

func testConcurrent(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	const workers, msgs, shared = 8, 12, 6
	errs := make(chan error, workers*msgs)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for m := range msgs {
				var b graph.Batch
				// Every message names every shared node (in a shuffled order) with a
				// property of its own worker, and edges between shared nodes.
				for _, i := range rng.Perm(shared) {
					b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("s%d", i), Type: graph.TypeRule,
						Properties: map[string]any{fmt.Sprintf("w%d", w): m, "last": "x"}})
				}
				for _, i := range rng.Perm(shared) {
					b.Edges = append(b.Edges, graph.Edge{Source: fmt.Sprintf("s%d", i), Type: graph.EdgeDependsOn, Target: fmt.Sprintf("s%d", (i+1)%shared),
						Properties: map[string]any{fmt.Sprintf("w%d", w): m}})
				}
				b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("own%d_%d", w, m), Type: graph.TypeStep})
				b.Edges = append(b.Edges, graph.Edge{Source: fmt.Sprintf("own%d_%d", w, m), Type: graph.EdgePartOf, Target: "s0"})
				if _, err := s.ApplyBatch(ctx, env, b, fmt.Sprintf("w%d:m%d", w, m)); err != nil {
					errs <- fmt.Errorf("worker %d message %d: %w", w, m, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err) // includes deadlock or serialization errors that escaped the retries
	}
	for i := range shared {
		n := getNode(t, s, fmt.Sprintf("s%d", i))
		if n.Version != workers*msgs {
			t.Errorf("s%d version %d, want %d", i, n.Version, workers*msgs)
		}
		for w := range workers {
			if got := num(n.Properties[fmt.Sprintf("w%d", w)]); got != fmt.Sprint(msgs-1) {
				t.Errorf("s%d w%d = %s, want %d (each worker's last message)", i, w, got, msgs-1)
			}
		}
		e, err := s.GetEdge(ctx, env, graph.EdgeID(fmt.Sprintf("s%d", i), graph.EdgeDependsOn, fmt.Sprintf("s%d", (i+1)%shared)))
		if err != nil || e.Version != workers*msgs || len(e.Properties) != workers {
			t.Errorf("edge from s%d: %+v %v", i, e, err)
		}
	}
	st, err := s.Stats(ctx, env)
	if err != nil || st.TotalNodes() != shared+workers*msgs || st.TotalEdges() != shared+workers*msgs {
		t.Errorf("stats %+v %v", st, err)
	}
}

func testConcurrentRedelivery(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	b := graph.Batch{Nodes: []graph.Node{{ID: "r", Type: graph.TypeDecision}}}
	apply(t, s, b, "first")
	const n = 6
	results := make(chan graph.Result, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			r, err := s.ApplyBatch(ctx, env, b, "same")
			if err != nil {
				errs <- err
				return
			}
			results <- r
		})
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	applied := 0
	for r := range results {
		if !r.AlreadyApplied {
			applied++
		}
	}
	if applied != 1 {
		t.Errorf("%d deliveries applied, want exactly 1", applied)
	}
	if v := getNode(t, s, "r").Version; v != 2 {
		t.Errorf("version %d, want 2", v)
	}
}

// markers carries the hooks into the apply-marker tests.
type markers struct{ Hooks }

func (m markers) insert(t *testing.T, s graph.Store, at time.Time, msgIDs ...string) {
	t.Helper()
	m.insertIn(t, s, env, at, msgIDs...)
}

func (m markers) insertIn(t *testing.T, s graph.Store, env string, at time.Time, msgIDs ...string) {
	t.Helper()
	if err := m.InsertMarkers(context.Background(), s, env, at, msgIDs); err != nil {
		t.Fatalf("insert %d markers at %v: %v", len(msgIDs), at, err)
	}
}

func (m markers) count(t *testing.T, s graph.Store) int64 {
	t.Helper()
	return m.countIn(t, s, env)
}

func (m markers) countIn(t *testing.T, s graph.Store, env string) int64 {
	t.Helper()
	n, err := m.CountMarkers(context.Background(), s, env)
	if err != nil {
		t.Fatalf("count markers: %v", err)
	}
	return n
}

func msgIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s:%d", prefix, i)
	}
	return out
}

func (m markers) testPrune(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	ctx := context.Background()
	b := graph.Batch{Nodes: []graph.Node{{ID: "p", Type: graph.TypeRule}}}
	cut := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	m.insert(t, s, cut.Add(-48*time.Hour), "old:0", "old:1")
	m.insert(t, s, cut.Add(-time.Microsecond), "old:edge")
	m.insert(t, s, cut, "kept:edge")                    // applied_at == before is not older: kept
	m.insert(t, s, cut.Add(-48*time.Hour), "command:7") // old, but not under the prefix: kept
	apply(t, s, b, "new")
	// A backdated marker is a real marker: the message is not applied again.
	if r := apply(t, s, b, "old:0"); !r.AlreadyApplied {
		t.Fatalf("before pruning, old:0 applied again: %+v", r)
	}
	if n := m.count(t, s); n != 6 {
		t.Fatalf("%d markers before pruning, want 6", n)
	}

	n, err := s.PruneApplied(ctx, env, "old:", cut)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("PruneApplied(now-1h) = %d, want 3", n)
	}
	if got := m.count(t, s); got != 3 {
		t.Errorf("%d markers left, want 3 (kept:edge, new, command:7)", got)
	}
	// The pruned message is applied again; the kept ones are still recognised.
	if r := apply(t, s, b, "old:0"); r.AlreadyApplied || r.NodesUpdated != 1 {
		t.Errorf("old:0 after pruning: %+v, want applied again", r)
	}
	for _, id := range []string{"new", "kept:edge", "command:7"} {
		if r := apply(t, s, b, id); !r.AlreadyApplied {
			t.Errorf("%s after pruning: %+v, want AlreadyApplied", id, r)
		}
	}
	if v := getNode(t, s, "p").Version; v != 2 {
		t.Errorf("version %d, want 2 (new, then old:0 again)", v)
	}

	// A cut in the future takes the markers ApplyBatch wrote with the store's own clock; the
	// empty prefix selects every marker.
	n, err = s.PruneApplied(ctx, env, "", time.Now().Add(time.Hour))
	if err != nil || n != 4 {
		t.Errorf("PruneApplied(\"\", now+1h) = %d, %v; want 4 (kept:edge, new, old:0, command:7)", n, err)
	}
	if r := apply(t, s, b, "new"); r.AlreadyApplied {
		t.Errorf("new after pruning everything: %+v, want applied again", r)
	}
	if n, err := s.PruneApplied(ctx, env, "", cut); err != nil || n != 0 {
		t.Errorf("PruneApplied with nothing old = %d, %v; want 0", n, err)
	}
}

func (m markers) testPruneChunks(t *testing.T, newStore NewStore) {
	ctx := context.Background()
	// More than one chunk of 10,000, and an exact multiple (the last chunk deletes none).
	for _, n := range []int{25_000, 10_000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := newStore(t, graph.Options{})
			now := time.Now()
			m.insert(t, s, now.Add(-48*time.Hour), msgIDs("old", n)...)
			m.insert(t, s, now, msgIDs("new", 7)...)
			got, err := s.PruneApplied(ctx, env, "old", now.Add(-24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if got != int64(n) {
				t.Errorf("PruneApplied = %d, want %d", got, n)
			}
			if left := m.count(t, s); left != 7 {
				t.Errorf("%d markers left, want the 7 new ones", left)
			}
		})
	}
}

func (m markers) testPruneCanceled(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	m.insert(t, s, time.Now().Add(-48*time.Hour), msgIDs("old", 10)...)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := s.PruneApplied(ctx, env, "", time.Now())
	if err == nil || n != 0 || fault.IsPermanent(err) {
		t.Errorf("PruneApplied with an ended ctx = %d, %v; want 0 and a transient error", n, err)
	}
	if left := m.count(t, s); left != 10 {
		t.Errorf("%d markers left, want 10", left)
	}
}

func testPruneAfterClose(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := s.PruneApplied(context.Background(), env, "", time.Now())
	if !errors.Is(err, graph.ErrClosed) || fault.IsPermanent(err) {
		t.Errorf("PruneApplied after Close = %v, want transient ErrClosed", err)
	}
}

func (m markers) testMarkerPruner(t *testing.T, newStore NewStore) {
	s := newStore(t, graph.Options{})
	fresh := graph.Batch{Nodes: []graph.Node{{ID: "q", Type: graph.TypeRule}}}
	m.insert(t, s, time.Now().Add(-2*time.Hour), msgIDs("old", 100)...)
	apply(t, s, fresh, "fresh")
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 100)
	stopped := make(chan struct{})
	var runErr error
	go func() {
		defer close(stopped)
		runErr = graph.RunMarkerPruner(ctx, s, "", 20*time.Millisecond, time.Hour, func(err error) {
			select {
			case errs <- err:
			default:
			}
		})
	}()
	defer func() { // also on an early failure: stop the pruner before the store closes
		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
		}
	}()
	waitMarkers := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := m.count(t, s)
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d markers after 10s of pruning, want %d", n, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitMarkers(1)
	// Markers found old later go on a later tick.
	m.insert(t, s, time.Now().Add(-3*time.Hour), msgIDs("later", 50)...)
	waitMarkers(1)
	cancel()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("RunMarkerPruner still running 5s after ctx ended")
	}
	if runErr != nil {
		t.Errorf("RunMarkerPruner = %v, want nil when ctx ends", runErr)
	}
	close(errs)
	for err := range errs {
		t.Errorf("onErr: %v", err)
	}
	if r := apply(t, s, fresh, "fresh"); !r.AlreadyApplied {
		t.Errorf("the fresh marker was pruned: %+v", r)
	}
}
