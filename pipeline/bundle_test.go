package pipeline_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
)

// Chunk bundles, issue 12: the loader packs chunks many to a message; every item keeps its own
// outcome (written, counted, dead-lettered, replayed) as if it were its own message.

// bundleFile writes an NDJSON file of n chunks with ids fmt(idf, i) and content "Chunk i …",
// after applying edit (which may change any record) to each, and returns its path.
func bundleFile(t testing.TB, n int, idf string, edit func(i int, rec map[string]any)) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		rec := map[string]any{"chunk_id": fmt.Sprintf(idf, i), "content": fmt.Sprintf("Chunk %d: the quick brown fox.", i), "stage": "raw"}
		if edit != nil {
			edit(i, rec)
		}
		line, _ := json.Marshal(rec)
		b.Write(line)
		b.WriteByte('\n')
	}
	p := filepath.Join(t.TempDir(), "bundle.jsonl")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// chunkMessages counts the messages in the chunk stream by their Sluice-Schema header. Every
// bundle must match chunk-bundle.v1 and hold at most maxBytes (0: the 1 MiB limit).
func (e *testEnv) chunkMessages(t testing.TB, maxBytes ...int) map[string]int {
	t.Helper()
	ctx := context.Background()
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	limit := schemas.DefaultMaxMessageBytes
	if len(maxBytes) > 0 && maxBytes[0] > 0 {
		limit = maxBytes[0]
	}
	info, err := e.streams.Chunks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := e.streams.Chunks.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out[m.Header.Get(schemas.HeaderSchema)]++
		if m.Header.Get(schemas.HeaderSchema) == string(schemas.ChunkBundle) {
			if err := v.Validate(schemas.ChunkBundle, m.Data); err != nil || len(m.Data) > limit {
				t.Fatalf("bundle %d (%d bytes, limit %d): %v", seq, len(m.Data), limit, err)
			}
			// The worker weighs it by Sluice-Items: it must say how many chunks it holds.
			var b struct {
				Items []json.RawMessage `json:"items"`
			}
			if err := json.Unmarshal(m.Data, &b); err != nil || m.Header.Get(schemas.HeaderItems) != strconv.Itoa(len(b.Items)) {
				t.Fatalf("bundle %d holds %d items, header %s says %q (%v)", seq, len(b.Items), schemas.HeaderItems, m.Header.Get(schemas.HeaderItems), err)
			}
		}
	}
	return out
}

func (e *testEnv) bundleLoader(t testing.TB, mod func(*intake.LoaderConfig)) *intake.Loader {
	t.Helper()
	cfg := intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dir, "spool")}
	if mod != nil {
		mod(&cfg)
	}
	l, err := intake.NewLoader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// publishRaw publishes one message on the dev chunk subject with headers h (name, value, …).
