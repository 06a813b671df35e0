package graphtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/sinks/graph"
)

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
