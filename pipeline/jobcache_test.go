package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
)

// countingKV is the real jobs bucket, counting the reads that reach the broker.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.gets.Add(1)
	return k.KeyValue.Get(ctx, key)
}

// cachedStore returns a test broker and a job store over its bucket (reads counted) whose
// cache runs until the test ends or stop is called.
func cachedStore(t *testing.T) (e *testEnv, store *jobs.Store, kv *countingKV, stop func()) {
	t.Helper()
	e = newEnv(t, envOpts{})
	kv = &countingKV{KeyValue: e.streams.JobsKV}
	store = jobs.NewStore(kv)
	return e, store, kv, startCache(t, store, kv)
}

// startCache runs store's cache until the test ends or the returned stop is called, and
// waits until it serves: a job it wrote is read without a broker read.
func startCache(t *testing.T, store *jobs.Store, kv *countingKV) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- store.RunCache(ctx, jobs.CacheConfig{}, nil) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunCache: %v", err)
		}
	}
	t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	probe := "jcacheprobe0000000000001"
	waitFor(t, "the job cache to serve", func() bool {
		if _, err := store.Open(context.Background(), schemas.JobOpen{JobID: probe, Env: "dev", CreatedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
		before := kv.gets.Load()
		_, err := store.Get(context.Background(), probe)
		return err == nil && kv.gets.Load() == before
	})
	return stop
}

// Issue 12: GET /v1/jobs/{id} waited behind the jobs bucket's synced writes (p99 0.3 s under
// 1,000 clients). With the cache running, reads cost no broker round trip, a submitter reads
// its own write at once, and a change made by another process (the worker's progress) is
// seen within moments through the watch.
func TestJobCacheServesReadsAndSeesOtherWriters(t *testing.T) {
	e, api, kv, _ := cachedStore(t)
	ctx := context.Background()

	const id = "jcache000000000000000001"
	if _, err := api.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", File: "a.jsonl", CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	before := kv.gets.Load()
	for range 100 {
		j, err := api.Get(ctx, id)
		if err != nil || j.File != "a.jsonl" {
			t.Fatalf("get: %+v, %v", j, err)
		}
	}
	if n := kv.gets.Load() - before; n != 0 {
		t.Fatalf("100 reads of a cached job reached the broker %d times; want 0", n)
	}

	// Another process seals it with issues and records progress.
	nc := embeddedtest.Connect(t, e.srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	otherKV, err := js.KeyValue(ctx, e.streams.JobsKV.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	worker := jobs.NewStore(otherKV)
	seal := schemas.JobSeal{JobID: id, Env: "dev", Total: 3, Published: 2, Rejected: 1, SealedAt: time.Now().UTC(),
		Rejections: []schemas.ItemIssue{{Index: 2, ID: "c3", Reason: "empty content"}}}
	if _, err := worker.Seal(ctx, seal); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.Mark(ctx, id, jobs.Mark{Job: id, Item: 0, Outcome: jobs.Written}, jobs.Mark{Job: id, Item: 1, Outcome: jobs.Written}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the other writer's changes", func() bool {
		j, err := api.Get(ctx, id)
		return err == nil && j.State == jobs.JobCompletedWithErrors && j.Written == 2 && len(j.Rejections) == 1
	})

	// A key deleted elsewhere reads as missing.
	if err := otherKV.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deletion", func() bool {
		_, err := api.Get(ctx, id)
		return errors.Is(err, jobs.ErrJobNotFound)
	})
}

