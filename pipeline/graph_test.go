package pipeline_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
)

func graphStore(t *testing.T) *graph.SQLite {
	t.Helper()
	g, err := graph.OpenSQLite(context.Background(), graph.SQLiteConfig{Path: filepath.Join(t.TempDir(), "graph.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

func TestGraphFilesLoad(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Graph = g })
	ctx := context.Background()

	res, job := e.load(t, filepath.Join(fixtures, "job_1757237159_c8623a8fec21_graphstore_batch.json"), false)
	if job.State != jobs.JobCompleted || job.Written != job.Total || job.Total < 1 {
		t.Fatalf("graphstore batch job: %+v", job)
	}
	st, err := g.Stats(ctx, graph.DefaultEnv)
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalNodes() != 626 || st.TotalEdges() != 1280 {
		t.Fatalf("graph holds %d nodes, %d edges; want 626 and 1280", st.TotalNodes(), st.TotalEdges())
	}
	// Loading it again (a new job) applies every node a second time: version 2.
	_, job2 := e.load(t, filepath.Join(fixtures, "job_1757237159_c8623a8fec21_graphstore_batch.json"), true)
	if job2.State != jobs.JobCompleted || job2.JobID == res.JobID {
		t.Fatalf("second load: %+v", job2)
	}
	n, err := g.GetNode(ctx, graph.DefaultEnv, "concept:dev:blinded")
	if err != nil {
		// fall back to any node of the batch
		t.Fatalf("get node: %v", err)
	}
	if n.Version != 2 {
		t.Fatalf("node %s version %d after two loads, want 2", n.ID, n.Version)
	}

	_, snap := e.load(t, filepath.Join(fixtures, "graph_snapshot.json"), false)
	if snap.State != jobs.JobCompleted || len(snap.Warnings) != 2 {
		t.Fatalf("snapshot job: %+v (warnings %v)", snap, snap.Warnings)
	}
	for _, w := range snap.Warnings {
		if !strings.Contains(w.ID+w.Reason, "hierarchy") {
			t.Errorf("unexpected warning %+v", w)
		}
	}
	_, legacy := e.load(t, filepath.Join(fixtures, "job_1757237159_c8623a8fec21_pass_c_graph.json"), false)
	if legacy.State != jobs.JobCompleted {
		t.Fatalf("legacy graph job: %+v", legacy)
	}

	// Files that hold neither chunks nor a graph are refused with a clear error.
	for _, f := range []string{"split_index.json", "alias_map.json", "job_1757237159_c8623a8fec21_pass_b_dictionary_delta.json", "relationship_edges.jsonl"} {
		_, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: filepath.Join(fixtures, f)})
		if !errors.Is(err, intake.ErrBadInput) {
			t.Errorf("%s: %v, want a bad-input error", f, err)
		}
	}
}

func TestGraphBatchRollsBackOnBadEdge(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Graph = g })
	m := nats.NewMsg(schemas.GraphSubject("dev"))
	m.Data = []byte(`{"nodes":[{"id":"rule:a","type":"Rule","properties":{}},{"id":"rule:b","type":"Rule","properties":{}}],
		"edges":[{"source":"rule:a","type":"depends_on","target":"rule:b"},{"source":"rule:a","type":"depends_on","target":"rule:missing"}]}`)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	// A missing endpoint may still arrive, so the batch goes back to the end of the stream a
	// few times (8) before it is dead-lettered.
	waitFor(t, "the bad batch dead-lettered", func() bool { return len(e.deadLetters(t)) == 1 })
	dl := e.deadLetters(t)[0]
	msg := dl["error"].(map[string]any)["message"].(string)
	if dl["error"].(map[string]any)["class"] != "validation" || !strings.Contains(msg, "rule:missing") || !strings.Contains(msg, "requeued 8 times") {
		t.Fatalf("dead letter: %v", dl)
	}
	if _, err := g.GetNode(context.Background(), graph.DefaultEnv, "rule:a"); !errors.Is(err, graph.ErrNotFound) {
		t.Fatalf("a node of the failed batch was left behind: %v", err)
	}
}

// Regression (issue 13): `sluice load --env test graph.json` was accepted, published on
// sluice.v1.graph.test, and the graph consumer applied it to the one graph every env read,
// so GET /v1/graph/stats?env=prod counted it. Now a graph job loads into its env's graph
// only: invisible from prod and dev (stats, node, neighbours), and the same file loaded
// into prod too makes independent nodes there.
func TestGraphLoadKeptPerEnv(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Graph = g })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	file := filepath.Join(fixtures, "job_1757237159_c8623a8fec21_graphstore_batch.json")
	load := func(env string) jobs.Job {
		t.Helper()
		res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: env, Path: file})
		if err != nil {
			t.Fatalf("load into %s: %v", env, err)
		}
		job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
		if err != nil || job.State != jobs.JobCompleted || job.Env != env {
			t.Fatalf("job in %s: %+v, %v", env, job, err)
		}
		return job
	}
	load("test")
	const node = "concept:dev:blinded"
	for _, env := range []string{"prod", "dev"} {
		if st, err := g.Stats(ctx, env); err != nil || st.TotalNodes() != 0 || st.TotalEdges() != 0 {
			t.Errorf("Stats(%s) after a test load = %d nodes, %d edges, %v; want 0", env, st.TotalNodes(), st.TotalEdges(), err)
		}
		if _, err := g.GetNode(ctx, env, node); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("GetNode(%s, %s) after a test load: %v; want ErrNotFound", env, node, err)
		}
		if _, err := g.Neighbors(ctx, env, node, 2, nil); !errors.Is(err, graph.ErrNotFound) {
			t.Errorf("Neighbors(%s, %s) after a test load: %v; want ErrNotFound", env, node, err)
		}
	}
	st, err := g.Stats(ctx, "test")
	if err != nil || st.TotalNodes() != 626 || st.TotalEdges() != 1280 {
		t.Fatalf("Stats(test) = %d nodes, %d edges, %v; want 626 and 1280", st.TotalNodes(), st.TotalEdges(), err)
	}
	if ns, err := g.Neighbors(ctx, "test", node, 1, nil); err != nil || len(ns) == 0 {
		t.Errorf("Neighbors(test, %s) = %d, %v; want some", node, len(ns), err)
	}
	// The same file into prod: its own nodes at version 1, test's untouched.
	load("prod")
	for _, env := range []string{"test", "prod"} {
		if n, err := g.GetNode(ctx, env, node); err != nil || n.Version != 1 {
			t.Errorf("GetNode(%s, %s) = version %d, %v; want 1", env, node, n.Version, err)
		}
	}
	if st, err := g.Stats(ctx, "dev"); err != nil || st.TotalNodes() != 0 {
		t.Errorf("Stats(dev) = %d nodes, %v; want 0", st.TotalNodes(), err)
	}
}
