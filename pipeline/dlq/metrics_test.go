package dlq_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/dlq"
)

// replays returns sluice_dead_letter_replays_total by result.
func replays(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "sluice_dead_letter_replays_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// Issue 16: replays are counted by result (replayed, skipped, failed), every result from the
// start; a dry run counts nothing.
func TestReplaysCounted(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, newFaultySink(e.store, "count_0001"))
	job := e.load(t, writeChunks(t, e.dir, 3, "count_%04d"))
	f := dlq.Filter{Job: job.JobID}
	e.waitEntries(t, f, 1)
	reg := prometheus.NewRegistry()
	s, err := dlq.New(dlq.Config{JS: e.js, Stream: e.streams.DLQ, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if got := replays(t, reg); len(got) != 3 || got["replayed"] != 0 || got["skipped"] != 0 || got["failed"] != 0 {
		t.Fatalf("before any replay: %v, want the three results at 0", got)
	}
	ctx := context.Background()
	if _, err := s.Replay(ctx, dlq.ReplayRequest{Filter: &f, DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if got := replays(t, reg); got["replayed"] != 0 {
		t.Fatalf("after a dry run: %v, want nothing counted", got)
	}
	if res, err := s.Replay(ctx, dlq.ReplayRequest{Filter: &f}); err != nil || len(res.Replayed) != 1 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	if _, err := s.Replay(ctx, dlq.ReplayRequest{IDs: []string{"SLUICE_CHUNKS-999999"}}); err != nil {
		t.Fatal(err)
	}
	if got := replays(t, reg); got["replayed"] != 1 || got["skipped"] != 1 || got["failed"] != 0 {
		t.Fatalf("after a replay and a replay of an unknown id: %v, want 1 replayed, 1 skipped", got)
	}
}
