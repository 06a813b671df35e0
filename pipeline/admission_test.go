package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Issue 12: a job whose publishing failed after it was opened stayed pending for ever with
// total 0 (532–564 of 1,000 jobs under 1,000 concurrent clients). Now the loader records the
// failure with its reason; the same content submitted again resumes the job and completes it.
func TestLoadThatFailsAfterOpeningFailsTheJob(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	dir := t.TempDir()
	// A JSON array cut off after two items: the job opens, two chunks publish, then the
	// reader fails.
	cut := filepath.Join(dir, "cut.json")
	if err := os.WriteFile(cut, []byte(`{"chunks": [{"chunk_id": "a1", "content": "one"}, {"chunk_id": "a2", "content": "two"}, {"chunk_id": "a3", "cont`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: cut})
	if !errors.Is(err, intake.ErrBadInput) {
		t.Fatalf("load of a cut file: %v, want a bad-input error", err)
	}
	job, err := e.jobs.Get(ctx, res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if job.State != jobs.JobFailed || job.Failure == nil || !strings.Contains(job.Failure.Reason, "publishing stopped") || !job.State.Done() {
		t.Fatalf("job after a failed publish = %s %+v, want failed with its reason", job.State, job.Failure)
	}
	// A late open event (the workers apply it after the failure) does not revive it.
	if _, err := e.jobs.Open(ctx, schemas.JobOpen{JobID: res.JobID, Env: "dev"}); err != nil {
		t.Fatal(err)
	}
	if j, _ := e.jobs.Get(ctx, res.JobID); j.State != jobs.JobFailed {
		t.Fatalf("an open event revived the failed job: %s", j.State)
	}
	// The whole file, with the same content up to the cut, is another job; the cut file
	// itself again is the same job, resumed, and fails again the same way.
	res2, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: cut})
	if !errors.Is(err, intake.ErrBadInput) || res2.JobID != res.JobID {
		t.Fatalf("resubmitted cut file: job %s, %v", res2.JobID, err)
	}
	// A job failed by its publisher is resumed by the same content and completes.
	good := writeChunks(t, dir, 50, "resume_%03d")
	l := e.loader(t)
	first, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: good})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jobs.Wait(ctx, e.jobs, first.JobID, nil); err != nil {
		t.Fatal(err)
	}
}

// A job failed by the reaper (its publisher vanished) is resumed by submitting the same file:
// Resume clears the failure, the seal completes it.
func TestFailedJobResumesOnResubmission(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	ctx := context.Background()
	path := writeChunks(t, t.TempDir(), 30, "again_%03d")
	res, job := e.load(t, path, false)
	if job.State != jobs.JobCompleted {
		t.Fatalf("first load: %+v", job)
	}
	// Sealed jobs cannot fail.
	if j, err := e.jobs.Fail(ctx, res.JobID, "late"); err != nil || j.State != jobs.JobCompleted || j.Failure != nil {
		t.Fatalf("Fail on a sealed job: %+v, %v", j, err)
	}
	// An unsealed job (a publisher that died after the open) fails, then resumes.
	open := schemas.JobOpen{JobID: "jorphan000000000000000001", Env: "dev", File: "x.jsonl", CreatedAt: time.Now().UTC()}
	if _, err := e.jobs.Open(ctx, open); err != nil {
		t.Fatal(err)
	}
	j, err := e.jobs.Fail(ctx, open.JobID, "publisher gone")
	if err != nil || j.State != jobs.JobFailed {
		t.Fatalf("Fail: %+v, %v", j, err)
	}
	if j, err = e.jobs.Resume(ctx, open); err != nil || j.State != jobs.JobPending || j.Failure != nil {
		t.Fatalf("Resume: %+v, %v", j, err)
	}
}

