package dlq_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...)
}

// testEnv is a real embedded nats-server with Sluice's streams, a real SQLite document store
// and a dead-letter Store over the DLQ stream. (The pattern of pipeline/env_test.go.)
type testEnv struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *sjs.Provisioned
	store   *docstore.Store
	jobs    *jobs.Store
	dlq     *dlq.Store
	dir     string
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	dir := t.TempDir()
	_, nc, js := embeddedtest.Start(t, embedded.Config{DataDir: dir, LazySync: true})
	ctx := context.Background()
	// AckWait 5 s: a message whose nak the worker's subscriber lost under load (seen with
	// ≈1 MiB messages on a loaded machine) is redelivered within the tests' 30 s waits.
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{MaxDeliver: 3, AckWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(dir, "documents.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	e := &testEnv{nc: nc, js: js, streams: streams, store: store, jobs: jobs.NewStore(streams.JobsKV), dir: dir}
	e.dlq = e.newStore(t)
	return e
}

// newStore returns a fresh Store over the env's DLQ stream, as a restarted process would have.
func (e *testEnv) newStore(t testing.TB) *dlq.Store {
	t.Helper()
	s, err := dlq.New(dlq.Config{JS: e.js, Stream: e.streams.DLQ})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startWorker runs a real pipeline worker over sink until the test ends.
func (e *testEnv) startWorker(t testing.TB, sink pipeline.DocSink) {
	t.Helper()
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{
		JS: e.js, Streams: e.streams, Sink: sink,
		Retry: settle.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// writeChunks writes n small Pass C records with ids fmt.Sprintf(idf, i) to a JSONL file.
func writeChunks(t testing.TB, dir string, n int, idf string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"chunk_id":%q,"content":"Chunk %d: the quick brown fox.","stage":"raw"}`+"\n", fmt.Sprintf(idf, i), i)
	}
	p := filepath.Join(dir, fmt.Sprintf("chunks-%s.jsonl", strings.ReplaceAll(idf, "%", "")))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// load publishes path as a job in dev and waits for it to end.
func (e *testEnv) load(t testing.TB, path string) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dir, "spool")})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil {
		t.Fatalf("wait for %s: %v", res.JobID, err)
	}
	return job
}

// waitJob waits until cond holds for job id.
func (e *testEnv) waitJob(t testing.TB, id string, cond func(jobs.Job) bool) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last jobs.Job
	err := e.jobs.Watch(ctx, id, func(j jobs.Job) bool { last = j; return cond(j) })
	if err != nil {
		t.Fatalf("job %s: %v (last %+v)", id, err, last)
	}
	return last
}

// all lists every entry matching f, following cursors.
func (e *testEnv) all(t testing.TB, s *dlq.Store, f dlq.Filter) []dlq.Entry {
	t.Helper()
	var out []dlq.Entry
	cursor := ""
	for {
		p, err := s.List(context.Background(), f, cursor, 0)
		if err != nil {
			t.Fatalf("list %+v: %v", f, err)
		}
		out = append(out, p.Entries...)
		if p.NextCursor == "" {
			return out
		}
		cursor = p.NextCursor
	}
}

// waitEntries waits until exactly n entries match f and returns them.
func (e *testEnv) waitEntries(t testing.TB, f dlq.Filter, n int) []dlq.Entry {
	t.Helper()
	var got []dlq.Entry
	waitFor(t, fmt.Sprintf("%d dead letters matching %+v", n, f), func() bool {
		got = e.all(t, e.dlq, f)
		return len(got) == n
	})
	return got
}

type streamState struct{ msgs, first, last uint64 }

func (e *testEnv) state(t testing.TB, s jetstream.Stream) streamState {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return streamState{info.State.Msgs, info.State.FirstSeq, info.State.LastSeq}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// faultySink wraps the real store and refuses some ids permanently: fault injection over a
// real sink, not a stand-in for one.
type faultySink struct {
	pipeline.DocSink
	mu     sync.Mutex
	reject map[string]bool // guarded by mu
	writes map[string]int  // guarded by mu: successful writes per id
}

func newFaultySink(inner pipeline.DocSink, reject ...string) *faultySink {
	s := &faultySink{DocSink: inner, reject: map[string]bool{}, writes: map[string]int{}}
	for _, id := range reject {
		s.reject[id] = true
	}
	return s
}

// fix makes the sink accept ids again.
func (s *faultySink) fix(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.reject, id)
	}
}

func (s *faultySink) writesOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[id]
}

func (s *faultySink) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	out := make([]error, len(docs))
	var pass []document.Doc
	var idx []int
	s.mu.Lock()
	for i, d := range docs {
		if s.reject[d.ID] {
			out[i] = fault.Permanentf(fault.Rejected, "document %s refused by the store", d.ID)
			continue
		}
		pass = append(pass, d)
		idx = append(idx, i)
	}
	s.mu.Unlock()
	if len(pass) == 0 {
		return out, nil
	}
	res, err := s.DocSink.WriteDocs(ctx, collection, pass)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, i := range idx {
		out[i] = res[k]
		if res[k] == nil {
			s.writes[pass[k].ID]++
		}
	}
	return out, nil
}