func (e *testEnv) publishRaw(t testing.TB, data string, h ...string) {
	t.Helper()
	m := nats.NewMsg(schemas.ChunkSubject("dev"))
	m.Data = []byte(data)
	for i := 0; i+1 < len(h); i += 2 {
		m.Header.Set(h[i], h[i+1])
	}
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// A bundled load lands every chunk exactly once with exact job counts, in as many messages
// as the limits allow; of two items with one id the later wins, whether they share a bundle or
// not; one-chunk-per-message loading (the old contract) gives the same result.
func TestBundledLoadLandsEveryChunkOnce(t *testing.T) {
	const n = 1000
	// Item 950 repeats item 3's id (another bundle), item 12 repeats item 10's (the same
	// bundle); item 500 is too large to share a 2 KiB bundle.
	edit := func(i int, rec map[string]any) {
		switch i {
		case 950:
			rec["chunk_id"], rec["content"] = "all_0003", "LATE across bundles"
		case 12:
			rec["chunk_id"], rec["content"] = "all_0010", "LATE within a bundle"
		case 500:
			rec["content"] = strings.Repeat("big ", 1000)
		}
	}
	tests := []struct {
		name    string
		mod     func(*intake.LoaderConfig)
		bundles int // at least
		singles int
		bytes   int // bundle size limit
	}{
		{name: "default bundles", bundles: 10, singles: 0},
		{name: "small bundles", mod: func(c *intake.LoaderConfig) { c.BundleItems = 7; c.BundleBytes = 2 << 10 }, bundles: 143, singles: 1, bytes: 2 << 10},
		{name: "one chunk per message", mod: func(c *intake.LoaderConfig) { c.SingleChunkMessages = true }, bundles: 0, singles: n},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			e.startWorker(t, e.store, nil)
			job := e.loadWith(t, e.bundleLoader(t, tt.mod), bundleFile(t, n, "all_%04d", edit), false)
			if job.State != jobs.JobCompleted || job.Published != n || job.Written != n || job.DeadLettered != 0 {
				t.Fatalf("job = %s published %d written %d dead %d, want completed %d/%d/0", job.State, job.Published, job.Written, job.DeadLettered, n, n)
			}
			if got := e.count(t); got != n-2 {
				t.Fatalf("%d documents, want %d (two ids repeated)", got, n-2)
			}
			for id, want := range map[string]string{"all_0003": "LATE across bundles", "all_0010": "LATE within a bundle"} {
				if got := e.doc(t, id)["content"]; got != want {
					t.Errorf("%s content %q, want the later item's %q", id, got, want)
				}
			}
			msgs := e.chunkMessages(t, tt.bytes)
			if msgs[string(schemas.ChunkBundle)] < tt.bundles || msgs[string(schemas.Chunk)] != tt.singles ||
				(tt.bundles > 0 && msgs[string(schemas.ChunkBundle)] > tt.bundles+2) {
				t.Fatalf("chunk stream holds %v, want ≈%d bundles and %d single chunks", msgs, tt.bundles, tt.singles)
			}
			// A later message wins over every item of an earlier bundle, and an old-style
			// single-chunk message is still accepted.
			e.publishRaw(t, `{"chunk_id":"all_0099","content":"AFTER, one chunk per message"}`, schemas.HeaderSchema, string(schemas.Chunk))
			waitFor(t, "the single-chunk message", func() bool { return e.doc(t, "all_0099")["content"] == "AFTER, one chunk per message" })
		})
	}
}

// One item a store refuses, in a bundle, is dead-lettered alone with its index and reason; its
// neighbours are written, the bundle is acked, the job counts it as dead-lettered; its dead
// letter is a single-chunk message and replays alone.
func TestBundlePoisonItemDeadLetteredAloneAndReplays(t *testing.T) {
	e := newEnv(t, envOpts{})
	sink := newFaultySink(e.store)
	sink.reject["poison_042"] = true
	e.startWorker(t, sink, nil)
	const n = 150
	job := e.loadWith(t, e.bundleLoader(t, nil), bundleFile(t, n, "poison_%03d", nil), false)
	if job.State != jobs.JobCompletedWithErrors || job.Written != n-1 || job.DeadLettered != 1 {
		t.Fatalf("job = %s written %d dead %d, want completed_with_errors %d/1", job.State, job.Written, job.DeadLettered, n-1)
	}
	if got := e.count(t); got != n-1 {
		t.Fatalf("%d documents, want %d", got, n-1)
	}
	waitFor(t, "every bundle acked", func() bool { return e.pendingAcks(t) == 0 })
	dls := e.deadLetters(t)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1: %v", len(dls), dls)
	}
	dl := dls[0]
	raw, _ := json.Marshal(dl)
	var env schemas.DeadLetterEnvelope
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	if env.Item == nil || *env.Item != 42 || env.JobID != job.JobID || env.Error.Class != "rejected" ||
		!strings.HasSuffix(env.ID, "-i42") || env.Headers[schemas.HeaderItem][0] != "42" ||
		env.Headers[schemas.HeaderSchema][0] != string(schemas.Chunk) {
		t.Fatalf("dead letter = id %s item %v job %s class %s headers %v", env.ID, env.Item, env.JobID, env.Error.Class, env.Headers)
	}
	var rec map[string]any
	if err := json.Unmarshal(env.Payload, &rec); err != nil || rec["chunk_id"] != "poison_042" || len(rec) != 3 {
		t.Fatalf("dead letter payload %s (%v), want item 42's chunk alone", env.Payload, err)
	}
	// The store is fixed; the dead letter replays as one chunk and lands.
	sink.mu.Lock()
	delete(sink.reject, "poison_042")
	sink.mu.Unlock()
	store, err := dlq.New(dlq.Config{JS: e.js, Stream: e.streams.DLQ})
	if err != nil {
		t.Fatal(err)
	}
	res, err := store.Replay(context.Background(), dlq.ReplayRequest{IDs: []string{env.ID}})
	if err != nil || len(res.Replayed) != 1 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	waitFor(t, "the replayed item", func() bool { n, _ := e.store.CountDocs(context.Background(), "ttrpg_chunks_dev"); return n == 150 })
	if got := e.chunkMessages(t)[string(schemas.Chunk)]; got != 1 {
		t.Fatalf("the replay published %d single-chunk messages, want 1", got)
	}
	if got := sink.writesOf("poison_041") + sink.writesOf("poison_043"); got != 2 {
		t.Fatalf("neighbours written %d times, want once each", got)
	}
}

