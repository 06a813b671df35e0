package graph_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/sinks/graph"
)

const (
	benchNodes      = 100_000
	benchSetupBatch = 5_000
)

// bigGraphs caches one 100k-node store per backend for the whole benchmark run: building it
// takes seconds, and a benchmark function runs several times while b.N grows.
var bigGraphs struct {
	sync.Mutex
	stores map[string]graph.Store
	dirs   []string // SQLite temp dirs, removed by closeBigGraphs
}

// closeBigGraphs is called from TestMain after the run.
func closeBigGraphs() {
	bigGraphs.Lock()
	defer bigGraphs.Unlock()
	for _, s := range bigGraphs.stores {
		_ = s.Close()
	}
	for _, d := range bigGraphs.dirs {
		_ = os.RemoveAll(d)
	}
}

// benchEdges are the 100k graph's edges for node i: a ring (i -> i+1) plus one random
// long-range edge, so every node has about 4 incident edges and depth 3 reaches tens of nodes.
func benchEdges(rng *rand.Rand, i int) []graph.Edge {
	types := graph.EdgeTypes()
	return []graph.Edge{
		{Source: benchID(i), Type: graph.EdgePartOf, Target: benchID((i + 1) % benchNodes)},
		{Source: benchID(i), Type: types[rng.IntN(len(types))], Target: benchID(rng.IntN(benchNodes))},
	}
}

func benchID(i int) string { return fmt.Sprintf("bench:%06d", i) }

func bigGraph(b *testing.B, backend string) graph.Store {
	b.Helper()
	if testing.Short() {
		b.Skip("100k-node graph skipped under -short")
	}
	bigGraphs.Lock()
	defer bigGraphs.Unlock()
	if s, ok := bigGraphs.stores[backend]; ok {
		return s
	}
	ctx := context.Background()
	var s graph.Store
	var err error
	switch backend {
	case "sqlite":
		dir, derr := os.MkdirTemp("", "sluice-graph-bench-")
		if derr != nil {
			b.Fatal(derr)
		}
		bigGraphs.dirs = append(bigGraphs.dirs, dir)
		s, err = graph.OpenSQLite(ctx, graph.SQLiteConfig{Path: filepath.Join(dir, "graph.db")})
	case "postgres":
		s, err = graph.OpenPostgres(ctx, graph.PostgresConfig{DSN: pg.Database(b)})
	}
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(42, 42))
	// Nodes first (edges need their endpoints), then edges, in large batches.
	for lo := 0; lo < benchNodes; lo += benchSetupBatch {
		var batch graph.Batch
		for i := lo; i < lo+benchSetupBatch; i++ {
			batch.Nodes = append(batch.Nodes, graph.Node{ID: benchID(i), Type: graph.NodeTypes()[i%8], Properties: map[string]any{"name": benchID(i), "n": i}})
		}
		if _, err := s.ApplyBatch(ctx, graph.DefaultEnv, batch, ""); err != nil {
			b.Fatal(err)
		}
	}
	for lo := 0; lo < benchNodes; lo += benchSetupBatch {
		var batch graph.Batch
		for i := lo; i < lo+benchSetupBatch; i++ {
			batch.Edges = append(batch.Edges, benchEdges(rng, i)...)
		}
		if _, err := s.ApplyBatch(ctx, graph.DefaultEnv, batch, ""); err != nil {
			b.Fatal(err)
		}
	}
	if bigGraphs.stores == nil {
		bigGraphs.stores = map[string]graph.Store{}
	}
	bigGraphs.stores[backend] = s
	return s
}

// BenchmarkApplyBatch applies batches of 100 new nodes and 200 edges (to the new nodes and
// to random stored ones) to the 100k-node graph, one message each.
func BenchmarkApplyBatch(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			s := bigGraph(b, backend)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(7, 7))
			run := rng.Uint64()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var batch graph.Batch
				for j := range 100 {
					id := fmt.Sprintf("new:%x:%d:%d", run, i, j)
					batch.Nodes = append(batch.Nodes, graph.Node{ID: id, Type: graph.TypeEntity, Properties: map[string]any{"name": id, "j": j}})
					batch.Edges = append(batch.Edges,
						graph.Edge{Source: id, Type: graph.EdgeCites, Target: benchID(rng.IntN(benchNodes))},
						graph.Edge{Source: id, Type: graph.EdgePartOf, Target: fmt.Sprintf("new:%x:%d:%d", run, i, (j+1)%100)})
				}
				if _, err := s.ApplyBatch(ctx, graph.DefaultEnv, batch, fmt.Sprintf("bench:%x:%d", run, i)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "nodes/s")
			b.ReportMetric(float64(200*b.N)/b.Elapsed().Seconds(), "edges/s")
		})
	}
}

// BenchmarkNeighborsDepth3 runs Neighbors at depth 3, all edge types, from random starts in
// the 100k-node graph.
func BenchmarkNeighborsDepth3(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			s := bigGraph(b, backend)
			ctx := context.Background()
			rng := rand.New(rand.NewPCG(3, 3))
			found := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				ns, err := s.Neighbors(ctx, graph.DefaultEnv, benchID(rng.IntN(benchNodes)), 3, nil)
				if err != nil {
					b.Fatal(err)
				}
				found += len(ns)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
			b.ReportMetric(float64(found)/float64(b.N), "nodes/query")
		})
	}
}
