package jobs

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

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
