package pipeline

import (
	"context"

	"github.com/sluice-dev/sluice/sinks/document"
)

// DocSink is a document store the chunk path writes to: the embedded SQLite store or AstraDB.
//
// Implementations must be safe for concurrent use.
type DocSink interface {
	// WriteDocs durably writes docs into collection, replacing a stored document with the same
	// ID unless the stored Version is higher (then the write is skipped and reported as
	// success). It returns one outcome per document, in order: nil when that document is
	// durably stored, else an error (marked with Permanent when retrying can never help).
	// A non-nil second return means the whole call failed and nothing is known to be written;
	// the caller retries it unless it is permanent. WriteDocs may block; it honours ctx.
	WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error)
}

// WriteConcurrencer is a DocSink that knows how many WriteDocs calls it serves at once (the
// Astra sink: its HTTP connection pool). The worker's batcher runs that many writes at once
// unless BatcherConfig.Concurrency says otherwise.
type WriteConcurrencer interface {
	WriteConcurrency() int
}

// JobDocDeleter is a DocSink that can delete the documents one job wrote: those whose
// "sluice_job" field is the job id. Job rollback needs it.
type JobDocDeleter interface {
	// DeleteJobDocs deletes the job's documents in collection and returns how many. It must be
	// idempotent (a repeated call deletes nothing more) and safe for concurrent use.
	DeleteJobDocs(ctx context.Context, collection, jobID string) (int64, error)
}

// JobRollbacker is a DocSink that rolls a job back itself, naming the earlier jobs whose
// documents went and, where it keeps previous versions, restoring them on request (the
// embedded store). The worker prefers it to JobDocDeleter.
type JobRollbacker interface {
	// RollbackJobDocs removes the documents rb.Job wrote last in collection — deleting them,
	// or with rb.RestorePrevious putting back the version each replaced when it has one —
	// and reports what it did. Carrying out the same rb.ID again must change nothing and
	// should report the first outcome. A sink that keeps no previous versions fails
	// RestorePrevious with a permanent error saying so. Safe for concurrent use.
	RollbackJobDocs(ctx context.Context, collection string, rb document.JobRollback) (document.JobRollbackResult, error)
}
