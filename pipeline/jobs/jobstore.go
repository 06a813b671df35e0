package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
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
		var apiErr *jetstream.APIError
		conflict := errors.Is(err, jetstream.ErrKeyExists) ||
			(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
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

// ReaperConfig configures RunJobReaper.
type ReaperConfig struct {
	// After is how long an unsealed job may go without an update before it is failed. Default
	// 10 minutes: a loader touches the jobs it publishes every minute (loaderTouchEvery), and
	// workers update a job with every batch they write.
	After time.Duration
	// Every is how often the jobs are scanned. Default 1 minute. A scan reads every job record.
	Every time.Duration
}

// RunJobReaper fails jobs left open by a publisher that vanished (a crashed loader, an API
// process killed mid-upload): an unsealed job without a failure and without an update for
// cfg.After is failed with that reason, so no job stays pending for ever. It scans until ctx
// ends and returns nil then; scan errors go to onErr (may be nil) and the next scan runs. Any
// number of processes may run it: each change is a compare-and-set, and a job updated
// meanwhile is left alone.
func RunJobReaper(ctx context.Context, jobs *Store, cfg ReaperConfig, onErr func(error)) error {
	if cfg.After <= 0 {
		cfg.After = 10 * time.Minute
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Minute
	}
	t := time.NewTicker(cfg.Every)
	defer t.Stop()
	for {
		if _, err := jobs.Reap(ctx, cfg.After); err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Reap fails every unsealed job without a failure that has had no update for after, and
// returns their ids (RunJobReaper's scan). It reads every job record.
func (s *Store) Reap(ctx context.Context, after time.Duration) ([]string, error) {
	stale := func(r *jobRecord) bool {
		return !r.Sealed && r.Failure == nil && s.now().Sub(r.UpdatedAt) > after
	}
	var candidates []string
	if err := s.eachJob(ctx, func(rec *jobRecord) {
		if stale(rec) {
			candidates = append(candidates, rec.JobID)
		}
	}); err != nil {
		return nil, fmt.Errorf("reap jobs: %w", err)
	}
	var reaped []string
	var errs []error
	for _, key := range candidates {
		reason := fmt.Sprintf("its publisher stopped before sealing it: no update for %s (submit the same file again to resume it)", after)
		changed := false
		if _, err := s.modify(ctx, key, func(r *jobRecord) bool {
			if changed = stale(r); changed {
				r.Failure = &Failure{Reason: reason, At: s.now().UTC()}
			}
			return changed
		}); err != nil {
			errs = append(errs, err)
			continue
		}
		if changed {
			reaped = append(reaped, key)
		}
	}
	return reaped, errors.Join(errs...)
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

// Filter selects jobs in List. Zero fields match everything.
type Filter struct {
	State State
	Env   string
}

// List returns up to limit jobs matching f, newest first, starting after cursor (the
// NextCursor of the previous page; "" for the first), and the cursor of the next page ("" at
// the end). It reads every job record, so it costs one KV read per job in the bucket.
func (s *Store) List(ctx context.Context, f Filter, cursor string, limit int) ([]Job, string, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	var jobs []Job
	if err := s.eachJob(ctx, func(rec *jobRecord) {
		if (f.State == "" || rec.State == f.State) && (f.Env == "" || rec.Env == f.Env) {
			jobs = append(jobs, rec.Job)
		}
	}); err != nil {
		return nil, "", fmt.Errorf("list jobs: %w", err)
	}
	sort.Slice(jobs, func(i, k int) bool {
		if !jobs[i].CreatedAt.Equal(jobs[k].CreatedAt) {
			return jobs[i].CreatedAt.After(jobs[k].CreatedAt)
		}
		return jobs[i].JobID < jobs[k].JobID
	})
	start := 0
	if cursor != "" {
		at, id, ok := decodeJobCursor(cursor)
		if !ok {
			return nil, "", fmt.Errorf("list jobs: %w %q", ErrBadCursor, cursor)
		}
		start = sort.Search(len(jobs), func(i int) bool {
			j := jobs[i]
			return j.CreatedAt.Before(at) || (j.CreatedAt.Equal(at) && j.JobID > id)
		})
	}
	end := min(start+limit, len(jobs))
	page := jobs[start:end]
	next := ""
	if end < len(jobs) {
		last := page[len(page)-1]
		next = encodeJobCursor(last.CreatedAt, last.JobID)
	}
	return page, next, nil
}

// eachJob calls fn with every job record in the bucket (not the issues and idempotency
// records beside them): one KV read per job. A job deleted meanwhile is skipped.
func (s *Store) eachJob(ctx context.Context, fn func(*jobRecord)) error {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return err
	}
	for key := range lister.Keys() {
		if strings.Contains(key, ".") {
			continue // issues and idempotency records
		}
		rec, _, err := s.load(ctx, key, readBypass) // a scan would evict the jobs being polled
		if errors.Is(err, ErrJobNotFound) {
			continue
		}
		if err != nil {
			_ = lister.Stop()
			return err
		}
		fn(rec)
	}
	return nil
}

func encodeJobCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(at.UTC().Format(time.RFC3339Nano) + " " + id))
}

func decodeJobCursor(c string) (time.Time, string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", false
	}
	ts, id, ok := strings.Cut(string(b), " ")
	if !ok {
		return time.Time{}, "", false
	}
	at, err := time.Parse(time.RFC3339Nano, ts)
	return at, id, err == nil
}