// The reaper fails unsealed jobs with no update for its timeout, and only those: a sealed job,
// a fresh one and one already failed are left as they are.
func TestReaperFailsOnlyAbandonedJobs(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	mk := func(id string) {
		if _, err := e.jobs.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", CreatedAt: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	mk("jstale00000000000000000001")
	mk("jsealed0000000000000000001")
	if _, err := e.jobs.Seal(ctx, schemas.JobSeal{JobID: "jsealed0000000000000000001", Env: "dev", SealedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	mk("jfailed0000000000000000001")
	if _, err := e.jobs.Fail(ctx, "jfailed0000000000000000001", "first reason"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	mk("jfresh00000000000000000001")
	reaped, err := e.jobs.Reap(ctx, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(reaped) != 1 || reaped[0] != "jstale00000000000000000001" {
		t.Fatalf("reaped %v, want only the stale job", reaped)
	}
	for id, want := range map[string]jobs.State{
		"jstale00000000000000000001": jobs.JobFailed, "jsealed0000000000000000001": jobs.JobCompleted,
		"jfailed0000000000000000001": jobs.JobFailed, "jfresh00000000000000000001": jobs.JobPending,
	} {
		j, err := e.jobs.Get(ctx, id)
		if err != nil || j.State != want {
			t.Errorf("%s: %s (%v), want %s", id, j.State, err, want)
		}
		if id == "jfailed0000000000000000001" && j.Failure.Reason != "first reason" {
			t.Errorf("the reaper replaced a failure's reason: %q", j.Failure.Reason)
		}
	}
	// RunJobReaper stops with its context.
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := jobs.RunJobReaper(rctx, e.jobs, jobs.ReaperConfig{After: time.Hour, Every: 10 * time.Millisecond}, nil); err != nil {
		t.Fatal(err)
	}
}

// With a shared Admission, a burst of concurrent loads never fails on the server's batch limit:
// each job is either completed or refused with ErrBusy before it was opened (no job left
// behind); here the queue is generous, so every one completes.
func TestConcurrentLoadsShareAdmission(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 16, MaxWait: -1, BatchTarget: -1}) // every load admitted: this tests sharing, not refusal
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: t.TempDir(),
		Batch: sjs.BatchWriterConfig{BatchSize: 10, Admission: adm}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const loads = 120
	var wg sync.WaitGroup
	ids := make([]string, loads)
	errs := make([]error, loads)
	for i := range loads {
		path := writeChunks(t, filepath.Join(dir), 40+i, fmt.Sprintf("burst%03d_%%03d", i))
		wg.Go(func() {
			res, err := l.Load(context.Background(), intake.LoadRequest{Env: "dev", Path: path})
			ids[i], errs[i] = res.JobID, err
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		job, err := jobs.Wait(ctx, e.jobs, ids[i], nil)
		if err != nil || job.State != jobs.JobCompleted || job.Written != int64(40+i) {
			t.Fatalf("load %d: job %+v, %v", i, job, err)
		}
	}
}

// A full admission queue refuses a new job with ErrBusy before anything exists: no job record,
// no message.
func TestBusyAdmissionRefusesBeforeOpening(t *testing.T) {
	e := newEnv(t, envOpts{})
	adm := sjs.NewAdmission(sjs.AdmissionConfig{MaxInFlight: 1, MaxQueued: 1})
	hold, err := adm.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	// Two waiters fill the queue past MaxQueued 1.
	for range 2 {
		go func() {
			if rel, err := adm.Acquire(ctx); err == nil {
				rel()
			}
		}()
	}
	for _, q := adm.Stats(); q < 2; _, q = adm.Stats() {
		time.Sleep(time.Millisecond)
	}
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: t.TempDir(), Batch: sjs.BatchWriterConfig{Admission: adm}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 5, "busy_%02d")})
	if !errors.Is(err, intake.ErrBusy) {
		t.Fatalf("load with a full queue: %v, want ErrBusy", err)
	}
	if _, err := e.jobs.Get(context.Background(), res.JobID); !errors.Is(err, jobs.ErrJobNotFound) {
		t.Fatalf("a refused load left a job behind: %v", err)
	}
	if info, err := e.streams.Chunks.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("a refused load published messages: %+v, %v", info.State, err)
	}
	cancel()
	hold()
}
