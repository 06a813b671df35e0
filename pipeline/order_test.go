package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// orderedLoader is the test env's loader with small atomic batches, several in flight, so a
// file spans many batches that race to commit.
func (e *testEnv) orderedLoader(t testing.TB, graphBytes int) *intake.Loader {
	t.Helper()
	l, err := intake.NewLoader(intake.LoaderConfig{
		JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dir, "spool"),
		Batch:                sjs.BatchWriterConfig{BatchSize: 3, Concurrency: 8},
		MaxGraphMessageBytes: graphBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (e *testEnv) loadWith(t testing.TB, l *intake.Loader, path string, force bool) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path, Force: force})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil {
		t.Fatalf("wait for %s: %v (last state %+v)", res.JobID, err, job)
	}
	return job
}

// Issue 11, finding 1: a graph upload split into 11 messages was published in parallel atomic
// batches and stored out of order (seq 1 held the last edges); edges stored before their
// nodes were dead-lettered, and 56% of the edges never arrived. Here a graph file is cut into
// ≈60 messages published three to a batch, eight batches in flight: every edge must land.
func TestLargeGraphUploadLandsEveryEdge(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Graph = g })

	const nodes, edges = 200, 3000
	var b strings.Builder
	b.WriteString(`{"nodes":[`)
	for i := range nodes {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":"n:%04d","type":"Rule","properties":{"name":"rule %d"}}`, i, i)
	}
	b.WriteString(`],"edges":[`)
	for i := range edges {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"source":"n:%04d","type":"depends_on","target":"n:%04d"}`, i%nodes, (i*7+i/nodes+1)%nodes)
	}
	b.WriteString(`]}`)
	path := filepath.Join(t.TempDir(), "graph.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	job := e.loadWith(t, e.orderedLoader(t, 4<<10), path, false)
	if job.Total < 40 {
		t.Fatalf("the graph was cut into %d messages; the test needs many", job.Total)
	}
	if job.State != jobs.JobCompleted || job.Written != job.Total || job.DeadLettered != 0 {
		t.Fatalf("graph job %+v, want every message applied", job)
	}
	st, err := g.Stats(context.Background(), "dev")
	if err != nil {
		t.Fatal(err)
	}
	if st.TotalNodes() != nodes || st.TotalEdges() != edges {
		t.Fatalf("graph holds %d nodes and %d edges, want %d and %d", st.TotalNodes(), st.TotalEdges(), nodes, edges)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters, want none: %v", len(dl), dl[0])
	}
}

// Issue 11, finding 2: "the later item wins" did not hold — a file with one id at items 499
// and 500, loaded five times with force, stored FIRS FIRS FIRS LAST FIRS: the two items sat in
// different atomic batches and the batches committed in either order.
func TestLaterDuplicateWinsAcrossBatches(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	var b strings.Builder
	for i := range 60 {
		id, content := fmt.Sprintf("c%03d", i), fmt.Sprintf("chunk %d of the file", i)
		switch i {
		case 29:
			id, content = "dup", "FIRST: the earlier item with this id"
		case 30:
			id, content = "dup", "LAST: the later item with this id"
		}
		line, _ := json.Marshal(map[string]any{"chunk_id": id, "content": content, "stage": "raw"})
		b.Write(line)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "dup.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	l := e.orderedLoader(t, 0)
	for round := range 5 {
		job := e.loadWith(t, l, path, true)
		if job.State != jobs.JobCompleted || job.Written != 60 {
			t.Fatalf("round %d: job %+v", round, job)
		}
		if got := e.doc(t, "dup")["content"]; !strings.HasPrefix(fmt.Sprint(got), "LAST") {
			t.Fatalf("round %d: stored %q, want the later item (LAST…)", round, got)
		}
	}
}

// A graph batch whose edges need nodes that are not stored yet is retried with delay, not
// dead-lettered at once: when the nodes arrive (here a second message published after it),
// the edges are applied.
func TestGraphBatchWaitsForItsEndpoints(t *testing.T) {
	e := newEnv(t, envOpts{})
	g := graphStore(t)
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) {
		c.Graph = g
		c.Retry = settle.RetryPolicy{Base: 100 * time.Millisecond, Max: 200 * time.Millisecond}
	})
	ctx := context.Background()
	publish := func(body string) {
		m := nats.NewMsg(schemas.GraphSubject("dev"))
		m.Data = []byte(body)
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish(`{"nodes":[],"edges":[{"source":"rule:x","type":"depends_on","target":"rule:y"}]}`)
	// The batch failed and went back to the end of the stream before its nodes exist.
	waitFor(t, "the edge batch requeued", func() bool {
		info, err := e.streams.Graph.Info(ctx)
		if err != nil || info.State.LastSeq < 2 {
			return false
		}
		m, err := e.streams.Graph.GetMsg(ctx, info.State.LastSeq)
		return err == nil && m.Header.Get(schemas.HeaderRequeues) != ""
	})
	if st, err := g.Stats(ctx, "dev"); err != nil || st.TotalEdges() != 0 {
		t.Fatalf("an edge was applied before its nodes existed: %v, %v", st, err)
	}
	publish(`{"nodes":[{"id":"rule:x","type":"Rule","properties":{}},{"id":"rule:y","type":"Rule","properties":{}}],"edges":[]}`)
	waitFor(t, "the edge applied once its nodes arrived", func() bool {
		st, err := g.Stats(ctx, "dev")
		return err == nil && st.TotalEdges() == 1
	})
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters %v, want none", dl)
	}
}
