// Package jobs tracks load jobs: each job's record (state, counts, rejections, rollback) in
// the sluice_jobs key-value bucket, the item outcomes the workers report (Progress, batched
// into few record writes), a read cache kept live by watching the bucket, the reaper that fails
// jobs whose publisher died, and the change feed (the SLUICE_EVENTS stream) that the HTTP
// API's event streams and the command clients follow.
//
// A job's id is a digest of its env and content (JobID), so a file submitted again is the same
// job. Records are written with compare-and-set on the bucket's revision; every writer may run
// in any process.
package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/sluice-dev/sluice/schemas"
)

// State is where a job is in its life.
type State string

// The job states, as the API and the CLI report them.
const (
	// JobPending: opened, nothing processed yet.
	JobPending State = "pending"
	// JobRunning: some items processed, or not yet sealed.
	JobRunning State = "running"
	// JobCompleted: sealed, and every published item written.
	JobCompleted State = "completed"
	// JobCompletedWithErrors: sealed, every item accounted for, some rejected or dead-lettered.
	JobCompletedWithErrors State = "completed_with_errors"
	// JobRolledBack: an operator rolled the job back; the documents it wrote are deleted.
	JobRolledBack State = "rolled_back"
	// JobSuperseded: loaded completely, but the rollback of a later job that had rewritten
	// some of its documents deleted them (Job.Superseded says how many and by which
	// rollback): its documents are no longer all there. Submitting the same file again loads
	// it again.
	JobSuperseded State = "superseded"
	// JobFailed: its publisher stopped before sealing it (a publish refused, the upload cut,
	// the publisher gone: Failure says which). Nothing more happens to it; submitting the same
	// content again resumes it.
	JobFailed State = "failed"
)

// Done reports whether s is a final state of loading: every item is accounted for. A
// superseded job is done: it loaded completely, and nothing more happens to it until its file
// is submitted again.
func (s State) Done() bool {
	return s == JobCompleted || s == JobCompletedWithErrors || s == JobRolledBack || s == JobSuperseded || s == JobFailed
}

// Reloadable reports whether a plain resubmission of the job's file loads it again (a new
// generation of the same job) instead of answering "already loaded": the job was rolled back,
// or a rollback deleted some of its documents.
func (s State) Reloadable() bool {
	return s == JobRolledBack || s == JobSuperseded
}

// States lists every job state, in the order of a job's life.
var States = []State{JobPending, JobRunning, JobCompleted, JobCompletedWithErrors, JobSuperseded, JobRolledBack, JobFailed}

// Settled reports whether nothing more will happen to the job without a new request: it is
// done loading and no rollback is pending.
func (j Job) Settled() bool {
	return j.State.Done() && (j.Rollback == nil || j.Rollback.State != "requested")
}