// A compare-and-set that lost to another writer reads the broker again instead of the cached
// revision, so a change never spins on a stale entry, and no update is lost.
func TestJobCacheConcurrentWritersLoseNothing(t *testing.T) {
	e, a, _, _ := cachedStore(t)
	ctx := context.Background()
	b := e.jobs // the same bucket without a cache, like a worker process
	const id, n = "jcache000000000000000002", 200
	if _, err := a.Seal(ctx, schemas.JobSeal{JobID: id, Env: "dev", Total: n, Published: n, SealedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for w, store := range []*jobs.Store{a, b} {
		go func() {
			for i := w; i < n; i += 2 {
				if _, err := store.Mark(ctx, id, jobs.Mark{Job: id, Item: int64(i), Outcome: jobs.Written}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every mark", func() bool {
		j, err := a.Get(ctx, id)
		return err == nil && j.Written == n && j.State == jobs.JobCompleted
	})
	j, err := b.Get(ctx, id)
	if err != nil || j.Written != n {
		t.Fatalf("the bucket holds %+v, %v; want %d written", j, err, n)
	}
}

// Once the cache stops, every read goes to the broker again and sees changes at once.
func TestJobCacheStoppedReadsTheBroker(t *testing.T) {
	e, api, kv, stop := cachedStore(t)
	ctx := context.Background()
	const id = "jcache000000000000000003"
	if _, err := api.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", File: "a.jsonl", CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	stop()
	before := kv.gets.Load()
	if _, err := e.jobs.Seal(ctx, schemas.JobSeal{JobID: id, Env: "dev", SealedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	j, err := api.Get(ctx, id)
	if err != nil || !j.Sealed {
		t.Fatalf("read after the cache stopped: %+v, %v; want the seal seen at once", j, err)
	}
	if kv.gets.Load() == before {
		t.Fatal("the read did not reach the broker")
	}
	if err := api.RunCache(canceled(), jobs.CacheConfig{}, nil); err != nil {
		t.Fatalf("RunCache with an ended context: %v", err)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// bucketWrites returns how many writes the jobs bucket's stream has taken.
func bucketWrites(t *testing.T, e *testEnv) uint64 {
	t.Helper()
	st, err := e.js.Stream(context.Background(), "KV_"+e.streams.JobsKV.Bucket())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// Issue 12: every write of the jobs bucket is a synced write of the one stream all jobs
// share, and under 1,000 clients job submissions queued behind them (the loader's open and
// seal, then the worker applying the same open and seal events again, each rewriting the
// record and its issues). An event the record already reflects writes nothing, and Resume
// is one write.
func TestJobEventsAlreadyAppliedWriteNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	const id = "jwrites00000000000000001"
	open := schemas.JobOpen{JobID: id, Env: "dev", File: "a.jsonl", Format: "jsonl", CreatedAt: time.Now().UTC()}
	seal := schemas.JobSeal{JobID: id, Env: "dev", Total: 3, Published: 2, Rejected: 1, SealedAt: time.Now().UTC(),
		Rejections: []schemas.ItemIssue{{Index: 2, ID: "c3", Reason: "empty content"}}}
	for _, step := range []struct {
		name   string
		do     func() error
		writes uint64
	}{
		{"resume a new job", func() error { _, err := e.jobs.Resume(ctx, open); return err }, 1},
		{"open it again", func() error { _, err := e.jobs.Open(ctx, open); return err }, 0},
		{"resume it again", func() error { _, err := e.jobs.Resume(ctx, open); return err }, 0},
		{"fail it", func() error { _, err := e.jobs.Fail(ctx, id, "publisher stopped"); return err }, 1},
		{"fail it again", func() error { _, err := e.jobs.Fail(ctx, id, "again"); return err }, 0},
		{"resume the failed job", func() error { _, err := e.jobs.Resume(ctx, open); return err }, 1},
		{"seal it (issues and record)", func() error { _, err := e.jobs.Seal(ctx, seal); return err }, 2},
		{"seal it again", func() error { _, err := e.jobs.Seal(ctx, seal); return err }, 0},
		{"open it after the seal", func() error { _, err := e.jobs.Open(ctx, open); return err }, 0},
	} {
		before := bucketWrites(t, e)
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if got := bucketWrites(t, e) - before; got != step.writes {
			t.Fatalf("%s: %d writes, want %d", step.name, got, step.writes)
		}
	}
	// Sealing reads the record once, whether or not it then writes (no cache here).
	kv := &countingKV{KeyValue: e.streams.JobsKV}
	counted := jobs.NewStore(kv)
	if _, err := counted.Seal(ctx, seal); err != nil {
		t.Fatal(err)
	}
	if n := kv.gets.Load(); n != 1 {
		t.Fatalf("a seal already applied read the broker %d times, want 1", n)
	}
	const id2 = "jwrites00000000000000002"
	if _, err := counted.Resume(ctx, schemas.JobOpen{JobID: id2, Env: "dev", CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	before := kv.gets.Load()
	if _, err := counted.Seal(ctx, schemas.JobSeal{JobID: id2, Env: "dev", Total: 1, Published: 1, SealedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if n := kv.gets.Load() - before; n != 1 {
		t.Fatalf("a new seal read the broker %d times, want 1", n)
	}
	j, err := e.jobs.Get(ctx, id)
	if err != nil || !j.Sealed || j.Failure != nil || j.File != "a.jsonl" || len(j.Rejections) != 1 || j.Total != 3 {
		t.Fatalf("job %+v, %v; want it sealed, not failed, with its file and one rejection", j, err)
	}
	// A different seal (a resubmission that read more of the file) is still applied.
	seal2 := seal
	seal2.Total, seal2.Published = 4, 3
	writesBefore := bucketWrites(t, e)
	if _, err := e.jobs.Seal(ctx, seal2); err != nil {
		t.Fatal(err)
	}
	if got := bucketWrites(t, e) - writesBefore; got != 2 {
		t.Fatalf("a changed seal: %d writes, want 2 (issues and record)", got)
	}
	if j, _ := e.jobs.Get(ctx, id); j.Total != 4 {
		t.Fatalf("total %d after the changed seal, want 4", j.Total)
	}
}

// In one process (sluice serve) the loader, the worker and the API share one cached store:
// jobs complete exactly — every chunk written once, counted once — while progress writes read
// their record from memory and lose their compare-and-set to nobody for long.
func TestJobCacheSharedByLoaderAndWorker(t *testing.T) {
	e, shared, _, _ := cachedStore(t)
	ctx := context.Background()
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Jobs = shared })
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: shared, SpoolDir: t.TempDir(), Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ids := make([]string, 6)
	for i := range ids {
		res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, dir, 150+i, fmt.Sprintf("shared%d_%%03d", i))})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = res.JobID
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for i, id := range ids {
		j, err := jobs.Wait(wctx, shared, id, nil)
		if err != nil || j.State != jobs.JobCompleted || j.Written != int64(150+i) {
			t.Fatalf("job %d: %+v, %v; want completed with %d written", i, j, err, 150+i)
		}
		// What the bucket holds, read past the cache, agrees.
		if fresh, err := e.jobs.Get(ctx, id); err != nil || fresh.Written != j.Written || fresh.State != j.State {
			t.Fatalf("job %d in the bucket: %+v, %v", i, fresh, err)
		}
	}
}