// RequestRollback records that a rollback of job id was asked for (restore: put back the
// previous versions). It fails with ErrJobNotFound for an unknown job. A rollback already
// requested or done is kept as it is (asking again is harmless); a failed one is replaced.
func (s *Store) RequestRollback(ctx context.Context, id, by string, restore bool) (Job, error) {
	if _, _, err := s.load(ctx, id, readCached); err != nil {
		return Job{}, err
	}
	return s.update(ctx, id, func(r *jobRecord) {
		if r.Rollback == nil || r.Rollback.State == "failed" {
			r.Rollback = &Rollback{State: "requested", RequestedBy: by, RequestedAt: s.now().UTC(), RestorePrevious: restore}
		}
	})
}

// RollbackID names one rollback request of a job: the same event redelivered has the same id.
func RollbackID(ev schemas.JobRollback) string {
	return ev.JobID + "@" + ev.RequestedAt.UTC().Format(time.RFC3339Nano)
}

// FinishRollback records the outcome of rollback rbID of job id. Recording the same rollback
// twice (a redelivered event) changes nothing; a later rollback of a job already rolled back
// (asked again) adds what it did.
func (s *Store) FinishRollback(ctx context.Context, id, rbID string, res document.JobRollbackResult, cause error) (Job, error) {
	return s.modify(ctx, id, func(r *jobRecord) bool {
		now := s.now().UTC()
		if r.Rollback == nil {
			r.Rollback = &Rollback{RequestedAt: now}
		}
		rb := r.Rollback
		if rb.State == "done" && rb.ID == rbID {
			return false
		}
		rb.FinishedAt = &now
		rb.Deleted += res.Deleted
		rb.Restored += res.Restored
		for _, job := range sortedJobs(res.Superseded) {
			if i := slices.IndexFunc(rb.SupersededJobs, func(j SupersededJob) bool { return j.JobID == job }); i >= 0 {
				rb.SupersededJobs[i].Documents += res.Superseded[job]
			} else if len(rb.SupersededJobs) < MaxSupersededJobs {
				rb.SupersededJobs = append(rb.SupersededJobs, SupersededJob{JobID: job, Documents: res.Superseded[job]})
			} else {
				rb.SupersededTruncated = true
			}
		}
		rb.ID = rbID
		rb.State, rb.Error = "done", ""
		if cause != nil {
			rb.State, rb.Error = "failed", cause.Error()
		}
		return true
	})
}

// sortedJobs returns m's keys in order, so records list them the same way each time.
func sortedJobs(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// MarkSuperseded records, for each job of superseded but by itself, that rollback rbID of job
// by deleted superseded[job] of its documents (see markSuperseded); jobs in id order, so that
// records list them the same way each time. It returns the first error.
func (s *Store) MarkSuperseded(ctx context.Context, by, rbID string, superseded map[string]int64) error {
	for _, job := range sortedJobs(superseded) {
		if job == by {
			continue
		}
		if err := s.markSuperseded(ctx, job, by, rbID, superseded[job]); err != nil {
			return fmt.Errorf("mark job %s superseded by the rollback of %s: %w", job, by, err)
		}
	}
	return nil
}

// markSuperseded records that rollback rbID of job by deleted n documents of job id, which
// then reports state superseded. Recording the same rollback twice changes nothing. A job the
// store does not know (its documents were written without a recorded job) is left alone.
func (s *Store) markSuperseded(ctx context.Context, id, by, rbID string, n int64) error {
	if !schemas.ValidKey(id) {
		return nil
	}
	rec, rev, err := s.load(ctx, id, readFresh)
	if errors.Is(err, ErrJobNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	_, err = s.modifyFrom(ctx, id, rec, rev, func(r *jobRecord) bool {
		if r.Superseded == nil {
			r.Superseded = &Superseded{}
		}
		if slices.ContainsFunc(r.Superseded.By, func(b SupersededBy) bool { return b.Rollback == rbID }) {
			return false
		}
		r.Superseded.Documents += n
		if len(r.Superseded.By) < MaxSupersededJobs {
			r.Superseded.By = append(r.Superseded.By, SupersededBy{JobID: by, Rollback: rbID, Documents: n, At: s.now().UTC()})
		}
		return true
	})
	return err
}

// Reopen starts a new generation of job id, rolled back or superseded, so that its file
// loads again: the record keeps its id, env and file, forgets its progress, seal, rollback
// and supersession, and counts the generation. A job in any other state is returned as it is
// (a concurrent Reopen got there first: both publish the same generation, deduplicated).
// ErrJobNotFound for an unknown job.
func (s *Store) Reopen(ctx context.Context, id string) (Job, error) {
	if _, _, err := s.load(ctx, id, readFresh); err != nil {
		return Job{}, err
	}
	return s.modify(ctx, id, func(r *jobRecord) bool {
		if !r.State.Reloadable() || (r.Rollback != nil && r.Rollback.State == "requested") {
			return false
		}
		from, gen := r.State, r.Generation+1
		*r = jobRecord{Job: Job{
			JobID: r.JobID, Env: r.Env, File: r.File, Format: r.Format, SourceJobID: r.SourceJobID,
			State: JobPending, CreatedAt: s.now().UTC(), Generation: gen, ReopenedFrom: from,
		}}
		return true
	})
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
