package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// ErrJobNotFound is returned by Store.Get for an unknown job.
var ErrJobNotFound = errors.New("job not found")

// ErrBadCursor is returned by List for a cursor it did not make.
var ErrBadCursor = errors.New("bad cursor")

// jobRecord is what the job KV bucket holds under the job id. Progress is kept as sets of item
// indexes, not counters, so recording the same item twice (a redelivery) changes nothing:
// counts are exact however often a message is delivered.
type jobRecord struct {
	Job
	WrittenSet ranges `json:"written_set,omitempty"`
	DeadSet    ranges `json:"dead_set,omitempty"`
	// NoIssues is set at seal when the job has no rejections or warnings, so Get reads one
	// key, not two (records sealed before it existed lack it and are read as before).
	NoIssues bool `json:"no_issues,omitempty"`
}

// jobIssues is kept under "{job}.issues", written once at seal, so the hot record stays small.
type jobIssues struct {
	Rejections          []ItemIssue `json:"rejections,omitempty"`
	RejectionsTruncated bool        `json:"rejections_truncated,omitempty"`
	Warnings            []ItemIssue `json:"warnings,omitempty"`
}

// Store keeps job records in a JetStream KV bucket. Every change is a compare-and-set on the
// record's revision, so any number of workers may update one job at once. Safe for concurrent
// use; it does not own the bucket.
type Store struct {
	kv    jetstream.KeyValue
	now   func() time.Time
	cache atomic.Pointer[jobCache] // while RunCache runs
}

// NewStore returns a store over kv (the bucket Provision creates).
func NewStore(kv jetstream.KeyValue) *Store {
	return &Store{kv: kv, now: time.Now}
}

// Get returns the job with its rejections and warnings, or ErrJobNotFound.
func (s *Store) Get(ctx context.Context, id string) (Job, error) {
	rec, _, err := s.load(ctx, id, readCached)
	if err != nil {
		return Job{}, err
	}
	job := rec.Job
	if !rec.Sealed || rec.NoIssues {
		return job, nil // issues are written at seal, and this job has none
	}
	if v, _, err := s.get(ctx, id+".issues", readCached); err == nil {
		var is jobIssues
		if err := json.Unmarshal(v, &is); err == nil {
			job.Rejections, job.RejectionsTruncated, job.Warnings = is.Rejections, is.RejectionsTruncated, is.Warnings
			if job.RejectionsTruncated {
				job.RejectionsOmitted = max(job.Rejected-int64(len(job.Rejections)), 0)
			}
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, fmt.Errorf("read job %s issues: %w", id, err)
	}
	return job, nil
}

// load reads job id's record and its revision, as how says.
func (s *Store) load(ctx context.Context, id string, how readMode) (*jobRecord, uint64, error) {
	if !schemas.ValidKey(id) {
		return nil, 0, fmt.Errorf("%w: %q is not a valid job id", ErrJobNotFound, id)
	}
	v, rev, err := s.get(ctx, id, how)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrJobNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read job %s: %w", id, err)
	}
	var rec jobRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return &rec, rev, nil
}

// update applies fn to the job's record (a new one if absent) with compare-and-set, retrying
// on conflicting writers, and returns the job as stored.
func (s *Store) update(ctx context.Context, id string, fn func(*jobRecord)) (Job, error) {
	return s.modify(ctx, id, func(r *jobRecord) bool { fn(r); return true })
}

// modify is update where fn may decline the change (return false): then nothing is written
// and the job is returned as read.
func (s *Store) modify(ctx context.Context, id string, fn func(*jobRecord) bool) (Job, error) {
	return s.modifyFrom(ctx, id, nil, 0, fn)
}

// modifyFrom is modify whose first attempt starts from rec at rev, read by the caller (nil:
// read it here).
func (s *Store) modifyFrom(ctx context.Context, id string, first *jobRecord, firstRev uint64, fn func(*jobRecord) bool) (Job, error) {
	for attempt := 0; ; attempt++ {
		// A retry after a conflict reads the broker: the cached revision lost the race.
		how := readCached
		if attempt > 0 {
			how = readFresh
		}
		var rec *jobRecord
		var rev uint64
		var err error
		if attempt == 0 && first != nil {
			rec, rev = first, firstRev
		} else {
			rec, rev, err = s.load(ctx, id, how)
		}
		if errors.Is(err, ErrJobNotFound) {
			rec = &jobRecord{Job: Job{JobID: id, State: JobPending, CreatedAt: s.now().UTC()}}
		} else if err != nil {
			return Job{}, err
		}
		if !fn(rec) {
			return rec.Job, nil
		}
		rec.settle(s.now().UTC())
		b, err := json.Marshal(rec)
		if err != nil {
			return Job{}, fmt.Errorf("encode job %s: %w", id, err)
		}
		var newRev uint64
		if rev == 0 {
			newRev, err = s.kv.Create(ctx, id, b)
		} else {
			newRev, err = s.kv.Update(ctx, id, b, rev)
		}
		if err == nil {
			s.wrote(id, newRev, b)
			return rec.Job, nil
		}
		// A compare-and-set conflict is error 10071 on an R1 bucket and 10164 on a replicated
		// one (issue 15: every conflict on R3 failed the write).
		var apiErr *jetstream.APIError
		conflict := errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) ||
			(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
				apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
		if !conflict {
			return Job{}, fmt.Errorf("write job %s: %w", id, err)
		}
		if err := ctx.Err(); err != nil {
			return Job{}, fmt.Errorf("write job %s: %w", id, err)
		}
	}
}

