package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/document"
)

var (
	_ pipeline.JobRollbacker = (*docstore.Store)(nil)
	_ pipeline.JobRollbacker = (*astra.Sink)(nil)

	passA = filepath.Join(fixtures, "passA_chunks.json")
	passB = filepath.Join(fixtures, "passB_enriched.json")
)

// rollback rolls job id back and waits for the workers to finish it.
func (e *testEnv) rollback(t *testing.T, id string, opts intake.RollbackOptions) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.loader(t).RollbackWith(ctx, id, "operator", opts); err != nil {
		t.Fatalf("rollback %s: %v", id, err)
	}
	return e.settled(t, id)
}

// settled waits for job id to be settled (done loading, no rollback pending).
func (e *testEnv) settled(t *testing.T, id string) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var final jobs.Job
	if err := e.jobs.Watch(ctx, id, func(j jobs.Job) bool { final = j; return j.Settled() }); err != nil {
		t.Fatalf("job %s never settled: %+v %v", id, final, err)
	}
	return final
}

func (e *testEnv) getJob(t *testing.T, id string) jobs.Job {
	t.Helper()
	j, err := e.jobs.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// writersOf returns, per job, how many of the stored documents it wrote last.
func writersOf(t *testing.T, docs map[string]json.RawMessage) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, raw := range docs {
		var d struct {
			Job string `json:"sluice_job"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		out[d.Job]++
	}
	return out
}

// storedDocs reads every document of the dev collection of the embedded store.
func (e *testEnv) storedDocs(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	ctx := context.Background()
	out := map[string]json.RawMessage{}
	ids, err := e.store.ListIDs(ctx, "ttrpg_chunks_dev", "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		raw, err := e.store.GetDoc(ctx, "ttrpg_chunks_dev", id)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = raw
	}
	return out
}

// Issue 13, finding 2: passA_chunks.json then passB_enriched.json (the same 20 chunk ids);
// rolling back B deleted the 20 documents while A still said "completed … 20 written";
// loading A again answered "already loaded" and the chunks stayed 404, and loading B again
// answered rolled_back "already loaded" and loaded nothing.
func TestRollbackSupersedesAndReloads(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	_, a := e.load(t, passA, false)
	_, b := e.load(t, passB, false)
	if a.Written != 20 || b.Written != 20 || e.count(t) != 20 {
		t.Fatalf("A %+v, B %+v, %d documents", a, b, e.count(t))
	}

	rb := e.rollback(t, b.JobID, intake.RollbackOptions{})
	if rb.State != jobs.JobRolledBack || rb.Rollback.Deleted != 20 ||
		len(rb.Rollback.SupersededJobs) != 1 || rb.Rollback.SupersededJobs[0] != (jobs.SupersededJob{JobID: a.JobID, Documents: 20}) {
		t.Fatalf("B after its rollback: %s %+v", rb.State, rb.Rollback)
	}
	a = e.getJob(t, a.JobID)
	if a.State != jobs.JobSuperseded || a.Superseded == nil || a.Superseded.Documents != 20 ||
		len(a.Superseded.By) != 1 || a.Superseded.By[0].JobID != b.JobID {
		t.Fatalf("A after B's rollback: %s %+v", a.State, a.Superseded)
	}
	if n := e.count(t); n != 0 {
		t.Fatalf("%d documents after the rollback", n)
	}
	// A superseded job is listed under its state.
	if jobs, _, err := e.jobs.List(context.Background(), jobs.Filter{State: jobs.JobSuperseded}, "", 10); err != nil || len(jobs) != 1 || jobs[0].JobID != a.JobID {
		t.Fatalf("superseded jobs: %v %v", jobs, err)
	}

	// Loading A again, plainly, loads it: its 20 chunks are back and readable.
	res, a2 := e.load(t, passA, false)
	if res.Existing || res.JobID != a.JobID || a2.State != jobs.JobCompleted || a2.Written != 20 || a2.Generation != 1 ||
		a2.ReopenedFrom != jobs.JobSuperseded || a2.Superseded != nil {
		t.Fatalf("A loaded again: %+v / %+v", res, a2)
	}
	if w := writersOf(t, e.storedDocs(t)); w[a.JobID] != 20 || len(w) != 1 {
		t.Fatalf("after loading A again the store holds %v", w)
	}
	// Exactly once: a second plain submission is "already loaded" and publishes nothing.
	res, a3 := e.load(t, passA, false)
	if !res.Existing || a3.State != jobs.JobCompleted || a3.Written != 20 || a3.Generation != 1 {
		t.Fatalf("A submitted a third time: %+v / %+v", res, a3)
	}

	// B, rolled back, loads again on a plain submission too.
	res, b2 := e.load(t, passB, false)
	if res.Existing || b2.State != jobs.JobCompleted || b2.Written != 20 || b2.Rollback != nil || b2.Generation != 1 {
		t.Fatalf("B loaded again: %+v / %+v", res, b2)
	}
	if w := writersOf(t, e.storedDocs(t)); w[b.JobID] != 20 {
		t.Fatalf("after loading B again the store holds %v", w)
	}
	// And B's second generation rolls back like the first, superseding A's second load.
	rb = e.rollback(t, b.JobID, intake.RollbackOptions{})
	if rb.Rollback.Deleted != 20 || len(rb.Rollback.SupersededJobs) != 1 || rb.Rollback.SupersededJobs[0].Documents != 20 {
		t.Fatalf("B's second rollback: %+v", rb.Rollback)
	}
	if a = e.getJob(t, a.JobID); a.State != jobs.JobSuperseded || a.Superseded.Documents != 20 {
		t.Fatalf("A after B's second rollback: %s %+v", a.State, a.Superseded)
	}
}

// A rollback of a job that rewrote nobody's documents names no job.
func TestRollbackSupersedesNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	_, a := e.load(t, passA, false)
	_, other := e.load(t, writeChunks(t, t.TempDir(), 5, "other_%04d"), false)
	rb := e.rollback(t, a.JobID, intake.RollbackOptions{})
	if rb.State != jobs.JobRolledBack || rb.Rollback.Deleted != 20 || rb.Rollback.SupersededJobs != nil {
		t.Fatalf("rollback: %+v", rb.Rollback)
	}
	if o := e.getJob(t, other.JobID); o.State != jobs.JobCompleted || o.Superseded != nil {
		t.Fatalf("the other job: %+v", o)
	}
}

// Two earlier jobs wrote B's ids: both are named and marked.
func TestRollbackSupersedesTwoEarlierJobs(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	_, a1 := e.load(t, passA, false)
	_, a2 := e.load(t, passA, true) // the same content as a new job
	_, b := e.load(t, passB, false)
	rb := e.rollback(t, b.JobID, intake.RollbackOptions{})
	got := map[string]int64{}
	for _, s := range rb.Rollback.SupersededJobs {
		got[s.JobID] = s.Documents
	}
	if len(got) != 2 || got[a1.JobID] != 20 || got[a2.JobID] != 20 {
		t.Fatalf("superseded %v, want both earlier jobs with 20", got)
	}
	for _, id := range []string{a1.JobID, a2.JobID} {
		if j := e.getJob(t, id); j.State != jobs.JobSuperseded || j.Superseded.Documents != 20 {
			t.Fatalf("%s: %s %+v", id, j.State, j.Superseded)
		}
	}
}

// With RestorePrevious the embedded store puts back A's versions: nothing is missing and A
// is not superseded.
func TestRollbackRestoresPrevious(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	_, a := e.load(t, passA, false)
	before := e.storedDocs(t)
	_, b := e.load(t, passB, false)
	rb := e.rollback(t, b.JobID, intake.RollbackOptions{RestorePrevious: true})
	if rb.State != jobs.JobRolledBack || rb.Rollback.Restored != 20 || rb.Rollback.Deleted != 0 ||
		!rb.Rollback.RestorePrevious || rb.Rollback.SupersededJobs != nil {
		t.Fatalf("rollback: %+v", rb.Rollback)
	}
	after := e.storedDocs(t)
	if len(after) != 20 {
		t.Fatalf("%d documents after restoring", len(after))
	}
	for id, raw := range before {
		if string(after[id]) != string(raw) {
			t.Fatalf("%s after restoring: %s, want A's %s", id, after[id], raw)
		}
	}
	if a = e.getJob(t, a.JobID); a.State != jobs.JobCompleted {
		t.Fatalf("A after a restoring rollback: %s", a.State)
	}
	// Restoring a previous version that was itself rolled back: A is rolled back (it wrote
	// nothing last), then B, loaded again, is rolled back restoring: nothing of A comes back.
	if j := e.rollback(t, a.JobID, intake.RollbackOptions{}); j.Rollback.Deleted != 20 {
		t.Fatalf("A's rollback: %+v", j.Rollback)
	}
	e.load(t, passA, false) // A again (generation 1)
	e.load(t, passB, false) // B again, over A
	if j := e.rollback(t, a.JobID, intake.RollbackOptions{}); j.Rollback.Deleted != 0 {
		t.Fatalf("A's second rollback deleted %d of B's documents", j.Rollback.Deleted)
	}
	rb = e.rollback(t, b.JobID, intake.RollbackOptions{RestorePrevious: true})
	if rb.Rollback.Restored != 0 || rb.Rollback.Deleted != 20 || e.count(t) != 0 {
		t.Fatalf("restore over a rolled-back version: %+v, %d documents", rb.Rollback, e.count(t))
	}
}

// A rollback requested while another job loads the same ids: the other job's documents all
// stay, whichever write the store orders first.
func TestRollbackWhileAnotherLoadOfTheSameIDs(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	_, b := e.load(t, passB, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: passA})
	if err != nil {
		t.Fatal(err)
	}
	rb := e.rollback(t, b.JobID, intake.RollbackOptions{})
	c, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Written != 20 {
		t.Fatalf("the concurrent load: %+v", c)
	}
	if w := writersOf(t, e.storedDocs(t)); w[res.JobID] != 20 || len(w) != 1 {
		t.Fatalf("store holds %v after the rollback of %s (deleted %d), want the concurrent job's 20", w, b.JobID, rb.Rollback.Deleted)
	}
}

// A submission of a job whose rollback is still pending is refused (retry later), and once
// the rollback is done the file loads again.
func TestResubmitDuringPendingRollback(t *testing.T) {
	e := newEnv(t, envOpts{})
	stop := e.startWorker(t, e.store, nil)
	_, a := e.load(t, passA, false)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.loader(t).Rollback(ctx, a.JobID, "operator"); err != nil {
		t.Fatal(err)
	}
	_, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: passA})
	if !errors.Is(err, intake.ErrBusy) {
		t.Fatalf("load during a pending rollback: %v, want ErrBusy", err)
	}
	e.startWorker(t, e.store, nil)
	if j := e.settled(t, a.JobID); j.State != jobs.JobRolledBack || j.Rollback.Deleted != 20 {
		t.Fatalf("rollback: %s %+v", j.State, j.Rollback)
	}
	if res, j := e.load(t, passA, false); res.Existing || j.Written != 20 || e.count(t) != 20 {
		t.Fatalf("load after the rollback: %+v %+v", res, j)
	}
}

// A job loaded again is a job loading like any other: it cannot be rolled back until it is
// done (ErrJobRunning), as its first load could not.
func TestReopenedJobStillLoadingRefusesRollback(t *testing.T) {
	e := newEnv(t, envOpts{})
	stop := e.startWorker(t, e.store, nil)
	_, a := e.load(t, passA, false)
	e.rollback(t, a.JobID, intake.RollbackOptions{})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: passA})
	if err != nil || res.Existing {
		t.Fatalf("load again: %+v %v", res, err)
	}
	if _, err := e.loader(t).Rollback(ctx, a.JobID, "x"); !errors.Is(err, intake.ErrJobRunning) {
		t.Fatalf("rollback of the reopened job while it loads: %v, want ErrJobRunning", err)
	}
	e.startWorker(t, e.store, nil)
	if j := e.settled(t, a.JobID); j.State != jobs.JobCompleted || j.Written != 20 || j.Generation != 1 {
		t.Fatalf("reopened job: %+v", j)
	}
}

// The finding on AstraDB (the Data API double): B's rollback names A, A is superseded, and
// both files load again plainly. Restoring is refused: AstraDB keeps no previous version.
func TestAstraRollbackSupersedesAndReloads(t *testing.T) {
	e := newEnv(t, envOpts{})
	srv, sink, _ := astraSink(t, nil)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
	_, a := e.load(t, passA, false)
	_, b := e.load(t, passB, false)

	// Asked of a worker on AstraDB, a restoring rollback fails with the reason and deletes
	// nothing; asked again without restoring, it deletes.
	rb := e.rollback(t, b.JobID, intake.RollbackOptions{RestorePrevious: true})
	if rb.Rollback.State != "failed" || !strings.Contains(rb.Rollback.Error, "keeps no previous version") || rb.State != jobs.JobCompleted {
		t.Fatalf("restoring rollback on AstraDB: %s %+v", rb.State, rb.Rollback)
	}
	if n := len(srv.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 20 {
		t.Fatalf("%d documents after a refused restore", n)
	}
	// A loader told that the store keeps no previous versions refuses at once.
	l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, Key: testKey(t), NoPreviousVersions: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.RollbackWith(context.Background(), b.JobID, "x", intake.RollbackOptions{RestorePrevious: true}); !errors.Is(err, intake.ErrRestoreUnsupported) {
		t.Fatalf("restore on a loader without previous versions: %v", err)
	}

	rb = e.rollback(t, b.JobID, intake.RollbackOptions{})
	if rb.State != jobs.JobRolledBack || rb.Rollback.Deleted != 20 ||
		len(rb.Rollback.SupersededJobs) != 1 || rb.Rollback.SupersededJobs[0] != (jobs.SupersededJob{JobID: a.JobID, Documents: 20}) {
		t.Fatalf("B after its rollback: %s %+v", rb.State, rb.Rollback)
	}
	if a = e.getJob(t, a.JobID); a.State != jobs.JobSuperseded || a.Superseded.Documents != 20 {
		t.Fatalf("A: %s %+v", a.State, a.Superseded)
	}
	if n := len(srv.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 0 {
		t.Fatalf("%d documents after the rollback", n)
	}
	res, a2 := e.load(t, passA, false)
	if res.Existing || a2.State != jobs.JobCompleted || a2.Written != 20 {
		t.Fatalf("A loaded again: %+v %+v", res, a2)
	}
	if w := writersOf(t, srv.Documents("default_keyspace", "ttrpg_chunks_dev")); w[a.JobID] != 20 {
		t.Fatalf("after loading A again AstraDB holds %v", w)
	}
	res, b2 := e.load(t, passB, false)
	if res.Existing || b2.State != jobs.JobCompleted || b2.Written != 20 {
		t.Fatalf("B loaded again: %+v %+v", res, b2)
	}
	if w := writersOf(t, srv.Documents("default_keyspace", "ttrpg_chunks_dev")); w[b.JobID] != 20 {
		t.Fatalf("after loading B again AstraDB holds %v", w)
	}
	if st := srv.Stats(); len(st.Violations) != 0 {
		t.Fatalf("protocol violations: %v", st.Violations)
	}
}

// A successful rollback logged err=<nil> (issue 16): its line now names the job and what was
// deleted, and no error; a refused one (a store that cannot delete by job) logs at warn with
// its reason.
func TestRollbackLogsNoNilError(t *testing.T) {
	e := newEnv(t, envOpts{})
	var buf lockedBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	e.startWorker(t, e.store, func(c *pipeline.WorkerConfig) { c.Logger = log })
	_, a := e.load(t, passA, false)
	if rb := e.rollback(t, a.JobID, intake.RollbackOptions{}); rb.State != jobs.JobRolledBack {
		t.Fatalf("rollback: %s %+v", rb.State, rb.Rollback)
	}
	var found bool
	for line := range strings.Lines(buf.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if rec["msg"] != "rolled back job" {
			continue
		}
		found = true
		if _, ok := rec["err"]; ok || rec["job_id"] != a.JobID || rec["deleted"] != float64(20) || rec["level"] != "INFO" {
			t.Fatalf("the rollback's log line: %s", line)
		}
	}
	if !found {
		t.Fatalf("no \"rolled back job\" line:\n%s", buf.String())
	}

	// Refused: a store that can neither roll back nor delete by job.
	e = newEnv(t, envOpts{})
	var refused lockedBuffer
	e.startWorker(t, plainSink{e.store}, func(c *pipeline.WorkerConfig) { c.Logger = slog.New(slog.NewJSONHandler(&refused, nil)) })
	_, a = e.load(t, passA, false)
	e.rollback(t, a.JobID, intake.RollbackOptions{})
	found = false
	for line := range strings.Lines(refused.String()) {
		if strings.Contains(line, `"msg":"rolled back job"`) {
			t.Fatalf("a refused rollback logged as done: %s", line)
		}
		if strings.Contains(line, `"msg":"rollback refused"`) {
			found = strings.Contains(line, `"level":"WARN"`) && strings.Contains(line, "cannot delete documents by job") &&
				strings.Contains(line, `"job_id":"`+a.JobID+`"`)
		}
	}
	if !found {
		t.Fatalf("no warning naming the refused rollback's job and reason:\n%s", refused.String())
	}
}

// plainSink is a store that offers only the DocSink methods: no rollback, no delete by job.
type plainSink struct{ pipeline.DocSink }

// lockedBuffer is a bytes.Buffer the worker's goroutines and the test may use at once.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// rollbackPreviewer is a store that previews rollbacks (both document stores).
type rollbackPreviewer interface {
	PreviewJobRollback(ctx context.Context, collection, job string, restorePrevious bool) (document.JobRollbackPreview, error)
}

// previewThenRollback previews the rollback of job id from store, rolls it back through the
// workers and checks that the outcome is what the preview said; it returns the preview.
func (e *testEnv) previewThenRollback(t *testing.T, store rollbackPreviewer, id string, opts intake.RollbackOptions) document.JobRollbackPreview {
	t.Helper()
	p, err := store.PreviewJobRollback(context.Background(), "ttrpg_chunks_dev", id, opts.RestorePrevious)
	if err != nil {
		t.Fatal(err)
	}
	rb := e.rollback(t, id, opts).Rollback
	got := map[string]int64{}
	for _, s := range rb.SupersededJobs {
		got[s.JobID] = s.Documents
	}
	if rb.State != "done" || p.Truncated || rb.Deleted != p.Deleted() || rb.Restored != p.Restorable || !maps.Equal(got, p.Superseded) {
		t.Fatalf("rollback of %s: %+v, preview said %+v", id, rb, p)
	}
	return p
}

// Issue 18: what a rollback preview says, computed from the store the workers wrote, is what
// the rollback then does, on the embedded store (deleting and restoring) and on AstraDB.
// Jobs X (10 ids), W (12), Y (15) and Z (4) write p_0000… in turn: Y rewrote documents of two
// earlier jobs, and a later job (Z) rewrote some of Y's, which stay and are not counted; X
// wrote nothing last.
func TestRollbackPreviewMatchesOutcome(t *testing.T) {
	loadAll := func(t *testing.T, e *testEnv) (x, w, y, z jobs.Job) {
		_, x = e.load(t, writeChunks(t, t.TempDir(), 10, "p_%04d"), false)
		_, w = e.load(t, writeChunks(t, t.TempDir(), 12, "p_%04d"), false)
		_, y = e.load(t, writeChunks(t, t.TempDir(), 15, "p_%04d"), false)
		_, z = e.load(t, writeChunks(t, t.TempDir(), 4, "p_%04d"), false)
		return x, w, y, z
	}
	t.Run("embedded", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		e.startWorker(t, e.store, nil)
		x, w, y, z := loadAll(t, e)
		// Deleting Y: its 11 documents (p_0004…p_0014), 6 of X's and 8 of W's with them.
		del, err := e.store.PreviewJobRollback(context.Background(), "ttrpg_chunks_dev", y.JobID, false)
		if err != nil {
			t.Fatal(err)
		}
		if del.Documents != 11 || del.Restorable != 0 || !maps.Equal(del.Superseded, map[string]int64{x.JobID: 6, w.JobID: 8}) {
			t.Fatalf("preview of Y, deleting: %+v", del)
		}
		// Restoring Y: W's 8 versions back, 3 deleted (no kept version), nobody superseded.
		res := e.previewThenRollback(t, e.store, y.JobID, intake.RollbackOptions{RestorePrevious: true})
		if res.Documents != 11 || res.Restorable != 8 || res.Deleted() != 3 || res.Superseded != nil {
			t.Fatalf("preview of Y, restoring: %+v", res)
		}
		if p := e.previewThenRollback(t, e.store, x.JobID, intake.RollbackOptions{}); p.Documents != 0 {
			t.Fatalf("preview of X, which wrote nothing last: %+v", p)
		}
		// Z rewrote W's p_0000…p_0003 (Y's versions were dropped with Y's rollback).
		if p := e.previewThenRollback(t, e.store, z.JobID, intake.RollbackOptions{}); p.Documents != 4 || !maps.Equal(p.Superseded, map[string]int64{w.JobID: 4}) {
			t.Fatalf("preview of Z: %+v", p)
		}
	})
	t.Run("astra", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		srv, sink, _ := astraSink(t, nil)
		e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
		x, w, y, z := loadAll(t, e)
		if p, err := sink.PreviewJobRollback(context.Background(), "ttrpg_chunks_dev", y.JobID, true); err != nil || p.Restorable != 0 || p.Documents != 11 {
			t.Fatalf("preview of Y restoring on AstraDB: %+v %v", p, err)
		}
		p := e.previewThenRollback(t, sink, y.JobID, intake.RollbackOptions{})
		if p.Documents != 11 || !maps.Equal(p.Superseded, map[string]int64{x.JobID: 6, w.JobID: 8}) {
			t.Fatalf("preview of Y: %+v", p)
		}
		if p := e.previewThenRollback(t, sink, x.JobID, intake.RollbackOptions{}); p.Documents != 0 {
			t.Fatalf("preview of X, which wrote nothing last: %+v", p)
		}
		if p := e.previewThenRollback(t, sink, z.JobID, intake.RollbackOptions{}); p.Documents != 4 || p.Superseded[w.JobID] != 4 {
			t.Fatalf("preview of Z: %+v", p)
		}
		if st := srv.Stats(); len(st.Violations) != 0 {
			t.Fatalf("protocol violations: %v", st.Violations)
		}
	})
}
