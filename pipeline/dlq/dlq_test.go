package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
)

func TestConfigValidate(t *testing.T) {
	_, err := dlq.New(dlq.Config{MaxScan: -1, AdvisoryStreams: []string{"a.b"}})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"JS is required", "Stream is required", "MaxScan -1", `AdvisoryStreams[0] "a.b"`} {
		if !contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func schemasValidate(env schemas.DeadLetterEnvelope) error {
	v, err := schemas.NewValidator()
	if err != nil {
		return err
	}
	b, err := json.Marshal(env)
	if err != nil {
		return err
	}
	return v.Validate(schemas.DeadLetter, b)
}

// TestListFiltersAndReplayAfterFix: a chunk the sink rejects is dead-lettered with its job,
// item and payload; every filter finds it or not; Get finds it after a restart; and once the
// cause is fixed, replay writes it exactly once and the job completes.
func TestListFiltersAndReplayAfterFix(t *testing.T) {
	e := newEnv(t)
	sink := newFaultySink(e.store, "rep_0002")
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 5, "rep_%04d"))
	if job.Written != 4 || job.DeadLettered != 1 || job.State != jobs.JobCompletedWithErrors {
		t.Fatalf("job = %+v, want 4 written, 1 dead-lettered", job)
	}
	ctx := context.Background()

	entries := e.all(t, e.dlq, dlq.Filter{})
	if len(entries) != 1 {
		t.Fatalf("%d entries, want 1", len(entries))
	}
	ent := entries[0]
	env := ent.Envelope
	if env.JobID != job.JobID || env.Subject != "sluice.v1.chunks.dev" || env.Error.Class != "rejected" ||
		env.Item == nil || *env.Item != 2 || !contains(string(env.Payload), "rep_0002") || ent.Seq == 0 || ent.StoredAt.IsZero() {
		t.Fatalf("entry = %+v", ent)
	}

	checkListFilters(t, e, job.JobID)

	// Get works from a fresh Store (as after a restart), and unknown ids are ErrNotFound.
	got, err := e.newStore(t).Get(ctx, env.ID)
	if err != nil || got.Seq != ent.Seq || got.Envelope.ID != env.ID {
		t.Fatalf("Get(%s) = %+v, %v", env.ID, got, err)
	}
	if _, err := e.dlq.Get(ctx, "SLUICE_CHUNKS-999999"); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("Get(unknown) err = %v, want ErrNotFound", err)
	}

	checkReplayAfterFix(t, e, sink, job.JobID, env)
}

// checkListFilters checks that each filter on its own, and all at once, lists the one dead
// letter of job jobID, and that each mismatching one lists none.
func checkListFilters(t *testing.T, e *testEnv, jobID string) {
	t.Helper()
	now := time.Now()
	tests := []struct {
		name string
		f    dlq.Filter
		want int
	}{
		{"job", dlq.Filter{Job: jobID}, 1},
		{"other job", dlq.Filter{Job: "nope"}, 0},
		{"subject", dlq.Filter{Subject: "sluice.v1.chunks.dev"}, 1},
		{"subject wildcard", dlq.Filter{Subject: "sluice.v1.chunks.*"}, 1},
		{"other subject", dlq.Filter{Subject: "sluice.v1.chunks.prod"}, 0},
		{"class", dlq.Filter{ErrorClass: "rejected"}, 1},
		{"other class", dlq.Filter{ErrorClass: "validation"}, 0},
		{"since before", dlq.Filter{Since: now.Add(-time.Hour)}, 1},
		{"since after", dlq.Filter{Since: now.Add(time.Hour)}, 0},
		{"until after", dlq.Filter{Until: now.Add(time.Hour)}, 1},
		{"until before", dlq.Filter{Until: now.Add(-time.Hour)}, 0},
		{"all fields", dlq.Filter{Job: jobID, Subject: "sluice.v1.chunks.dev", ErrorClass: "rejected", Since: now.Add(-time.Hour), Until: now.Add(time.Hour)}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.all(t, e.dlq, tc.f); len(got) != tc.want {
				t.Fatalf("%d entries, want %d", len(got), tc.want)
			}
		})
	}
}