// settle recomputes the counters and the state from the record's sets.
func (r *jobRecord) settle(now time.Time) {
	r.Written = r.WrittenSet.count()
	r.DeadLettered = r.DeadSet.count()
	r.UpdatedAt = now
	switch {
	case r.Rollback != nil && r.Rollback.State == "done":
		r.State = JobRolledBack
	case r.Failure != nil && !r.Sealed:
		r.State = JobFailed
		if r.CompletedAt == nil {
			r.CompletedAt = &now
		}
	case r.Sealed && r.Written+r.DeadLettered >= r.Published:
		switch {
		case r.Superseded != nil && r.Superseded.Documents > 0:
			r.State = JobSuperseded
		case r.Rejected+r.DeadLettered > 0:
			r.State = JobCompletedWithErrors
		default:
			r.State = JobCompleted
		}
		if r.CompletedAt == nil {
			r.CompletedAt = &now
		}
	case r.Written+r.DeadLettered > 0:
		r.State = JobRunning
		r.CompletedAt = nil
	default:
		r.State = JobPending
		r.CompletedAt = nil
	}
}

// Open records a job's open event. Opening twice is harmless, and an open the record already
// reflects (the loader recorded it before publishing the event) writes nothing: every write
// of the bucket is a synced write of one stream, which all jobs share (issue 12).
func (s *Store) Open(ctx context.Context, ev schemas.JobOpen) (Job, error) {
	return s.modify(ctx, ev.JobID, func(r *jobRecord) bool { return applyOpen(r, ev) })
}

// applyOpen sets ev's facts on r and reports whether anything changed.
func applyOpen(r *jobRecord, ev schemas.JobOpen) bool {
	changed := r.Env != ev.Env || r.File != ev.File || r.Format != ev.Format || r.SourceJobID != ev.SourceJobID
	r.Env = ev.Env
	r.File, r.Format, r.SourceJobID = ev.File, ev.Format, ev.SourceJobID
	if !ev.CreatedAt.IsZero() && (r.CreatedAt.IsZero() || ev.CreatedAt.Before(r.CreatedAt)) {
		r.CreatedAt = ev.CreatedAt.UTC()
		changed = true
	}
	return changed
}

// Resume records that a publisher (re)starts publishing the job: it opens it and clears an
// earlier failure, in one write (none when there is nothing to change). Workers applying open
// events use Open, which leaves a failure alone (an open event applied after the failure must
// not revive a job nobody publishes).
func (s *Store) Resume(ctx context.Context, ev schemas.JobOpen) (Job, error) {
	return s.modify(ctx, ev.JobID, func(r *jobRecord) bool {
		changed := applyOpen(r, ev) || r.Failure != nil
		r.Failure = nil
		return changed
	})
}

// Fail records that job id's publisher stopped before sealing it, and why. A sealed job
// cannot fail (its items are all published): Fail leaves it alone, as it does a job that
// failed already (the first reason stays).
func (s *Store) Fail(ctx context.Context, id, reason string) (Job, error) {
	return s.modify(ctx, id, func(r *jobRecord) bool {
		if r.Sealed || r.Failure != nil {
			return false
		}
		r.Failure = &Failure{Reason: truncateReason(reason), At: s.now().UTC()}
		return true
	})
}

// Touch records that job id's publisher is still publishing (its UpdatedAt), so the reaper
// leaves it alone.
func (s *Store) Touch(ctx context.Context, id string) error {
	_, err := s.update(ctx, id, func(*jobRecord) {})
	return err
}

// maxReasonBytes bounds a failure reason kept in the job record.
const maxReasonBytes = 1024

