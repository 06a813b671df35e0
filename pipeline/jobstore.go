package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// ErrJobNotFound is returned by JobStore.Get for an unknown job.
var ErrJobNotFound = errors.New("job not found")

// jobRecord is what the job KV bucket holds under the job id. Progress is kept as sets of item
// indexes, not counters, so recording the same item twice (a redelivery) changes nothing:
// counts are exact however often a message is delivered.
type jobRecord struct {
	Job
	WrittenSet ranges `json:"written_set,omitempty"`
	DeadSet    ranges `json:"dead_set,omitempty"`
}

// jobIssues is kept under "{job}.issues", written once at seal, so the hot record stays small.
type jobIssues struct {
	Rejections          []ItemIssue `json:"rejections,omitempty"`
	RejectionsTruncated bool        `json:"rejections_truncated,omitempty"`
	Warnings            []ItemIssue `json:"warnings,omitempty"`
}

// JobStore keeps job records in a JetStream KV bucket. Every change is a compare-and-set on the
// record's revision, so any number of workers may update one job at once. Safe for concurrent
// use; it does not own the bucket.
type JobStore struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewJobStore returns a store over kv (the bucket Provision creates).
func NewJobStore(kv jetstream.KeyValue) *JobStore {
	return &JobStore{kv: kv, now: time.Now}
}

// Get returns the job with its rejections and warnings, or ErrJobNotFound.
func (s *JobStore) Get(ctx context.Context, id string) (Job, error) {
	rec, _, err := s.load(ctx, id)
	if err != nil {
		return Job{}, err
	}
	job := rec.Job
	if e, err := s.kv.Get(ctx, id+".issues"); err == nil {
		var is jobIssues
		if err := json.Unmarshal(e.Value(), &is); err == nil {
			job.Rejections, job.RejectionsTruncated, job.Warnings = is.Rejections, is.RejectionsTruncated, is.Warnings
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Job{}, fmt.Errorf("read job %s issues: %w", id, err)
	}
	return job, nil
}

func (s *JobStore) load(ctx context.Context, id string) (*jobRecord, uint64, error) {
	if !schemas.ValidKey(id) {
		return nil, 0, fmt.Errorf("%w: %q is not a valid job id", ErrJobNotFound, id)
	}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrJobNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read job %s: %w", id, err)
	}
	var rec jobRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return &rec, e.Revision(), nil
}

// update applies fn to the job's record (a new one if absent) with compare-and-set, retrying
// on conflicting writers, and returns the job as stored.
func (s *JobStore) update(ctx context.Context, id string, fn func(*jobRecord)) (Job, error) {
	for attempt := 0; ; attempt++ {
		rec, rev, err := s.load(ctx, id)
		if errors.Is(err, ErrJobNotFound) {
			rec = &jobRecord{Job: Job{JobID: id, State: JobPending, CreatedAt: s.now().UTC()}}
		} else if err != nil {
			return Job{}, err
		}
		fn(rec)
		rec.settle(s.now().UTC())
		b, err := json.Marshal(rec)
		if err != nil {
			return Job{}, fmt.Errorf("encode job %s: %w", id, err)
		}
		if rev == 0 {
			_, err = s.kv.Create(ctx, id, b)
		} else {
			_, err = s.kv.Update(ctx, id, b, rev)
		}
		if err == nil {
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
	case r.Sealed && r.Written+r.DeadLettered >= r.Published:
		if r.Rejected+r.DeadLettered > 0 {
			r.State = JobCompletedWithErrors
		} else {
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

// Open records a job's open event. Opening twice is harmless.
func (s *JobStore) Open(ctx context.Context, ev schemas.JobOpen) (Job, error) {
	return s.update(ctx, ev.JobID, func(r *jobRecord) {
		r.Env = ev.Env
		r.File, r.Format, r.SourceJobID = ev.File, ev.Format, ev.SourceJobID
		if !ev.CreatedAt.IsZero() && (r.CreatedAt.IsZero() || ev.CreatedAt.Before(r.CreatedAt)) {
			r.CreatedAt = ev.CreatedAt.UTC()
		}
	})
}

// Seal records a job's seal event: its totals and issues. Sealing twice is harmless.
func (s *JobStore) Seal(ctx context.Context, ev schemas.JobSeal) (Job, error) {
	if len(ev.Rejections) > 0 || len(ev.Warnings) > 0 {
		is := jobIssues{RejectionsTruncated: ev.RejectionsTruncated}
		is.Rejections, is.Warnings = ev.Rejections, ev.Warnings
		b, err := json.Marshal(is)
		if err != nil {
			return Job{}, fmt.Errorf("encode job %s issues: %w", ev.JobID, err)
		}
		if _, err := s.kv.Put(ctx, ev.JobID+".issues", b); err != nil {
			return Job{}, fmt.Errorf("write job %s issues: %w", ev.JobID, err)
		}
	}
	return s.update(ctx, ev.JobID, func(r *jobRecord) {
		r.Env = ev.Env
		r.Sealed = true
		r.Total, r.Published, r.Rejected = ev.Total, ev.Published, ev.Rejected
	})
}

// Outcome is what became of one item of a job.
type Outcome int

// The item outcomes a worker records.
const (
	Written Outcome = iota + 1
	DeadLettered
)

// Mark is one item outcome to record.
type Mark struct {
	Job     string
	Item    int64
	Outcome Outcome
}

// record applies marks for one job in one compare-and-set.
func (s *JobStore) record(ctx context.Context, id string, marks []Mark) (Job, error) {
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
func (s *JobStore) Watch(ctx context.Context, id string, fn func(Job) bool) error {
	w, err := s.kv.Watch(ctx, id)
	if err != nil {
		return fmt.Errorf("watch job %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
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
