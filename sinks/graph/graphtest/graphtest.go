// Package graphtest is the conformance suite every graph.Store backend passes. A backend's
// test calls Run with a constructor; each subtest gets a fresh, empty store.
package graphtest

import (
	"context"
	"fmt"
	"testing"
	"time"

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
