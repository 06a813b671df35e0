package pipeline_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/document"
)

// limitedSink is a document sink that serves at most limit writes at once, says so through
// WriteConcurrency, and records the most calls it ever saw at once.
type limitedSink struct {
	pipeline.DocSink
	limit int
	hold  time.Duration // how long each write takes; default 5 ms

	mu      sync.Mutex
	now     int
	maxSeen int
}

func (s *limitedSink) WriteConcurrency() int { return s.limit }

func (s *limitedSink) WriteDocs(ctx context.Context, coll string, docs []document.Doc) ([]error, error) {
	s.mu.Lock()
	s.now++
	s.maxSeen = max(s.maxSeen, s.now)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.now--
		s.mu.Unlock()
	}()
	hold := s.hold
	if hold == 0 {
		hold = 5 * time.Millisecond
	}
	time.Sleep(hold) // a remote round trip, so that writes overlap
	return s.DocSink.WriteDocs(ctx, coll, docs)
}

func TestWorkerUsesTheSinksWriteConcurrency(t *testing.T) {
	e := newEnv(t, envOpts{})
	sink := &limitedSink{DocSink: e.store, limit: 3}
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.Batch.MaxBatch = 10 })
	_, job := e.load(t, writeChunks(t, t.TempDir(), 1000, "wc_%05d"), false)
	if job.Written != 1000 {
		t.Fatalf("job %+v: want 1000 written", job)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	// Without the hint the batcher runs 10 writes at once; 100 batches of 5 ms each overlap.
	if sink.maxSeen > sink.limit || sink.maxSeen < 2 {
		t.Fatalf("%d writes at once, want between 2 and the sink's %d", sink.maxSeen, sink.limit)
	}
}

// With a backlog waiting, the worker keeps every writer of the sink busy: it pulls enough
// messages for all its batches (with 1,024 in flight it could fill only ten batches of 100,
// half of Astra's pool).
func TestWorkerFillsEveryWriterFromABacklog(t *testing.T) {
	e := newEnv(t, envOpts{})
	sink := &limitedSink{DocSink: e.store, limit: 20, hold: 200 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 4000, "bk_%05d")})
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, sink, nil) // the whole job waits in the stream
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil || job.Written != 4000 {
		t.Fatalf("job %+v, %v: want 4000 written", job, err)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if sink.maxSeen != sink.limit {
		t.Fatalf("%d writes at once, want all %d of the sink's writers busy", sink.maxSeen, sink.limit)
	}
}