// checkReplayAfterFix fixes the sink's cause of dead letter env (of job jobID, item 2, chunk
// rep_0002) and replays it.
func checkReplayAfterFix(t *testing.T, e *testEnv, sink *faultySink, jobID string, env schemas.DeadLetterEnvelope) {
	t.Helper()
	ctx := context.Background()
	// Fix the cause and replay: the document lands exactly once and the job moves the item
	// from dead-lettered to written.
	sink.fix("rep_0002")
	res, err := e.dlq.Replay(ctx, dlq.ReplayRequest{IDs: []string{env.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replayed) != 1 || len(res.Skipped) != 0 || len(res.Failed) != 0 || res.Replayed[0].Replay != 1 || res.Replayed[0].Seq == 0 {
		t.Fatalf("replay = %+v", res)
	}
	e.waitJob(t, jobID, func(j jobs.Job) bool {
		return j.Written == 5 && j.DeadLettered == 0 && j.State == jobs.JobCompleted
	})
	if n := sink.writesOf("rep_0002"); n != 1 {
		t.Fatalf("rep_0002 written %d times, want 1", n)
	}
	if _, err := e.store.GetDoc(ctx, "ttrpg_chunks_dev", "rep_0002"); err != nil {
		t.Fatalf("replayed document: %v", err)
	}
	if st := e.state(t, e.streams.DLQ); st.msgs != 0 {
		t.Fatalf("DLQ holds %d messages after replay, want 0", st.msgs)
	}
	// The replayed message carried the original headers, a new dedupe id and its replay count.
	chunk, err := e.streams.Chunks.GetMsg(ctx, res.Replayed[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if chunk.Header.Get(schemas.HeaderJob) != jobID || chunk.Header.Get(schemas.HeaderItem) != "2" ||
		chunk.Header.Get(dlq.HeaderReplay) != "1" || chunk.Header.Get(nats.MsgIdHdr) != res.Replayed[0].MsgID ||
		chunk.Header.Get(dlq.HeaderReplayOf) != env.Headers[nats.MsgIdHdr][0] || string(chunk.Data) != string(env.Payload) {
		t.Fatalf("replayed message headers %v", chunk.Header)
	}
	// Replaying the same id again finds nothing.
	res, err = e.dlq.Replay(ctx, dlq.ReplayRequest{IDs: []string{env.ID}})
	if err != nil || len(res.Replayed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != dlq.ReasonNotFound {
		t.Fatalf("second replay = %+v, %v", res, err)
	}
}

func TestReplayLoopGuard(t *testing.T) {
	e := newEnv(t)
	sink := newFaultySink(e.store, "loop_0001")
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 3, "loop_%04d"))
	ctx := context.Background()
	f := dlq.Filter{Job: job.JobID}
	ent := e.waitEntries(t, f, 1)[0]
	// Still broken: each replay dead-letters again with the next replay count.
	for round := 1; round <= 2; round++ {
		res, err := e.dlq.Replay(ctx, dlq.ReplayRequest{Filter: &f, MaxReplays: 2})
		if err != nil || len(res.Replayed) != 1 || res.Replayed[0].Replay != round {
			t.Fatalf("round %d: replay = %+v, %v", round, res, err)
		}
		var next dlq.Entry
		waitFor(t, "the replayed message to dead-letter again", func() bool {
			got := e.all(t, e.dlq, f)
			if len(got) == 1 && got[0].Envelope.ID != ent.Envelope.ID {
				next = got[0]
				return true
			}
			return false
		})
		if next.Envelope.Replays != round {
			t.Fatalf("round %d: new entry has replays %d", round, next.Envelope.Replays)
		}
		ent = next
	}
	before := e.state(t, e.streams.Chunks)
	res, err := e.dlq.Replay(ctx, dlq.ReplayRequest{Filter: &f, MaxReplays: 2})
	if err != nil || len(res.Replayed) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != dlq.ReasonLimit || res.Skipped[0].ID != ent.Envelope.ID {
		t.Fatalf("third replay = %+v, %v", res, err)
	}
	if after := e.state(t, e.streams.Chunks); after != before {
		t.Fatalf("chunk stream changed on a skipped replay: %+v -> %+v", before, after)
	}
	if got, err := e.dlq.Get(ctx, ent.Envelope.ID); err != nil || got.Envelope.Replays != 2 {
		t.Fatalf("entry after loop guard: %+v, %v", got, err)
	}
	if n := sink.writesOf("loop_0001"); n != 0 {
		t.Fatalf("loop_0001 written %d times", n)
	}
	if j := e.waitJob(t, job.JobID, func(jobs.Job) bool { return true }); j.DeadLettered != 1 || j.Written != 2 {
		t.Fatalf("job = %+v", j)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, newFaultySink(e.store, "dry_0000", "dry_0003"))
	job := e.load(t, writeChunks(t, e.dir, 4, "dry_%04d"))
	ctx := context.Background()
	f := dlq.Filter{Job: job.JobID}
	ents := e.waitEntries(t, f, 2)
	dlqBefore, chunksBefore := e.state(t, e.streams.DLQ), e.state(t, e.streams.Chunks)
	tests := []struct {
		name string
		req  dlq.ReplayRequest
	}{
		{"filter", dlq.ReplayRequest{Filter: &f, DryRun: true}},
		{"ids", dlq.ReplayRequest{IDs: []string{ents[0].Envelope.ID, ents[1].Envelope.ID, "SLUICE_CHUNKS-999"}, DryRun: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := e.dlq.Replay(ctx, tc.req)
			if err != nil || !res.DryRun || len(res.Replayed) != 2 || res.Replayed[0].Seq != 0 || res.Replayed[0].Replay != 1 {
				t.Fatalf("dry run = %+v, %v", res, err)
			}
			if len(tc.req.IDs) > 0 && (len(res.Skipped) != 1 || res.Skipped[0].Reason != dlq.ReasonNotFound) {
				t.Fatalf("dry run skipped = %+v", res.Skipped)
			}
			if d, c := e.state(t, e.streams.DLQ), e.state(t, e.streams.Chunks); d != dlqBefore || c != chunksBefore {
				t.Fatalf("dry run changed the streams: DLQ %+v -> %+v, chunks %+v -> %+v", dlqBefore, d, chunksBefore, c)
			}
		})
	}
}

func TestConcurrentReplaysRepublishOnce(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 10 {
		ids = append(ids, "rate_"+pad(i))
	}
	sink := newFaultySink(e.store, ids...)
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 10, "rate_%04d"))
	if job.DeadLettered != 10 {
		t.Fatalf("job = %+v", job)
	}
	ctx := context.Background()
	f := dlq.Filter{Job: job.JobID}
	e.waitEntries(t, f, 10)
	sink.fix(ids...)
	chunksBefore := e.state(t, e.streams.Chunks)

	// Two Stores (as two processes) and two calls on one Store replay the same entries at
	// once: each entry is republished exactly once.
	other := e.newStore(t)
	stores := []*dlq.Store{e.dlq, e.dlq, other}
	results := make([]dlq.ReplayResult, len(stores))
	errs := make([]error, len(stores))
	elapsed := make([]time.Duration, len(stores))
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			start := time.Now()
			results[i], errs[i] = s.Replay(ctx, dlq.ReplayRequest{Filter: &f, Rate: 20})
			elapsed[i] = time.Since(start)
		})
	}
	wg.Wait()
	replayed := map[string]int{}
	for i, r := range results {
		if errs[i] != nil || len(r.Failed) != 0 {
			t.Fatalf("replay %d: %+v, %v", i, r, errs[i])
		}
		for _, x := range r.Replayed {
			replayed[x.ID]++
		}
		for _, s := range r.Skipped {
			if s.Reason != dlq.ReasonInProgress && s.Reason != dlq.ReasonNotFound && s.Reason != dlq.ReasonDuplicate {
				t.Fatalf("unexpected skip %+v", s)
			}
		}
	}
	if len(replayed) != 10 {
		t.Fatalf("replayed %d distinct entries, want 10: %v", len(replayed), replayed)
	}
	for id, n := range replayed {
		if n != 1 {
			t.Fatalf("%s reported replayed %d times", id, n)
		}
	}
	// Whichever call replayed most must have waited for the rate: n replays at 20/s take at
	// least (n-1)/20 s.
	for i, r := range results {
		if n := len(r.Replayed); n > 1 {
			if min := time.Duration(n-1) * time.Second / 20; elapsed[i] < min-10*time.Millisecond {
				t.Fatalf("call %d replayed %d in %s, faster than 20/s allows (%s)", i, n, elapsed[i], min)
			}
		}
	}
	chunksAfter := e.state(t, e.streams.Chunks)
	if got := chunksAfter.last - chunksBefore.last; got != 10 {
		t.Fatalf("chunk stream grew by %d messages, want 10", got)
	}
	e.waitJob(t, job.JobID, func(j jobs.Job) bool { return j.Written == 10 && j.DeadLettered == 0 })
	for _, id := range ids {
		if n := sink.writesOf(id); n != 1 {
			t.Fatalf("%s written %d times", id, n)
		}
	}
	if st := e.state(t, e.streams.DLQ); st.msgs != 0 {
		t.Fatalf("DLQ holds %d messages", st.msgs)
	}
}

