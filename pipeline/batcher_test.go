package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
)

// callSink records the documents of each WriteDocs call; a document whose ID starts with
// "bad" fails permanently, and a call holding a document "down" fails as a whole.
type callSink struct {
	mu    sync.Mutex
	calls [][]string
}

func (s *callSink) WriteDocs(_ context.Context, _ string, docs []document.Doc) ([]error, error) {
	ids := make([]string, len(docs))
	out := make([]error, len(docs))
	for i, d := range docs {
		ids[i] = d.ID
		if len(d.ID) >= 3 && d.ID[:3] == "bad" {
			out[i] = fault.Permanentf(fault.Validation, "document %s is bad", d.ID)
		}
		if d.ID == "down" {
			return nil, errors.New("store unavailable")
		}
	}
	s.mu.Lock()
	s.calls = append(s.calls, ids)
	s.mu.Unlock()
	return out, nil
}

func (s *callSink) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n []int
	for _, c := range s.calls {
		n = append(n, len(c))
	}
	return n
}

func docsNamed(ids ...string) []document.Doc {
	docs := make([]document.Doc, len(ids))
	for i, id := range ids {
		docs[i] = document.Doc{ID: id, Body: []byte(`{"_id":"` + id + `"}`)}
	}
	return docs
}

func TestBatcherCutsRequestsAndMapsOutcomes(t *testing.T) {
	sink := &callSink{}
	b, err := pipeline.NewBatcher(pipeline.BatcherConfig{Sink: sink, MaxBatch: 10, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 25)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%02d", i)
	}
	ids[17] = "bad17"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := b.Write(ctx, "c", docsNamed(ids...))
	for i, e := range res {
		switch {
		case i == 17 && !fault.IsPermanent(e):
			t.Errorf("outcome of bad17 = %v, want its permanent error", e)
		case i != 17 && e != nil:
			t.Errorf("outcome of %s = %v, want nil", ids[i], e)
		}
	}
	got := sink.sizes()
	slices.Sort(got)
	if !slices.Equal(got, []int{5, 10, 10}) {
		t.Fatalf("calls of %v documents, want 10, 10 and 5", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if res := b.Write(ctx, "c", docsNamed("after")); !errors.Is(res[0], pipeline.ErrBatcherClosed) {
		t.Fatalf("Write after Close returned %v, want ErrBatcherClosed", res[0])
	}
}

func TestBatcherWholeCallFailureReachesEveryDocument(t *testing.T) {
	sink := &callSink{}
	b, err := pipeline.NewBatcher(pipeline.BatcherConfig{Sink: sink, MaxBatch: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	res := b.Write(context.Background(), "c", docsNamed("a", "down", "b", "c"))
	for i, e := range res[:3] {
		if e == nil || fault.IsPermanent(e) {
			t.Errorf("outcome %d = %v, want the transient failure of its call", i, e)
		}
	}
	if res[3] != nil {
		t.Errorf("outcome of the document in the next call = %v, want nil", res[3])
	}
}

func TestProgressRecordAllAcrossJobs(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	for _, id := range []string{"job-a", "job-b"} {
		if _, err := e.jobs.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := jobs.NewProgress(jobs.ProgressConfig{Store: e.jobs})
	if err != nil {
		t.Fatal(err)
	}
	var marks []jobs.Mark
	for i := range 50 {
		marks = append(marks, jobs.Mark{Job: "job-a", Item: int64(i), Outcome: jobs.Written})
	}
	marks = append(marks,
		jobs.Mark{Job: "job-b", Item: 0, Outcome: jobs.Written},
		jobs.Mark{Job: "job-b", Item: 1, Outcome: jobs.DeadLettered},
		jobs.Mark{Job: "job-a", Item: 3, Outcome: jobs.Written}, // recorded twice: a set
	)
	if err := p.RecordAll(ctx, marks); err != nil {
		t.Fatal(err)
	}
	a, err := e.jobs.Get(ctx, "job-a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.jobs.Get(ctx, "job-b")
	if err != nil {
		t.Fatal(err)
	}
	if a.Written != 50 || a.DeadLettered != 0 || b.Written != 1 || b.DeadLettered != 1 {
		t.Fatalf("job-a written %d dead %d, job-b written %d dead %d; want 50/0 and 1/1",
			a.Written, a.DeadLettered, b.Written, b.DeadLettered)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for range 100 { // after Close it fails at once, never hangs
		if err := p.RecordAll(ctx, marks[:1]); err == nil {
			t.Fatal("RecordAll after Close succeeded")
		}
	}
}

// hungSink never answers: each call waits until its context ends.
type hungSink struct{ calls atomic.Int64 }

func (s *hungSink) WriteDocs(ctx context.Context, _ string, docs []document.Doc) ([]error, error) {
	s.calls.Add(1)
	<-ctx.Done()
	return nil, ctx.Err()
}

// Issue 11, finding 8: a drain waited for writes to a hung sink for their whole WriteTimeout
// (SIGTERM took 58 s with a 30 s drain timeout). Abort cancels the writes under way, and Close
// returns at once after it.
func TestBatcherAbortCancelsHungWrites(t *testing.T) {
	sink := &hungSink{}
	b, err := pipeline.NewBatcher(pipeline.BatcherConfig{Sink: sink, WriteTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan []error, 1)
	go func() { results <- b.Write(context.Background(), "c", docsNamed("a", "b")) }()
	for sink.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	b.Abort()
	got := <-results
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Write and Close took %s after Abort", d)
	}
	for i, e := range got {
		if !errors.Is(e, context.Canceled) {
			t.Fatalf("outcome %d is %v, want context.Canceled", i, e)
		}
	}
}
