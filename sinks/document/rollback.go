package document

import "context"

// JobRollback asks a document sink to undo what one job wrote in a collection.
type JobRollback struct {
	// Job is the Sluice job id whose documents are removed (those whose "sluice_job" is Job).
	// Required.
	Job string
	// ID names this rollback request (the job id and the request time): a sink that can make
	// the rollback and its record atomic returns the first outcome again when the same ID is
	// carried out twice (a redelivered rollback event). Required.
	ID string
	// RestorePrevious puts back, for each document Job wrote last, the version it replaced,
	// instead of deleting the document. A document with no kept previous version is deleted.
	// Only a sink that keeps previous versions can do it (ErrNoPreviousVersions otherwise).
	RestorePrevious bool
	// BeforeDelete, if set, is called by a sink that cannot record its outcome atomically
	// with the deletes (AstraDB) with the Superseded counts it is about to cause, before it
	// deletes anything, so that they are recorded even if the process dies right after the
	// deletes; an error stops the rollback with nothing deleted. The embedded store, which
	// records its outcome in the same transaction, does not call it. Optional; it may block.
	BeforeDelete func(ctx context.Context, superseded map[string]int64) error
}

// JobRollbackResult is what a rollback did.
type JobRollbackResult struct {
	// Deleted counts the documents deleted.
	Deleted int64 `json:"deleted"`
	// Restored counts the documents put back to the version they replaced.
	Restored int64 `json:"restored"`
	// Superseded counts, per earlier job, the documents of that job the rollback removed:
	// documents the rolled-back job had rewritten and that are now deleted, so the earlier
	// job's version of them is gone too. Nil when none.
	Superseded map[string]int64 `json:"superseded,omitempty"`
}

// JobRollbackPreview is what a rollback of one job would do now (a dry run): a sink computes
// it with the same counting as its rollback (Tally), so that the two agree while nothing is
// written in between.
type JobRollbackPreview struct {
	// Documents counts the documents the job wrote last (their "sluice_job" is the job): those
	// the rollback restores or deletes.
	Documents int64 `json:"documents"`
	// Restorable counts, for a rollback with RestorePrevious, the documents with a kept
	// previous version: they would be put back; the others are deleted. 0 without
	// RestorePrevious or on a sink that keeps no previous versions.
	Restorable int64 `json:"restorable"`
	// Superseded counts, per earlier job, the documents of that job the rollback would remove
	// (JobRollbackResult.Superseded). Nil when none.
	Superseded map[string]int64 `json:"superseded,omitempty"`
	// Truncated is true when the sink stopped reading before the last of the job's documents
	// (a bound on the preview's cost): the counts are then lower bounds.
	Truncated bool `json:"truncated"`
}

// Deleted is how many documents the rollback would delete: those it does not restore.
func (p JobRollbackPreview) Deleted() int64 { return p.Documents - p.Restorable }

// Tally counts one document that job wrote last, as a rollback treats it: with restore and a
// kept previous version (hasPrevious) it is put back and Tally returns true; otherwise it is
// deleted, every earlier job in earlier (the jobs with a kept version of it, or that the sink
// names as its earlier writers; "" and job itself are skipped) counts it in Superseded, and
// Tally returns false. A sink's rollback and its preview both count with Tally, so that they
// cannot disagree. Not safe for concurrent use.
func (p *JobRollbackPreview) Tally(job string, restore, hasPrevious bool, earlier []string) bool {
	p.Documents++
	if restore && hasPrevious {
		p.Restorable++
		return true
	}
	for _, j := range earlier {
		if j == "" || j == job {
			continue // written without a job, or by the job itself: nothing to mark
		}
		if p.Superseded == nil {
			p.Superseded = map[string]int64{}
		}
		p.Superseded[j]++
	}
	return false
}