func TestReplayRateLimit(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 10 {
		ids = append(ids, "slow_"+pad(i))
	}
	sink := newFaultySink(e.store, ids...)
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 10, "slow_%04d"))
	f := dlq.Filter{Job: job.JobID}
	e.waitEntries(t, f, 10)
	sink.fix(ids...)
	start := time.Now()
	res, err := e.dlq.Replay(context.Background(), dlq.ReplayRequest{Filter: &f, Rate: 20})
	took := time.Since(start)
	if err != nil || len(res.Replayed) != 10 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	// A token bucket of 20/s with a burst of 1: 10 replays need at least 9/20 s.
	if took < 450*time.Millisecond-10*time.Millisecond {
		t.Fatalf("10 replays at 20/s took %s, want at least ~450ms", took)
	}
	e.waitJob(t, job.JobID, func(j jobs.Job) bool { return j.Written == 10 })
}

func pad(i int) string {
	s := strconv.Itoa(i)
	for len(s) < 4 {
		s = "0" + s
	}
	return s
}

func TestReplayLimitTruncates(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, newFaultySink(e.store, "lim_0000", "lim_0001", "lim_0002"))
	job := e.load(t, writeChunks(t, e.dir, 3, "lim_%04d"))
	f := dlq.Filter{Job: job.JobID}
	e.waitEntries(t, f, 3)
	res, err := e.dlq.Replay(context.Background(), dlq.ReplayRequest{Filter: &f, Limit: 2, DryRun: true})
	if err != nil || len(res.Replayed) != 2 || !res.Truncated {
		t.Fatalf("replay = %+v, %v", res, err)
	}
}

