package pipeline_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// A sink outage longer than the whole retry schedule used to dead-letter every message in
// flight ("exhausted" after MaxDeliver deliveries) and, when shorter, to recover only when the
// last backoff ran out (≈32 s after a 20 s outage, docs/reliability.md). With the circuit
// breaker the messages are held while the sink is probed: nothing is dead-lettered, few
// deliveries are spent, and the job completes within a probe interval of the sink's return.
// The same outage with the breaker disabled must dead-letter: the scenario bites.
func TestBreakerHoldsMessagesThroughAnOutage(t *testing.T) {
	for _, tc := range []struct {
		name     string
		disabled bool
	}{{"breaker", false}, {"no breaker", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{maxDeliver: 5})
			srv, sink, _ := astraSink(t, nil)
			e.startWorker(t, sink, func(c *pipeline.WorkerConfig) {
				c.SinkName = "astra"
				c.Breaker.Disabled = tc.disabled
				c.Breaker.ProbeMax = time.Second
			})
			const n = 600
			srv.SetFaultRate(1, dataapitest.FaultHTTP503) // every command, findCollections included
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), n, "outage_%05d")})
			if err != nil {
				t.Fatal(err)
			}
			// Five deliveries with 10–50 ms between them take well under 2 s.
			time.Sleep(2 * time.Second)
			srv.SetFaultRate(0)
			back := time.Now()
			job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
			if err != nil {
				t.Fatalf("wait: %v (%+v)", err, job)
			}
			recovered := time.Since(back)
			dead := len(e.deadLetters(t))
			if tc.disabled {
				if dead == 0 {
					t.Fatalf("without the breaker the outage dead-lettered nothing (job %+v): the test does not bite", job)
				}
				return
			}
			stored := len(srv.Documents("default_keyspace", "ttrpg_chunks_dev"))
			if job.State != jobs.JobCompleted || job.Written != n || dead != 0 || stored != n {
				t.Fatalf("after the outage: job %s, %d written, %d dead letters, %d stored; want completed, %d, 0, %d",
					job.State, job.Written, dead, stored, n, n)
			}
			if recovered > 5*time.Second {
				t.Errorf("the job completed %s after the sink came back; the probe interval is at most 1 s", recovered)
			}
			info, err := e.streams.ChunkConsumer.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Each message held by the breaker is delivered once or, if it was written in the
			// first failing batch, twice at most (the held retries): no redelivery storm.
			if redelivered := info.Delivered.Stream; redelivered > 2*n {
				t.Errorf("%d deliveries for %d messages", redelivered, n)
			}
		})
	}
}

// A sink that answers probes but keeps failing the same writes is not down: the held retries
// are bounded, and the messages go back to the broker and end as dead letters after their
// deliveries instead of being held for ever.
func TestBreakerGivesUpOnWritesThatFailWhileProbesPass(t *testing.T) {
	e := newEnv(t, envOpts{maxDeliver: 3})
	srv, sink, _ := astraSink(t, nil)
	srv.SetCommandFilter("insertMany")
	srv.SetFaultRate(1, dataapitest.FaultHTTP503)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) {
		c.SinkName = "astra"
		c.Breaker.ProbeBase, c.Breaker.ProbeMax = 10*time.Millisecond, 50*time.Millisecond
	})
	_, job := e.load(t, writeChunks(t, t.TempDir(), 20, "stuck_%03d"), false)
	if job.State != jobs.JobCompletedWithErrors || job.DeadLettered != 20 {
		t.Fatalf("job = %+v, want every chunk dead-lettered after its deliveries", job)
	}
	for _, d := range e.deadLetters(t) {
		if eo := d["error"].(map[string]any); eo["class"] != "exhausted" {
			t.Fatalf("dead letter class %v, want exhausted: %v", eo["class"], d)
		}
	}
}

// A worker stopped while its sink is down returns within its drain timeout: the held
// messages go back to the broker (not dead-lettered), and the next worker writes them.
func TestBreakerLetsTheWorkerStopDuringAnOutage(t *testing.T) {
	e := newEnv(t, envOpts{})
	srv, sink, _ := astraSink(t, nil)
	srv.SetFaultRate(1, dataapitest.FaultHTTP503)
	stop := e.startWorker(t, sink, func(c *pipeline.WorkerConfig) {
		c.SinkName = "astra"
		c.DrainTimeout = 2 * time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 100, "held_%03d")})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the breaker opens and holds the messages
	begin := time.Now()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if took := time.Since(begin); took > 3*time.Second {
		t.Fatalf("the worker took %s to stop with a 2 s drain timeout while its sink was down", took)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters after stopping during an outage: %v", len(dl), dl[0]["error"])
	}
	srv.SetFaultRate(0)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil || job.State != jobs.JobCompleted || job.Written != 100 {
		t.Fatalf("job after restart = %+v, %v", job, err)
	}
}

// downGraph is the real SQLite graph store behind a switch: while down, every apply and
// ping fails transiently, as a PostgreSQL server does while it restarts.
type downGraph struct {
	*graph.SQLite
	down atomic.Bool
}

var errGraphRestarting = errors.New("injected: graph store restarting")

func (g *downGraph) ApplyBatch(ctx context.Context, env string, b graph.Batch, msgID string) (graph.Result, error) {
	if g.down.Load() {
		return graph.Result{}, errGraphRestarting
	}
	return g.SQLite.ApplyBatch(ctx, env, b, msgID)
}

func (g *downGraph) Ping(ctx context.Context) error {
	if g.down.Load() {
		return errGraphRestarting
	}
	return g.SQLite.Ping(ctx)
}

// The graph line is ordered (one batch at a time): a graph store down longer than the retry
// schedule dead-lettered the batch at the head of the line, and every edge batch needing its
// nodes after it. Held by the graph's breaker, the whole graph lands once the store is back.
func TestBreakerHoldsTheGraphLineThroughAStoreOutage(t *testing.T) {
	e := newEnv(t, envOpts{maxDeliver: 3})
	g := &downGraph{SQLite: graphStore(t)}
	g.down.Store(true)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) {
		c.Graph = g
		c.Breaker.ProbeMax = 500 * time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: filepath.Join(fixtures, "job_1757237159_c8623a8fec21_graphstore_batch.json")})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // three deliveries with 10–50 ms between them fit many times over
	g.down.Store(false)
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil || job.State != jobs.JobCompleted || job.DeadLettered != 0 {
		t.Fatalf("job after the graph store came back = %+v, %v", job, err)
	}
	st, err := g.Stats(ctx, graph.DefaultEnv)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalNodes() != 626 || st.TotalEdges() != 1280 {
		t.Fatalf("graph holds %d nodes, %d edges; want 626 and 1280", st.TotalNodes(), st.TotalEdges())
	}
}