// Rollback is the state of a job's rollback.
type Rollback struct {
	// State is "requested", "done" or "failed".
	State       string     `json:"state"`
	RequestedBy string     `json:"requested_by,omitempty"`
	RequestedAt time.Time  `json:"requested_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
	// RestorePrevious: the rollback puts back the version each document replaced, where the
	// store keeps it, instead of deleting the document.
	RestorePrevious bool `json:"restore_previous,omitempty"`
	// Deleted counts the documents deleted.
	Deleted int64 `json:"deleted"`
	// Restored counts the documents put back to the version they replaced.
	Restored int64 `json:"restored,omitempty"`
	// SupersededJobs names every earlier job whose documents this rollback deleted (documents
	// the rolled-back job had rewritten), with how many of its documents went; each of those
	// jobs is now in state superseded. At most MaxSupersededJobs are listed (all are marked);
	// SupersededTruncated says when more were.
	SupersededJobs      []SupersededJob `json:"superseded_jobs,omitempty"`
	SupersededTruncated bool            `json:"superseded_truncated,omitempty"`
	// Error says why a failed rollback failed.
	Error string `json:"error,omitempty"`
	// ID names the rollback carried out (job id and request time), so that a redelivered
	// rollback event is recorded once.
	ID string `json:"id,omitempty"`
}

// MaxSupersededJobs bounds Rollback.SupersededJobs and Superseded.By, which live in the job
// record (one KV value, read on every progress write): a document keeps at most a few
// earlier versions, so more than this many distinct earlier jobs is an unusual rollback.
const MaxSupersededJobs = 100

// SupersededJob is one earlier job whose documents a rollback deleted.
type SupersededJob struct {
	JobID string `json:"job_id"`
	// Documents counts its documents the rollback deleted.
	Documents int64 `json:"documents"`
}

// Superseded says which rollbacks of later jobs deleted documents of this job.
type Superseded struct {
	// Documents counts this job's documents deleted by those rollbacks in all.
	Documents int64 `json:"documents"`
	// By lists the rollbacks (at most MaxSupersededJobs, the first ones).
	By []SupersededBy `json:"by"`
}

// SupersededBy is one rollback that deleted documents of a job.
type SupersededBy struct {
	// JobID is the job rolled back.
	JobID string `json:"job_id"`
	// Rollback is the rollback's id (Rollback.ID).
	Rollback  string    `json:"rollback"`
	Documents int64     `json:"documents"`
	At        time.Time `json:"at"`
}

// Failure is why a job's publisher stopped before sealing it.
type Failure struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// ItemIssue is one item of a job that was rejected at intake, or drew a warning.
type ItemIssue = schemas.ItemIssue

// Job is the state of one load job as the job store reports it. It is a value: callers own it.
type Job struct {
	JobID string `json:"job_id"`
	Env   string `json:"env"`
	State State  `json:"state"`
	// File is the name the producer gave the job's file.
	File string `json:"file,omitempty"`
	// Format is the chunk file format the items came in.
	Format string `json:"format,omitempty"`
	// SourceJobID is the producer's own job id (the file's "job_id"), when it had one.
	SourceJobID string `json:"source_job_id,omitempty"`
	// Sealed is true once the producer published every item and sent the seal.
	Sealed bool `json:"sealed"`
	// Total is the number of items in the file (published + rejected); known once sealed.
	Total int64 `json:"total"`
	// Published is the number of items published to JetStream; known once sealed.
	Published    int64 `json:"published"`
	Written      int64 `json:"written"`
	Rejected     int64 `json:"rejected"`
	DeadLettered int64 `json:"dead_lettered"`
	// Rejections lists rejected items (at most schemas.MaxIssues, 1,000; RejectionsTruncated
	// says when more, RejectionsOmitted how many more). Read with the job (Store.Get),
	// not in lists or the watched record.
	Rejections          []ItemIssue `json:"rejections,omitempty"`
	RejectionsTruncated bool        `json:"rejections_truncated,omitempty"`
	// RejectionsOmitted counts the rejected items Rejections leaves out: Rejected less its
	// length, set with RejectionsTruncated.
	RejectionsOmitted int64 `json:"rejections_omitted,omitempty"`
	// Warnings lists items that loaded with a warning, such as a duplicate id.
	Warnings []ItemIssue `json:"warnings,omitempty"`
	// Failure says why the job failed (state failed): its publisher stopped before sealing it.
	Failure *Failure `json:"failure,omitempty"`
	// Rollback is set once a rollback was requested.
	Rollback *Rollback `json:"rollback,omitempty"`
	// Superseded is set once the rollback of a later job deleted documents of this one
	// (state superseded).
	Superseded *Superseded `json:"superseded,omitempty"`
	// Generation counts the times the job was loaded again after a rollback (its file
	// submitted again while rolled back or superseded); 0 for the first load. Each
	// generation publishes under its own message ids, so the broker's duplicate window
	// does not drop the new load.
	Generation int `json:"generation,omitempty"`
	// ReopenedFrom is the state the job was in when its current generation began.
	ReopenedFrom State      `json:"reopened_from,omitempty"`
	CreatedAt    time.Time  `json:"created_at"`
	UpdatedAt    time.Time  `json:"updated_at"`
	CompletedAt  *time.Time `json:"completed_at,omitempty"`
}

// JobID returns the job id of a file's content in env: the same content in the same env
// always gets the same id, so a resubmitted file is recognised as the same job.
func JobID(env string, contentHash []byte) string {
	h := sha256.New()
	h.Write([]byte(env))
	h.Write([]byte{0})
	h.Write(contentHash)
	return "j" + hex.EncodeToString(h.Sum(nil))[:24]
}

// Wait follows job id until it completes, calling progress (if not nil) with each change, and
// returns its final state. It returns ctx's error if ctx ends first.
func Wait(ctx context.Context, jobs *Store, id string, progress func(Job)) (Job, error) {
	var final Job
	err := jobs.Watch(ctx, id, func(j Job) bool {
		if progress != nil {
			progress(j)
		}
		final = j
		return j.State.Done()
	})
	if err != nil {
		return final, err
	}
	// The watched record has no issues; read them back.
	if j, err := jobs.Get(ctx, id); err == nil {
		final = j
	}
	return final, nil
}
