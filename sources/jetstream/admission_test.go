package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Issue 12: 1,000 concurrent job submissions each kept up to four atomic batches open, nothing
// bounded them across requests, and nats-server (50 open batches per stream) refused more than
// half with 10210 "atomic publish too many inflight" — HTTP 500s and orphaned jobs. With one
// Admission shared by every writer, 200 writers at once (each up to 4 batches of 10) all
// finish, every message is stored once, each writer's messages in the order it added them,
// and never more than MaxInFlight batches are open.
func TestAdmissionLetsManyWritersShareTheServerLimit(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 24})
	const writers, each = 200, 40
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if in, _ := adm.Stats(); in > peak.Load() {
				peak.Store(in)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			bw := sjs.NewBatchWriter(context.Background(), js, sjs.BatchWriterConfig{BatchSize: 10, Concurrency: 4, Admission: adm})
			for i := range each {
				if err := bw.Add(chunkMsg(fmt.Sprintf("w%03d-%03d", w, i))); err != nil {
					errs <- err
					return
				}
			}
			if err := bw.Close(); err != nil {
				errs <- fmt.Errorf("writer %d: %w", w, err)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ids := streamOrder(t, p.Chunks)
	if len(ids) != writers*each {
		t.Fatalf("stream holds %d messages, want %d", len(ids), writers*each)
	}
	next := map[string]int{}
	for _, id := range ids {
		var w, i int
		if _, err := fmt.Sscanf(id, "w%03d-%03d", &w, &i); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprint(w)
		if i != next[key] {
			t.Fatalf("writer %d: message %d stored where %d was due", w, i, next[key])
		}
		next[key]++
	}
	if got := peak.Load(); got > 24 {
		t.Fatalf("%d batches open at once, over MaxInFlight 24", got)
	}
	if in, q := adm.Stats(); in != 0 || q != 0 {
		t.Fatalf("after every writer closed: %d slots held, %d waiting", in, q)
	}
}

// Busy says when more batches wait than MaxQueued, so the API refuses new jobs instead of
// queueing them without bound; waiters are served in order of arrival; a waiter whose context
// ends leaves the queue; release is idempotent.
func TestAdmissionQueueAndBusy(t *testing.T) {
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 1, MaxQueued: 2})
	ctx := context.Background()
	first, err := adm.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			rel, err := adm.Acquire(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			rel()
		})
		// Each waiter is queued before the next starts.
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			if _, q := adm.Stats(); q == int64(i+1) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("waiter not queued")
			}
		}
	}
	if !adm.Busy() {
		t.Fatal("3 waiting with MaxQueued 2: Busy is false")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := adm.Acquire(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: %v", err)
	}
	first()
	first() // idempotent: gives back one slot, not two
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("waiter %d served as number %d: not in order of arrival", got, want)
		}
		want++
	}
	if adm.Busy() {
		t.Fatal("Busy after the queue emptied")
	}
	if in, q := adm.Stats(); in != 0 || q != 0 {
		t.Fatalf("%d held, %d waiting at the end", in, q)
	}
	var none *sjs.Admission
	rel, err := none.Acquire(ctx)
	if err != nil || none.Busy() {
		t.Fatal("a nil Admission must admit everything")
	}
	rel()
}

// A batch the server refuses because its open batches are at the limit (10210) is tried again
// with backoff instead of failing the job: here 50 batches of another publisher hold the
// limit for 300 ms, then commit.
func TestPublishAtomicWaitsOutTheServerBatchLimit(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	var open []jetstreamext.BatchPublisher
	for i := range sjs.ServerMaxAtomicInflight {
		bp, err := jetstreamext.NewBatchPublisher(js)
		if err != nil {
			t.Fatal(err)
		}
		if err := bp.AddMsg(chunkMsg(fmt.Sprintf("held%02d", i))); err != nil {
			t.Fatal(err)
		}
		open = append(open, bp)
	}
	probe, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if err := sjs.PublishAtomic(probe, js, []*nats.Msg{chunkMsg("probe")}); err == nil {
		// If the server let this one through, the test proves nothing.
		t.Fatal("the server took a batch over its limit: the test does not reach 10210")
	}
	committed := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		var errs []error
		for i, bp := range open {
			_, err := bp.CommitMsg(context.Background(), chunkMsg(fmt.Sprintf("held%02d-end", i)))
			errs = append(errs, err)
		}
		committed <- errors.Join(errs...)
	}()
	if err := sjs.PublishAtomic(context.Background(), js, []*nats.Msg{chunkMsg("c00000"), chunkMsg("c00001")}); err != nil {
		t.Fatalf("publish while the server's batch limit is full for 300 ms: %v", err)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	ids := streamOrder(t, p.Chunks)
	if n := len(ids); n != 2*sjs.ServerMaxAtomicInflight+2 {
		t.Fatalf("stream holds %d messages, want %d", n, 2*sjs.ServerMaxAtomicInflight+2)
	}
	found := 0
	for _, id := range ids {
		if id == "c00000" || id == "c00001" {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("the retried batch stored %d of its 2 messages: %v", found, ids)
	}
}

// Busy also turns true when the batches waiting would keep a newcomer longer than MaxWait, at
// the rate batches have recently held their slots: the API then refuses a job at once instead
// of holding its upload for many seconds.
func TestAdmissionBusyOnExpectedWait(t *testing.T) {
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 1, MaxQueued: 1000, MaxWait: 100 * time.Millisecond})
	ctx := context.Background()
	// One batch held 60 ms: the moving average starts there.
	rel, err := adm.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(60 * time.Millisecond)
	rel()
	hold, err := adm.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if r, err := adm.Acquire(cctx); err == nil {
				r()
			}
		})
	}
	for _, q := adm.Stats(); q < 3; _, q = adm.Stats() {
		time.Sleep(time.Millisecond)
	}
	// 3 waiting × ≈60 ms ÷ 1 slot ≈ 180 ms > 100 ms.
	if w := adm.ExpectedWait(); w < 150*time.Millisecond || !adm.Busy() {
		t.Fatalf("3 batches waiting on one slot held ≈60 ms: expected wait %s, Busy %v", w, adm.Busy())
	}
	cancel()
	wg.Wait()
	hold()
	if adm.Busy() || adm.ExpectedWait() != 0 {
		t.Fatalf("nothing waiting: Busy %v, expected wait %s", adm.Busy(), adm.ExpectedWait())
	}
}