func truncateReason(s string) string {
	if len(s) <= maxReasonBytes {
		return s
	}
	n := maxReasonBytes
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// Seal records a job's seal event: its totals and issues. Sealing twice is harmless.
func (s *Store) Seal(ctx context.Context, ev schemas.JobSeal) (Job, error) {
	// A seal the record already reflects (the loader sealed the job before a worker applied
	// its event) writes nothing, not even its issues again: every write of the bucket is a
	// synced write of the one stream all jobs share (issue 12).
	rec, rev, err := s.load(ctx, ev.JobID, readCached)
	if err == nil && sealedAs(rec, ev) {
		return rec.Job, nil
	}
	if err != nil {
		rec, rev = nil, 0 // modify reads it again and reports what is wrong
	}
	if len(ev.Rejections) > 0 || len(ev.Warnings) > 0 {
		is := jobIssues{RejectionsTruncated: ev.RejectionsTruncated}
		is.Rejections, is.Warnings = ev.Rejections, ev.Warnings
		b, err := json.Marshal(is)
		if err != nil {
			return Job{}, fmt.Errorf("encode job %s issues: %w", ev.JobID, err)
		}
		issuesRev, err := s.kv.Put(ctx, ev.JobID+".issues", b)
		if err != nil {
			return Job{}, fmt.Errorf("write job %s issues: %w", ev.JobID, err)
		}
		s.wrote(ev.JobID+".issues", issuesRev, b)
	}
	// The record read above starts the compare-and-set: the issues are another key, so
	// writing them does not move the record's revision.
	return s.modifyFrom(ctx, ev.JobID, rec, rev, func(r *jobRecord) bool {
		if sealedAs(r, ev) {
			return false
		}
		r.Env = ev.Env
		r.Sealed = true
		r.NoIssues = len(ev.Rejections) == 0 && len(ev.Warnings) == 0
		r.Total, r.Published, r.Rejected = ev.Total, ev.Published, ev.Rejected
		return true
	})
}

// sealedAs reports whether r is sealed with ev's facts.
func sealedAs(r *jobRecord, ev schemas.JobSeal) bool {
	noIssues := len(ev.Rejections) == 0 && len(ev.Warnings) == 0
	return r.Sealed && r.Env == ev.Env && r.NoIssues == noIssues &&
		r.Total == ev.Total && r.Published == ev.Published && r.Rejected == ev.Rejected
}

// IdempotentJob returns the job recorded for an idempotency key, or "" if none.
func (s *Store) IdempotentJob(ctx context.Context, key string) (string, error) {
	e, err := s.kv.Get(ctx, idemKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read idempotency key: %w", err)
	}
	return string(e.Value()), nil
}

// RememberIdempotent records that key produced job id. The first job recorded for a key wins.
func (s *Store) RememberIdempotent(ctx context.Context, key, id string) (string, error) {
	_, err := s.kv.Create(ctx, idemKey(key), []byte(id))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return s.IdempotentJob(ctx, key)
	}
	if err != nil {
		return "", fmt.Errorf("record idempotency key: %w", err)
	}
	return id, nil
}

// idemKey hashes a client's key: clients choose it, KV keys have a restricted alphabet.
func idemKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "idem." + hex.EncodeToString(sum[:16])
}

// ItemOutcome is what became of one item of a job.
type ItemOutcome int

// The item outcomes a worker records.
const (
	Written ItemOutcome = iota + 1
	DeadLettered
)

// Mark is one item outcome to record.
type Mark struct {
	Job     string
	Item    int64
	Outcome ItemOutcome
}

// Mark records item outcomes of job id directly, in one compare-and-set. Workers use the
// batched Progress recorder; Mark is for rare events (a dead letter captured from an
// advisory). Recording an outcome twice changes nothing.
func (s *Store) Mark(ctx context.Context, id string, marks ...Mark) (Job, error) {
	return s.record(ctx, id, marks)
}

// record applies marks for one job in one compare-and-set.
func (s *Store) record(ctx context.Context, id string, marks []Mark) (Job, error) {
	return s.update(ctx, id, func(r *jobRecord) {
		for _, m := range marks {
			switch m.Outcome {
			case Written:
				// A replayed dead letter that now succeeds moves from dead to written.
				r.DeadSet.remove(m.Item)
				r.WrittenSet.add(m.Item)
			case DeadLettered:
				if !r.WrittenSet.contains(m.Item) {
					r.DeadSet.add(m.Item)
				}
			}
		}
	})
}

// Watch calls fn with the job each time its record changes, starting with its current state,
// until fn returns true, ctx ends (returning ctx's error), or the watch fails.
func (s *Store) Watch(ctx context.Context, id string, fn func(Job) bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The watch's consumer is created under a context that ctx does not cancel (nats.go
	// bounds the create by its default API timeout): a create request cancelled in flight
	// (an HTTP client that drops its connection right after the response head) fails here
	// while the broker still creates the consumer, which then stays until its inactivity
	// threshold. Once created, Stop below deletes it, whatever ended the watch.
	wctx, wcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer wcancel()
	w, err := s.kv.Watch(wctx, id)
	if err != nil {
		return fmt.Errorf("watch job %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watch job %s: watcher stopped", id)
			}
			if e == nil { // initial values delivered
				continue
			}
			var rec jobRecord
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				return fmt.Errorf("decode job %s: %w", id, err)
			}
			if fn(rec.Job) {
				return nil
			}
		}
	}
}
