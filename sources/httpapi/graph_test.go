package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// sqliteGraph adapts a real graph store to GraphService, as serve does.
type sqliteGraph struct{ graph.Store }

func (g sqliteGraph) GetNode(ctx context.Context, id string) (graph.Node, error) {
	n, err := g.Store.GetNode(ctx, id)
	if errors.Is(err, graph.ErrNotFound) {
		return n, fmt.Errorf("%w: %w", httpapi.ErrNotFound, err)
	}
	return n, err
}

// Regression: a neighbours query ran 399 s with no deadline and no cost bound. Now a walk
// past the store's visit budget answers 422, and one past GraphTimeout answers 503 with
// Retry-After, both as problems.
func TestNeighborsBounded(t *testing.T) {
	g, err := graph.Open(context.Background(), filepath.Join(t.TempDir(), "graph.db"), graph.Options{MaxVisits: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	var b graph.Batch
	for l := range 6 {
		for i := range 10 {
			b.Nodes = append(b.Nodes, graph.Node{ID: fmt.Sprintf("n%d_%d", l, i), Type: graph.TypeConcept})
			for j := range 10 {
				if l > 0 {
					b.Edges = append(b.Edges, graph.Edge{Source: fmt.Sprintf("n%d_%d", l-1, j), Type: graph.EdgeCites, Target: fmt.Sprintf("n%d_%d", l, i)})
				}
			}
		}
	}
	if _, err := g.ApplyBatch(context.Background(), b, ""); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		timeout time.Duration
		target  string
		status  int
	}{
		{"within budget", time.Minute, "/v1/graph/nodes/n0_0/neighbors?depth=1&types=cites", http.StatusOK},
		{"over the visit budget", time.Minute, "/v1/graph/nodes/n0_0/neighbors?depth=10&types=cites", http.StatusUnprocessableEntity},
		{"past the deadline", time.Nanosecond, "/v1/graph/nodes/n0_0/neighbors?depth=10&types=cites", http.StatusServiceUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, httpapi.Config{Graph: sqliteGraph{g}, GraphTimeout: tc.timeout})
			rec := serve(t, s.Handler(), "GET", tc.target, "", nil, nil)
			if tc.status == http.StatusOK {
				if rec.Code != http.StatusOK {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
				return
			}
			decodeProblem(t, rec, tc.status)
			if tc.status == http.StatusServiceUnavailable && rec.Header().Get("Retry-After") == "" {
				t.Error("no Retry-After")
			}
		})
	}
}
