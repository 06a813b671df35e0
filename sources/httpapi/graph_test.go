package httpapi_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// sqliteGraph adapts a real graph store to GraphService, as serve does.
type sqliteGraph struct{ graph.Store }

func (g sqliteGraph) GetNode(ctx context.Context, env, id string) (graph.Node, error) {
	n, err := g.Store.GetNode(ctx, env, id)
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
	if _, err := g.ApplyBatch(context.Background(), graph.DefaultEnv, b, ""); err != nil {
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

// Regression (issue 13): the graph routes ignored ?env=, so every env read one graph. Now
// each reads its env's graph (dev when ?env= is absent or empty), the answers name the env,
// and an env other than dev, test or prod is a 400 problem. The store is used directly
// (graph.ErrNotFound is a 404 without an adapter).
func TestGraphRoutesPerEnv(t *testing.T) {
	g, err := graph.Open(context.Background(), filepath.Join(t.TempDir(), "graph.db"), graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	ctx := context.Background()
	b := graph.Batch{Nodes: []graph.Node{{ID: "a", Type: graph.TypeRule}, {ID: "b", Type: graph.TypeRule}},
		Edges: []graph.Edge{{Source: "a", Type: graph.EdgeCites, Target: "b"}}}
	if _, err := g.ApplyBatch(ctx, "test", b, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := g.ApplyBatch(ctx, "dev", graph.Batch{Nodes: []graph.Node{{ID: "a", Type: graph.TypeConcept}}}, ""); err != nil {
		t.Fatal(err)
	}
	s := newServer(t, httpapi.Config{Graph: g})
	tests := []struct {
		name, target string
		status       int
		want         string // a substring of the body
	}{
		{"stats test", "/v1/graph/stats?env=test", http.StatusOK, `"total_nodes":2`},
		{"stats prod", "/v1/graph/stats?env=prod", http.StatusOK, `"total_nodes":0`},
		{"stats default dev", "/v1/graph/stats", http.StatusOK, `"env":"dev"`},
		{"stats empty env is dev", "/v1/graph/stats?env=", http.StatusOK, `"total_nodes":1`},
		{"node test", "/v1/graph/nodes/a?env=test", http.StatusOK, `"type":"Rule"`},
		{"node dev", "/v1/graph/nodes/a", http.StatusOK, `"type":"Concept"`},
		{"node prod", "/v1/graph/nodes/a?env=prod", http.StatusNotFound, "in env prod"},
		{"node only in test, from dev", "/v1/graph/nodes/b?env=dev", http.StatusNotFound, "in env dev"},
		{"neighbors test", "/v1/graph/nodes/a/neighbors?env=test", http.StatusOK, `"count":1`},
		{"neighbors dev", "/v1/graph/nodes/a/neighbors?env=dev", http.StatusOK, `"count":0`},
		{"neighbors prod", "/v1/graph/nodes/a/neighbors?env=prod", http.StatusNotFound, "in env prod"},
		{"stats bad env", "/v1/graph/stats?env=staging", http.StatusBadRequest, "staging"},
		{"node bad env", "/v1/graph/nodes/a?env=PROD", http.StatusBadRequest, "PROD"},
		{"neighbors bad env", "/v1/graph/nodes/a/neighbors?env=te%00st", http.StatusBadRequest, "not one of dev, test, prod"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, s.Handler(), "GET", tc.target, "", nil, nil)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("%d %s; want %d with %q", rec.Code, rec.Body, tc.status, tc.want)
			}
			if tc.status != http.StatusOK {
				decodeProblem(t, rec, tc.status)
			}
		})
	}
}
