package graphtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sinks/graph"
)

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
