package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/instrument/instrumenttest"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// sample returns the value of family name's series with labels (a histogram's count),
// or -1 when there is none.
func sample(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	if v, ok := instrumenttest.Value(t, reg, name, labels); ok {
		return v
	}
	return -1
}

// Issue 16: messages are counted by stream and outcome (chunks written, retried and
// dead-lettered; job events applied), sink calls by sink, command and status (a write in which
// one document was refused is partial), and the messages in flight go back to 0 once settled.
func TestMetricsCountOutcomesByStream(t *testing.T) {
	e := newEnv(t, envOpts{maxDeliver: 5})
	sink := newFaultySink(e.store)
	sink.reject["m_0004"] = true
	sink.failTimes["m_0007"] = 1
	reg := prometheus.NewRegistry()
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.Registerer = reg })
	_, job := e.load(t, writeChunks(t, t.TempDir(), 10, "m_%04d"), false)
	if job.State != jobs.JobCompletedWithErrors || job.Written != 9 || job.DeadLettered != 1 {
		t.Fatalf("job = %+v", job)
	}
	waitFor(t, "every message settled", func() bool {
		return e.pendingAcks(t) == 0 && sample(t, reg, "sluice_messages_in_flight", map[string]string{"stream": schemas.StreamChunks}) == 0
	})
	chunks := func(outcome string) map[string]string {
		return map[string]string{"stream": schemas.StreamChunks, "outcome": outcome}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
		max    float64
	}{
		{"sluice_messages_total", chunks("written"), 9, 9},
		{"sluice_messages_total", chunks("dead_lettered"), 1, 1},
		{"sluice_messages_total", chunks("retried"), 1, 100},
		{"sluice_messages_total", map[string]string{"stream": schemas.StreamJobs, "outcome": "applied"}, 2, 100},
		{"sluice_messages_total", map[string]string{"stream": schemas.StreamJobs, "outcome": "dead_lettered"}, 0, 0},
		{"sluice_sink_write_seconds", map[string]string{"sink": "docstore", "command": "insert_docs", "status": "partial"}, 1, 100},
		{"sluice_sink_write_failures_total", map[string]string{"sink": "docstore", "command": "insert_docs"}, 0, 0},
		{"sluice_sink_writes_in_flight", map[string]string{"sink": "docstore", "command": "insert_docs"}, 0, 0},
		{"sluice_sink_batch_documents", map[string]string{"sink": "docstore"}, 1, 100},
	} {
		if v := sample(t, reg, c.name, c.labels); v < c.min || v > c.max {
			t.Errorf("%s%v = %v, want %v..%v", c.name, c.labels, v, c.min, c.max)
		}
	}

	// The reaper's scan counts the job by state; nothing unfinished, nothing stalled.
	ctx, cancel := context.WithCancel(context.Background())
	census := make(chan jobs.Census, 1)
	done := make(chan error, 1)
	go func() {
		done <- jobs.RunJobReaper(ctx, e.jobs, jobs.ReaperConfig{Every: time.Hour, Census: func(c jobs.Census) { census <- c }}, nil)
	}()
	c := <-census
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.ByState[jobs.JobCompletedWithErrors] != 1 || len(c.ByState) != 1 || c.Stalled != 0 {
		t.Fatalf("census = %+v, want one job completed with errors, none stalled", c)
	}
}

// Issue 16: the command worker counts its commands by outcome (applied, refused) and measures
// its store transactions by status, into the same families as the chunk worker.
func TestMetricsCountCommands(t *testing.T) {
	ce := newCmdEnv(t)
	reg := prometheus.NewRegistry()
	ce.startCommandWorker(t, commands.WorkerConfig{Registerer: reg})
	if out := ce.run(t, featureCmd("FR-1000000000001")); !out.Applied {
		t.Fatalf("feature not applied: %+v", out)
	}
	if out := ce.run(t, decideCmd("FR-404", requirements.ActionApprove, nil, nil)); out.Refusal == nil {
		t.Fatalf("decision on an unknown feature not refused: %+v", out)
	}
	cmds := func(outcome string) map[string]string {
		return map[string]string{"stream": sjs.StreamCommands, "outcome": outcome}
	}
	waitFor(t, "both commands counted", func() bool {
		return sample(t, reg, "sluice_messages_total", cmds("applied")) == 1 && sample(t, reg, "sluice_messages_total", cmds("refused")) == 1
	})
	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"sluice_sink_write_seconds", map[string]string{"sink": "requirements", "command": "apply_commands", "status": "ok"}, 1},
		{"sluice_command_batch_commands", map[string]string{}, 1},
		{"sluice_messages_in_flight", map[string]string{"stream": sjs.StreamCommands}, 0},
		{"sluice_messages_total", cmds("dead_lettered"), 0},
	} {
		if v := sample(t, reg, c.name, c.labels); v < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, v, c.min)
		}
	}
}

// Issue 16: the reaper's census counts a job it fails as failed, and reports how long the least
// recently updated unfinished job has gone without an update.
func TestReaperCensus(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	mk := func(id string) {
		if _, err := e.jobs.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", CreatedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	mk("jstale00000000000000000001") // unsealed, idle: reaped
	mk("jsealed0000000000000000001") // sealed, waiting for its items: unfinished, idle
	if _, err := e.jobs.Seal(ctx, schemas.JobSeal{JobID: "jsealed0000000000000000001", Env: "dev", Total: 3, Published: 3, SealedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	mk("jfresh00000000000000000001") // unsealed, fresh
	rctx, cancel := context.WithCancel(ctx)
	census := make(chan jobs.Census, 1)
	done := make(chan error, 1)
	go func() {
		done <- jobs.RunJobReaper(rctx, e.jobs, jobs.ReaperConfig{After: 300 * time.Millisecond, Every: time.Hour,
			Census: func(c jobs.Census) { census <- c }}, nil)
	}()
	c := <-census
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range c.ByState {
		total += n
	}
	if total != 3 || c.ByState[jobs.JobFailed] != 1 {
		t.Fatalf("census %v, want 3 jobs, the reaped one failed", c.ByState)
	}
	if c.Stalled < 500*time.Millisecond || c.Stalled > time.Minute {
		t.Fatalf("stalled %s, want the sealed job's idle time (≥ 500ms); census %v", c.Stalled, c.ByState)
	}
}
