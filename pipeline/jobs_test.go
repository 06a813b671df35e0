package pipeline_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
)

func TestRollbackDeletesWhatTheJobWrote(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	ctx := context.Background()
	first, _ := e.load(t, writeChunks(t, t.TempDir(), 30, "rb_a_%04d"), false)
	e.load(t, writeChunks(t, t.TempDir(), 5, "rb_b_%04d"), false)
	if n := e.count(t); n != 35 {
		t.Fatalf("%d documents before rollback", n)
	}
	l := e.loader(t)
	job, err := l.Rollback(ctx, first.JobID, "operator")
	if err != nil || job.Rollback == nil || job.Rollback.State != "requested" || job.Rollback.RequestedBy != "operator" {
		t.Fatalf("rollback: %+v, %v", job.Rollback, err)
	}
	var final jobs.Job
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := e.jobs.Watch(wctx, first.JobID, func(j jobs.Job) bool { final = j; return j.State == jobs.JobRolledBack }); err != nil {
		t.Fatalf("rollback never finished: %+v %v", final.Rollback, err)
	}
	if final.Rollback.Deleted != 30 || final.Rollback.State != "done" {
		t.Fatalf("rollback = %+v", final.Rollback)
	}
	if n := e.count(t); n != 5 {
		t.Fatalf("%d documents after rollback, want the other job's 5", n)
	}
	if _, err := l.Rollback(ctx, "jnosuchjob", "x"); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("rollback of an unknown job: %v", err)
	}
}

func TestRollbackRefusedWhileRunning(t *testing.T) {
	e := newEnv(t, envOpts{})
	// No worker: the job stays pending.
	res, err := e.loader(t).Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 3, "rr_%04d")})
	if err != nil {
		t.Fatal(err)
	}
	// The open/seal events are not applied without a worker either: the job is unknown.
	if _, err := e.loader(t).Rollback(context.Background(), res.JobID, "x"); !errors.Is(err, jobs.ErrJobNotFound) && !errors.Is(err, intake.ErrJobRunning) {
		t.Fatalf("rollback of a job still loading: %v", err)
	}
}

func TestListJobsAndIdempotencyKey(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	ctx := context.Background()
	var ids []string
	for _, f := range []string{"passA_chunks.json", "passB_enriched.json", "job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl"} {
		res, _ := e.load(t, filepath.Join(fixtures, f), false)
		ids = append(ids, res.JobID)
		time.Sleep(2 * time.Millisecond) // distinct creation times
	}
	var got []string
	cursor := ""
	for {
		page, next, err := e.jobs.List(ctx, jobs.Filter{State: jobs.JobCompleted, Env: "dev"}, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range page {
			got = append(got, j.JobID)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if len(got) != 3 || got[0] != ids[2] || got[2] != ids[0] {
		t.Fatalf("listed %v, want newest first %v", got, []string{ids[2], ids[1], ids[0]})
	}
	if page, _, _ := e.jobs.List(ctx, jobs.Filter{State: jobs.JobRunning}, "", 10); len(page) != 0 {
		t.Fatalf("running filter matched %d jobs", len(page))
	}
	if _, _, err := e.jobs.List(ctx, jobs.Filter{}, "garbage!", 10); !errors.Is(err, jobs.ErrBadCursor) {
		t.Fatalf("bad cursor: %v", err)
	}

	// The same key returns the first job, even for different content, and publishes nothing.
	l := e.loader(t)
	a, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 4, "idem_%04d"), IdempotencyKey: "upload-42"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 9, "other_%04d"), IdempotencyKey: "upload-42"})
	if err != nil {
		t.Fatal(err)
	}
	if b.JobID != a.JobID || !b.Existing {
		t.Fatalf("second request with the key: %+v, want job %s existing", b, a.JobID)
	}
	if _, err := jobs.Wait(ctx, e.jobs, a.JobID, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetDoc(ctx, "ttrpg_chunks_dev", "other_0000"); err == nil {
		t.Fatal("the second request's content was published")
	}
}