// A transient failure of some items of a bundle retries the bundle, and its redelivery writes
// only the failed items: every other item is written once, the job's counts are exact. On the
// last delivery an item still failing is dead-lettered alone (exhausted) and the bundle acked.
func TestBundlePartialTransientFailure(t *testing.T) {
	t.Run("retried items only", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		sink := newFaultySink(e.store)
		sink.failTimes["part_005"] = 2
		sink.failTimes["part_130"] = 1
		e.startWorker(t, sink, nil)
		const n = 200
		job := e.loadWith(t, e.bundleLoader(t, nil), bundleFile(t, n, "part_%03d", nil), false)
		if job.State != jobs.JobCompleted || job.Written != n || job.DeadLettered != 0 {
			t.Fatalf("job = %s written %d dead %d, want completed %d/0", job.State, job.Written, job.DeadLettered, n)
		}
		for i := range n {
			if got := sink.writesOf(fmt.Sprintf("part_%03d", i)); got != 1 {
				t.Errorf("part_%03d written %d times, want once", i, got)
			}
		}
		if got := e.count(t); got != n {
			t.Fatalf("%d documents, want %d", got, n)
		}
	})
	// Items 3 and 6 share an id; the first write of item 3 fails, item 6 lands, and the
	// bundle's redelivery writes item 3 again: the later item must still win (a document's
	// version orders items within a bundle, not only messages).
	t.Run("later duplicate wins over a retried earlier item", func(t *testing.T) {
		e := newEnv(t, envOpts{})
		sink := newFaultySink(e.store)
		sink.failTimes["dup_x"] = 1
		e.startWorker(t, sink, nil)
		job := e.loadWith(t, e.bundleLoader(t, nil), bundleFile(t, 10, "dup_%03d", func(i int, rec map[string]any) {
			switch i {
			case 3:
				rec["chunk_id"], rec["content"] = "dup_x", "EARLY"
			case 6:
				rec["chunk_id"], rec["content"] = "dup_x", "LATE"
			}
		}), false)
		if job.State != jobs.JobCompleted || job.Written != 10 {
			t.Fatalf("job = %s written %d", job.State, job.Written)
		}
		if got := e.doc(t, "dup_x")["content"]; got != "LATE" {
			t.Fatalf("dup_x content %q, want the later item's LATE", got)
		}
	})
	t.Run("exhausted item dead-lettered alone", func(t *testing.T) {
		e := newEnv(t, envOpts{maxDeliver: 2})
		sink := newFaultySink(e.store)
		sink.failTimes["ex_007"] = 100
		e.startWorker(t, sink, nil)
		const n = 20
		job := e.loadWith(t, e.bundleLoader(t, nil), bundleFile(t, n, "ex_%03d", nil), false)
		if job.State != jobs.JobCompletedWithErrors || job.Written != n-1 || job.DeadLettered != 1 {
			t.Fatalf("job = %s written %d dead %d, want completed_with_errors %d/1", job.State, job.Written, job.DeadLettered, n-1)
		}
		waitFor(t, "the bundle acked", func() bool { return e.pendingAcks(t) == 0 })
		dls := e.deadLetters(t)
		if len(dls) != 1 || dls[0]["item"] != float64(7) || dls[0]["error"].(map[string]any)["class"] != "exhausted" {
			t.Fatalf("dead letters %v, want item 7 exhausted alone", dls)
		}
	})
}