func TestDeletePurgeAndPaging(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 7 {
		ids = append(ids, "pg_"+pad(i))
	}
	e.startWorker(t, newFaultySink(e.store, ids...))
	job := e.load(t, writeChunks(t, e.dir, 7, "pg_%04d"))
	ctx := context.Background()
	all := e.waitEntries(t, dlq.Filter{}, 7)

	// Pages of 3, oldest first, cover every entry once.
	var seen []uint64
	cursor := ""
	for pages := 0; ; pages++ {
		p, err := e.dlq.List(ctx, dlq.Filter{Job: job.JobID}, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Entries) > 3 || pages > 4 {
			t.Fatalf("page %d: %d entries", pages, len(p.Entries))
		}
		for _, en := range p.Entries {
			seen = append(seen, en.Seq)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	if len(seen) != 7 {
		t.Fatalf("paging saw %d entries, want 7", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("pages not oldest first: %v", seen)
		}
	}

	badInput := []struct {
		name   string
		cursor string
		limit  int
		f      dlq.Filter
	}{
		{"bad cursor", "x", 0, dlq.Filter{}},
		{"limit too large", "", dlq.MaxLimit + 1, dlq.Filter{}},
		{"negative limit", "", -1, dlq.Filter{}},
		{"bad subject", "", 0, dlq.Filter{Subject: "a..b"}},
		{"until before since", "", 0, dlq.Filter{Since: time.Now(), Until: time.Now().Add(-time.Second)}},
	}
	for _, tc := range badInput {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.dlq.List(ctx, tc.f, tc.cursor, tc.limit); !errors.Is(err, dlq.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}

	// Delete one; deleting it again is ErrNotFound.
	if err := e.dlq.Delete(ctx, all[0].Envelope.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.newStore(t).Delete(ctx, all[0].Envelope.ID); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := e.dlq.Get(ctx, all[0].Envelope.ID); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	// Purge by a filter that matches nothing, then by the job.
	if n, err := e.dlq.Purge(ctx, dlq.Filter{ErrorClass: "auth"}); err != nil || n != 0 {
		t.Fatalf("purge auth = %d, %v", n, err)
	}
	if n, err := e.dlq.Purge(ctx, dlq.Filter{Job: job.JobID}); err != nil || n != 6 {
		t.Fatalf("purge job = %d, %v", n, err)
	}
	if st := e.state(t, e.streams.DLQ); st.msgs != 0 {
		t.Fatalf("DLQ holds %d after purge", st.msgs)
	}
}

// TestScanBoundGivesCursor: a selective filter over more entries than MaxScan returns short
// pages with a cursor instead of reading the whole stream in one call.
func TestScanBoundGivesCursor(t *testing.T) {
	e := newEnv(t)
	var ids []string
	for i := range 5 {
		ids = append(ids, "sb_"+pad(i))
	}
	e.startWorker(t, newFaultySink(e.store, ids...))
	job := e.load(t, writeChunks(t, e.dir, 5, "sb_%04d"))
	e.waitEntries(t, dlq.Filter{}, 5)
	s, err := dlq.New(dlq.Config{JS: e.js, Stream: e.streams.DLQ, MaxScan: 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.List(context.Background(), dlq.Filter{ErrorClass: "auth"}, "", 10)
	if err != nil || len(p.Entries) != 0 || p.NextCursor == "" {
		t.Fatalf("page = %+v, %v; want empty with a cursor", p, err)
	}
	if got := e.all(t, s, dlq.Filter{Job: job.JobID}); len(got) != 5 {
		t.Fatalf("bounded scans found %d entries, want 5", len(got))
	}
}
