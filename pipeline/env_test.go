package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pipeline"
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

// testEnv is a real embedded nats-server with Sluice's streams, and a real SQLite store.
type testEnv struct {
	t       *testing.T
	srv     *embedded.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *sjs.Provisioned
	store   *docstore.Store
	jobs    *jobs.Store
	dir     string
}

type envOpts struct {
	maxDeliver int
	ackWait    time.Duration
	syncAlways bool
}

func newEnv(t testing.TB, o envOpts) *testEnv {
	t.Helper()
	dir := t.TempDir()
	srv, nc, js := embeddedtest.Start(t, embedded.Config{DataDir: dir, LazySync: !o.syncAlways})
	ctx := context.Background()
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{MaxDeliver: o.maxDeliver, AckWait: o.ackWait})
	if err != nil {
		t.Fatal(err)
	}
	store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(dir, "documents.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return &testEnv{srv: srv, nc: nc, js: js, streams: streams, store: store, jobs: jobs.NewStore(streams.JobsKV), dir: dir}
}

// startWorker runs a worker over sink until the test ends (or stop is called) and returns a
// stop function that drains it and returns Run's error.
func (e *testEnv) startWorker(t testing.TB, sink pipeline.DocSink, mod func(*pipeline.WorkerConfig)) (stop func() error) {
	t.Helper()
	cfg := pipeline.WorkerConfig{
		JS: e.js, Streams: e.streams, Sink: sink, Key: testKey(t),
		Retry: settle.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond},
	}
	if mod != nil {
		mod(&cfg)
	}
	w, err := pipeline.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func (e *testEnv) loader(t testing.TB) *intake.Loader {
	t.Helper()
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dir, "spool"), Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// load publishes path as a job in dev and waits (up to a minute) for it to end.
func (e *testEnv) load(t testing.TB, path string, force bool) (intake.LoadResult, jobs.Job) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: path, Force: force})
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil {
		t.Fatalf("wait for %s: %v (last state %+v)", res.JobID, err, job)
	}
	return res, job
}

func (e *testEnv) doc(t testing.TB, id string) map[string]any {
	t.Helper()
	raw, err := e.store.GetDoc(context.Background(), "ttrpg_chunks_dev", id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func (e *testEnv) count(t testing.TB) int64 {
	t.Helper()
	n, err := e.store.CountDocs(context.Background(), "ttrpg_chunks_dev")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// deadLetters reads every dead letter stored so far.
func (e *testEnv) deadLetters(t testing.TB) []map[string]any {
	t.Helper()
	ctx := context.Background()
	info, err := e.streams.DLQ.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := e.streams.DLQ.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var env map[string]any
		if err := json.Unmarshal(m.Data, &env); err != nil {
			t.Fatal(err)
		}
		out = append(out, env)
	}
	return out
}

// pendingAcks returns how many chunk messages are delivered but not acked.
func (e *testEnv) pendingAcks(t testing.TB) int {
	t.Helper()
	info, err := e.streams.ChunkConsumer.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending + int(info.NumPending)
}

// faultySink wraps the real store and injects failures: it is fault injection over a real
// sink, not a stand-in for one.
type faultySink struct {
	pipeline.DocSink
	mu sync.Mutex
	// failTimes[id] transient failures left for a document id.
	failTimes map[string]int
	// reject holds ids the sink refuses permanently.
	reject map[string]bool
	// writes[id] counts successful writes per id.
	writes map[string]int
	// delay is added to every call.
	delay time.Duration
	calls int
}

func newFaultySink(inner pipeline.DocSink) *faultySink {
	return &faultySink{DocSink: inner, failTimes: map[string]int{}, reject: map[string]bool{}, writes: map[string]int{}}
}

var errInjected = errors.New("injected transient failure")

func (s *faultySink) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	s.mu.Lock()
	s.calls++
	delay := s.delay
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	out := make([]error, len(docs))
	var pass []document.Doc
	var idx []int
	s.mu.Lock()
	for i, d := range docs {
		switch {
		case s.reject[d.ID]:
			out[i] = fault.Permanentf(fault.Rejected, "document %s refused by the store", d.ID)
		case s.failTimes[d.ID] > 0:
			s.failTimes[d.ID]--
			out[i] = errInjected
		default:
			pass = append(pass, d)
			idx = append(idx, i)
		}
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
	for k, i := range idx {
		out[i] = res[k]
		if res[k] == nil {
			s.writes[pass[k].ID]++
		}
	}
	s.mu.Unlock()
	return out, nil
}

func (s *faultySink) writesOf(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[id]
}