// Issue 12: the broker's memory under a large backlog was its duplicate window (≈175 B per
// message id, 10 minutes). The chunk stream remembers ids for what publish retries need
// (2 minutes); the other streams keep 10.
func TestChunkStreamDuplicateWindow(t *testing.T) {
	_, p := setup(t, sjs.ProvisionConfig{})
	for _, tc := range []struct {
		s    jetstream.Stream
		want time.Duration
	}{{p.Chunks, 2 * time.Minute}, {p.Jobs, 10 * time.Minute}, {p.DLQ, 10 * time.Minute}} {
		info, err := tc.s.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Duplicates != tc.want {
			t.Errorf("%s: duplicate window %s, want %s", info.Config.Name, info.Config.Duplicates, tc.want)
		}
	}
}

// Issue 12: Busy looked at the batches waiting when a job started, but every job admitted at
// once had passed an empty queue; under 1,000 clients the accepted jobs then waited 3–17 s
// to publish. Admit bounds the jobs publishing at once by a limit that falls when batches take
// longer than BatchTarget and rises again when they are fast.
func TestAdmitAdaptsTheJobLimitToBatchLatency(t *testing.T) {
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 8, MinJobs: 2, MaxJobs: 16, BatchTarget: 20 * time.Millisecond})
	ctx := context.Background()
	if admitted, limit := adm.Jobs(); admitted != 0 || limit != 8 {
		t.Fatalf("starts with %d admitted, limit %d; want 0 and MaxInFlight (8)", admitted, limit)
	}
	// Up to the limit, then refused; done frees a place (once, however often it is called).
	var dones []func()
	for range 8 {
		done, ok := adm.Admit()
		if !ok {
			t.Fatalf("refused job %d of a limit of 8", len(dones)+1)
		}
		dones = append(dones, done)
	}
	if _, ok := adm.Admit(); ok {
		t.Fatal("admitted a 9th job over a limit of 8")
	}
	dones[0]()
	dones[0]()
	if admitted, _ := adm.Jobs(); admitted != 7 {
		t.Fatalf("%d admitted after one done (called twice); want 7", admitted)
	}
	for _, d := range dones[1:] {
		d()
	}
	// Slow batches cut the limit by a quarter each, at most once per target, to MinJobs.
	slow := func() {
		rel, err := adm.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(25 * time.Millisecond)
		rel()
	}
	slow()
	if _, limit := adm.Jobs(); limit != 6 {
		t.Fatalf("limit %d after one slow batch; want 6 (8 × 3/4)", limit)
	}
	for range 10 {
		slow()
	}
	if _, limit := adm.Jobs(); limit != 2 {
		t.Fatalf("limit %d after many slow batches; want MinJobs (2)", limit)
	}
	// Fast batches raise it again, by one per limit's worth of batches, up to MaxJobs.
	for range 400 {
		rel, err := adm.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if _, limit := adm.Jobs(); limit != 16 {
		t.Fatalf("limit %d after 400 fast batches; want MaxJobs (16)", limit)
	}
}

// A Busy scheduler admits no job, and a negative BatchTarget leaves the job count unbounded.
func TestAdmitRefusesWhenBusyAndCanBeUnbounded(t *testing.T) {
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 1, MaxQueued: 1, MaxWait: -1, BatchTarget: -1})
	for range 100 {
		if _, ok := adm.Admit(); !ok {
			t.Fatal("refused a job with the job limit disabled")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hold, err := adm.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			if r, err := adm.Acquire(ctx); err == nil {
				r()
			}
		})
	}
	for _, q := adm.Stats(); q < 2; _, q = adm.Stats() {
		time.Sleep(time.Millisecond)
	}
	if _, ok := adm.Admit(); ok {
		t.Fatal("admitted a job while 2 batches wait with MaxQueued 1")
	}
	cancel()
	wg.Wait()
	hold()
	var nilAdm *sjs.Admission
	if done, ok := nilAdm.Admit(); !ok {
		t.Fatal("a nil Admission refused a job")
	} else {
		done()
	}
}
