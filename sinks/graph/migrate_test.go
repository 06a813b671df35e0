package graph_test

import (
	"context"
	"errors"
	"testing"

	"github.com/sluice-dev/sluice/sinks/graph"
)

// TestMigrateToPerEnv opens a graph written before graphs were kept per environment (schema
// version 2: nodes, edges and markers keyed by id alone; issue 13, where a test load landed
// in the production graph). Migration 3 moves every row to dev: the old graph is visible
// under dev, with its ids, types, properties, versions, edges and markers, and not under
// test or prod; the same ids can then be written to test as new, independent nodes.
func TestMigrateToPerEnv(t *testing.T) {
	ctx := context.Background()
	// The old graph: r1 -cites-> c1 -part_of-> s1, r1 at version 2, two markers.
	old := []string{
		`INSERT INTO schema_migrations VALUES (1, 'graph nodes, edges and apply markers', 0), (2, 'apply marker age index', 0)`,
		`INSERT INTO graph_nodes (id, type, properties, created_at, updated_at, version) VALUES
			('r1', 'Rule', '{"title":"Flanking"}', 1000, 2000, 2),
			('c1', 'Concept', '{}', 1000, 1000, 1),
			('s1', 'SourceDoc', '{"page":12}', 1000, 1000, 1)`,
		`INSERT INTO graph_edges (id, source, type, target, properties, created_at, updated_at, version) VALUES
			('` + graph.EdgeID("r1", graph.EdgeCites, "c1") + `', 'r1', 'cites', 'c1', '{"w":1}', 1000, 1000, 1),
			('` + graph.EdgeID("c1", graph.EdgePartOf, "s1") + `', 'c1', 'part_of', 's1', '{}', 1000, 1000, 1)`,
		`INSERT INTO graph_applied (msg_id, applied_at) VALUES ('SLUICE_GRAPH:1', 1000), ('command:FR-1', 1000)`,
	}
	tests := []struct {
		name string
		// create builds a version 2 database holding old and returns how to open it.
		create func(t *testing.T) func() (graph.Store, error)
	}{
		{"sqlite", func(t *testing.T) func() (graph.Store, error) {
			path, db := oldSQLite(t, 2, old...)
			_ = db.Close()
			return func() (graph.Store, error) { return graph.OpenSQLite(ctx, graph.SQLiteConfig{Path: path}) }
		}},
		{"postgres", func(t *testing.T) func() (graph.Store, error) {
			dsn, conn := oldPostgres(t, 2, old...)
			_ = conn.Close(ctx)
			return func() (graph.Store, error) {
				return graph.OpenPostgres(ctx, graph.PostgresConfig{DSN: dsn, MinConns: 1, MaxConns: 2})
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkMigratedToPerEnv(t, tc.create(t)) })
	}
}

// checkMigratedToPerEnv opens the version 2 graph of TestMigrateToPerEnv with open and
// checks that it now lives in dev alone, markers included, and that reopening changes nothing.
func checkMigratedToPerEnv(t *testing.T, open func() (graph.Store, error)) {
	ctx := context.Background()
	s, err := open()
	if err != nil {
		t.Fatalf("open a version 2 graph: %v", err)
	}
	defer s.Close()

	st, err := s.Stats(ctx, "dev")
	if err != nil || st.TotalNodes() != 3 || st.TotalEdges() != 2 || st.Nodes[graph.TypeRule] != 1 || st.Edges[graph.EdgeCites] != 1 {
		t.Errorf("Stats(dev) after migrating = %+v, %v; want the old 3 nodes and 2 edges", st, err)
	}
	n, err := s.GetNode(ctx, "dev", "r1")
	if err != nil || n.Type != graph.TypeRule || n.Version != 2 || n.Properties["title"] != "Flanking" || n.CreatedAt.UnixMicro() != 1000 || n.UpdatedAt.UnixMicro() != 2000 {
		t.Errorf("GetNode(dev, r1) = %+v, %v; want the old row unchanged", n, err)
	}
	if e, err := s.GetEdge(ctx, "dev", graph.EdgeID("r1", graph.EdgeCites, "c1")); err != nil || e.Source != "r1" || e.Target != "c1" || e.Properties["w"] == nil {
		t.Errorf("GetEdge(dev) = %+v, %v; want the old edge", e, err)
	}
	if ns, err := s.Neighbors(ctx, "dev", "r1", 2, nil); err != nil || len(ns) != 2 || ns[0].ID != "c1" || ns[1].ID != "s1" {
		t.Errorf("Neighbors(dev, r1, 2) = %v, %v; want [c1 s1]", ns, err)
	}
	for _, other := range []string{"test", "prod"} {
		if st, err := s.Stats(ctx, other); err != nil || st.TotalNodes() != 0 || st.TotalEdges() != 0 {
			t.Errorf("Stats(%s) after migrating = %+v, %v; want empty", other, st, err)
		}
		if _, err := s.GetNode(ctx, other, "r1"); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("GetNode(%s, r1) = %v; want ErrNotFound", other, err)
		}
		if _, err := s.Neighbors(ctx, other, "r1", 2, nil); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("Neighbors(%s, r1) = %v; want ErrNotFound", other, err)
		}
	}
	// The old markers are dev's: a redelivery in dev is recognised, the same id in
	// test is another batch.
	b := graph.Batch{Nodes: []graph.Node{{ID: "r1", Type: graph.TypeConcept}}}
	if r, err := s.ApplyBatch(ctx, "dev", b, "SLUICE_GRAPH:1"); err != nil || !r.AlreadyApplied {
		t.Errorf("old marker in dev: %+v, %v; want AlreadyApplied", r, err)
	}
	if r, err := s.ApplyBatch(ctx, "test", b, "SLUICE_GRAPH:1"); err != nil || r.AlreadyApplied || r.NodesCreated != 1 {
		t.Errorf("the old marker's id in test: %+v, %v; want a new node created", r, err)
	}
	if n, err := s.GetNode(ctx, "test", "r1"); err != nil || n.Type != graph.TypeConcept || n.Version != 1 {
		t.Errorf("GetNode(test, r1) = %+v, %v; want a Concept at version 1", n, err)
	}
	if n, err := s.GetNode(ctx, "dev", "r1"); err != nil || n.Version != 2 {
		t.Errorf("dev r1 after writing test r1 = %+v, %v; want version 2 still", n, err)
	}
	// An edge of dev still needs its endpoints in dev (the rebuilt foreign keys).
	_, err = s.ApplyBatch(ctx, "dev", graph.Batch{Edges: []graph.Edge{{Source: "r1", Type: graph.EdgeCites, Target: "nowhere"}}}, "")
	if !errors.Is(err, graph.ErrInvalid) {
		t.Errorf("dev edge to a missing node: %v; want ErrInvalid", err)
	}
	if n, err := graph.CountMarkers(ctx, s, "dev"); err != nil || n != 2 {
		t.Errorf("dev markers = %d, %v; want the old 2", n, err)
	}
	// Reopening finds nothing to migrate and changes nothing.
	s2, err := open()
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	if st, err := s2.Stats(ctx, "dev"); err != nil || st.TotalNodes() != 3 {
		t.Errorf("Stats(dev) after reopening = %+v, %v", st, err)
	}
}