// A loader that published every bundle and died before recording its seal publishes the same
// bundles again when the file is resubmitted: the broker drops every one (same Nats-Msg-Id),
// and the job completes with exact counts.
func TestBundleRepublishIsDeduplicated(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	path := bundleFile(t, 450, "again_%03d", nil)
	l := e.bundleLoader(t, func(c *intake.LoaderConfig) { c.BundleItems = 40 })
	res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	before := e.chunkMessages(t)
	if before[string(schemas.ChunkBundle)] != 12 {
		t.Fatalf("first publish stored %v, want 12 bundles", before)
	}
	// The crash: the job store never heard of the job.
	for _, k := range []string{res.JobID, res.JobID + ".issues"} {
		_ = e.streams.JobsKV.Purge(ctx, k)
	}
	res2, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
	if err != nil || res2.JobID != res.JobID || res2.Existing {
		t.Fatalf("second load: %+v, %v", res2, err)
	}
	if after := e.chunkMessages(t); after[string(schemas.ChunkBundle)] != 12 || len(after) != 1 {
		t.Fatalf("after the republish the stream holds %v, want the same 12 bundles", after)
	}
	e.startWorker(t, e.store, nil)
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil || job.State != jobs.JobCompleted || job.Written != 450 || job.Published != 450 {
		t.Fatalf("job = %+v, %v", job, err)
	}
}

