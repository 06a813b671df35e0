package pipeline

import (
	"time"

	"github.com/sluice-dev/sluice/schemas"
)

// JobState is where a job is in its life.
type JobState string

// The job states, as the API and the CLI report them.
const (
	// JobPending: opened, nothing processed yet.
	JobPending JobState = "pending"
	// JobRunning: some items processed, or not yet sealed.
	JobRunning JobState = "running"
	// JobCompleted: sealed, and every published item written.
	JobCompleted JobState = "completed"
	// JobCompletedWithErrors: sealed, every item accounted for, some rejected or dead-lettered.
	JobCompletedWithErrors JobState = "completed_with_errors"
	// JobRolledBack: an operator rolled the job back; the documents it wrote are deleted.
	JobRolledBack JobState = "rolled_back"
	// JobFailed: its publisher stopped before sealing it (a publish refused, the upload cut,
	// the publisher gone: Failure says which). Nothing more happens to it; submitting the same
	// content again resumes it.
	JobFailed JobState = "failed"
)

// Done reports whether s is a final state of loading: every item is accounted for.
func (s JobState) Done() bool {
	return s == JobCompleted || s == JobCompletedWithErrors || s == JobRolledBack || s == JobFailed
}

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
	// Deleted counts the documents deleted.
	Deleted int64 `json:"deleted"`
	// Error says why a failed rollback failed.
	Error string `json:"error,omitempty"`
}

// JobFailure is why a job's publisher stopped before sealing it.
type JobFailure struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// ItemIssue is one item of a job that was rejected at intake, or drew a warning.
type ItemIssue = schemas.ItemIssue

// Job is the state of one load job as the job store reports it. It is a value: callers own it.
type Job struct {
	JobID string   `json:"job_id"`
	Env   string   `json:"env"`
	State JobState `json:"state"`
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
	// says when more, RejectionsOmitted how many more). Read with the job (JobStore.Get),
	// not in lists or the watched record.
	Rejections          []ItemIssue `json:"rejections,omitempty"`
	RejectionsTruncated bool        `json:"rejections_truncated,omitempty"`
	// RejectionsOmitted counts the rejected items Rejections leaves out: Rejected less its
	// length, set with RejectionsTruncated.
	RejectionsOmitted int64 `json:"rejections_omitted,omitempty"`
	// Warnings lists items that loaded with a warning, such as a duplicate id.
	Warnings []ItemIssue `json:"warnings,omitempty"`
	// Failure says why the job failed (state failed): its publisher stopped before sealing it.
	Failure *JobFailure `json:"failure,omitempty"`
	// Rollback is set once a rollback was requested.
	Rollback    *Rollback  `json:"rollback,omitempty"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	CompletedAt *time.Time `json:"completed_at,omitempty"`
}
