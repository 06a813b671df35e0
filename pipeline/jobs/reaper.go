package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ReaperConfig configures RunJobReaper.
type ReaperConfig struct {
	// After is how long an unsealed job may go without an update before it is failed. Default
	// 10 minutes: a loader touches the jobs it publishes every minute (loaderTouchEvery), and
	// workers update a job with every batch they write.
	After time.Duration
	// Every is how often the jobs are scanned. Default 1 minute. A scan reads every job record.
	Every time.Duration
	// Census, if set, receives what each successful scan counted (the job-state metrics). It
	// runs on the reaper's goroutine and must not block.
	Census func(Census)
}

// Census is what one scan of the jobs bucket counted.
type Census struct {
	// ByState counts the jobs in each state, after the scan's reaping.
	ByState map[State]int
	// Stalled is the longest time an unfinished job (not State.Done) had gone without an
	// update at the scan; 0 without one.
	Stalled time.Duration
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
		_, census, err := jobs.reap(ctx, cfg.After)
		if err != nil && onErr != nil && ctx.Err() == nil {
			onErr(err)
		}
		if err == nil && cfg.Census != nil {
			cfg.Census(census)
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
	reaped, _, err := s.reap(ctx, after)
	return reaped, err
}

// reap is Reap, also returning the census of the scan: a reaped job counts as failed.
func (s *Store) reap(ctx context.Context, after time.Duration) ([]string, Census, error) {
	stale := func(r *jobRecord) bool {
		return !r.Sealed && r.Failure == nil && s.now().Sub(r.UpdatedAt) > after
	}
	census := Census{ByState: map[State]int{}}
	var candidates []string
	was := map[string]State{}
	if err := s.eachJob(ctx, func(rec *jobRecord) {
		census.ByState[rec.State]++
		if stale(rec) {
			candidates = append(candidates, rec.JobID)
			was[rec.JobID] = rec.State
		} else if !rec.State.Done() {
			census.Stalled = max(census.Stalled, s.now().Sub(rec.UpdatedAt))
		}
	}); err != nil {
		return nil, census, fmt.Errorf("reap jobs: %w", err)
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
			census.ByState[was[key]]--
			census.ByState[JobFailed]++
		}
	}
	return reaped, census, errors.Join(errs...)
}
