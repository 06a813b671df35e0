package graphtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

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
