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
