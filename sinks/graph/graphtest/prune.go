package graphtest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

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