// Bundles from other producers: a malformed bundle is dead-lettered whole (it cannot be
// split); a bad chunk in a good bundle fails only itself; items without a job are written.
func TestHandMadeBundles(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	b := string(schemas.ChunkBundle)
	tests := []struct {
		name    string
		payload string
		job     string
		whole   bool // dead-lettered as a whole
		items   []int
	}{
		{name: "not JSON", payload: `{"items":[`, whole: true},
		{name: "no items", payload: `{"items":[]}`, whole: true},
		{name: "indexes out of order", payload: `{"items":[{"index":2,"chunk":{"id":"h_o1","text":"x"}},{"index":1,"chunk":{"id":"h_o2","text":"y"}}]}`, whole: true},
		{name: "bad job id", payload: `{"items":[{"index":0,"chunk":{"id":"h_j","text":"x"}}]}`, job: "bad job", whole: true},
		{name: "empty content item", payload: `{"items":[{"index":0,"chunk":{"id":"h_e0","text":"ok"}},{"index":4,"chunk":{"id":"h_e4","text":""}},{"index":9,"chunk":{"id":"h_e9","text":"ok"}}]}`, job: "hand_e", items: []int{4}},
		{name: "chunk not an object", payload: `{"items":[{"index":0,"chunk":[1,2]},{"index":1,"chunk":{"id":"h_n1","text":"ok"}}]}`, items: []int{0}},
	}
	want := 0
	for _, tt := range tests {
		h := []string{schemas.HeaderSchema, b}
		if tt.job != "" {
			h = append(h, schemas.HeaderJob, tt.job)
		}
		e.publishRaw(t, tt.payload, h...)
		want += max(1, len(tt.items))
	}
	waitFor(t, "every hand-made bundle settled", func() bool { return e.pendingAcks(t) == 0 && len(e.deadLetters(t)) == want })
	dls := e.deadLetters(t)
	byItem := map[string]map[string]any{}
	for _, dl := range dls {
		h := dl["headers"].(map[string]any)
		key := "whole"
		if it, ok := h[schemas.HeaderItem]; ok {
			key = it.([]any)[0].(string)
		}
		byItem[fmt.Sprint(dl["stream_seq"])+"/"+key] = dl
	}
	for i, tt := range tests {
		seq := fmt.Sprint(i + 1)
		if tt.whole {
			if _, ok := byItem[seq+"/whole"]; !ok {
				t.Errorf("%s: no whole dead letter (have %v)", tt.name, keys(byItem))
			}
			continue
		}
		for _, it := range tt.items {
			dl, ok := byItem[fmt.Sprintf("%s/%d", seq, it)]
			if !ok || dl["error"].(map[string]any)["class"] != "validation" {
				t.Errorf("%s: item %d: dead letter %v", tt.name, it, dl)
			}
		}
	}
	for _, id := range []string{"h_e0", "h_e9", "h_n1"} {
		if e.doc(t, id)["content"] != "ok" {
			t.Errorf("%s not written", id)
		}
	}
	if job, err := e.jobs.Get(context.Background(), "hand_e"); err == nil {
		if job.Written != 2 || job.DeadLettered != 1 {
			t.Errorf("job hand_e written %d dead %d, want 2/1", job.Written, job.DeadLettered)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// A resubmission cut differently (here a smaller byte limit) must not let an earlier item win:
// item 39 is large, item 3 and item 45 share an id. The first load cuts [0–39] [40–79]; the
// second, with a byte limit below item 39, cuts [0–38], item 39 alone, [40–79]. Were bundles
// named by their first and last index alone, the second [40–79] would be dropped as a
// duplicate of the first one, stored before the re-cut [0–38], and item 3 would win over
// item 45.
func TestBundleRecutResubmissionKeepsLaterWins(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	path := bundleFile(t, 80, "recut_%03d", func(i int, rec map[string]any) {
		switch i {
		case 3:
			rec["chunk_id"], rec["content"] = "recut_x", "EARLY"
		case 39:
			rec["content"] = strings.Repeat("long ", 6000)
		case 45:
			rec["chunk_id"], rec["content"] = "recut_x", "LATE"
		}
	})
	res, err := e.bundleLoader(t, func(c *intake.LoaderConfig) { c.BundleItems = 40 }).Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.chunkMessages(t)[string(schemas.ChunkBundle)]; got != 2 {
		t.Fatalf("first load: %d bundles, want 2", got)
	}
	for _, k := range []string{res.JobID, res.JobID + ".issues"} {
		_ = e.streams.JobsKV.Purge(ctx, k)
	}
	if _, err := e.bundleLoader(t, func(c *intake.LoaderConfig) { c.BundleItems, c.BundleBytes = 40, 24<<10 }).Load(ctx, intake.LoadRequest{Env: "dev", Path: path}); err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.store, nil)
	job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	if err != nil || job.State != jobs.JobCompleted || job.Written != 80 {
		t.Fatalf("job = %+v, %v", job, err)
	}
	// Both loads are one job, whose 80 items the first load's bundles already cover: it
	// completes before the second load's bundles are all written. Read once every message is.
	for deadline := time.Now().Add(30 * time.Second); e.pendingAcks(t) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d chunk messages still pending after 30 s", e.pendingAcks(t))
		}
	}
	if got := e.doc(t, "recut_x")["content"]; got != "LATE" {
		t.Fatalf("recut_x content %.20q, want the later item's LATE", got)
	}
}
