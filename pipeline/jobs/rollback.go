package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
)

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
