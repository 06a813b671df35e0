package pipeline_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
)

const fixtures = "../testdata/chunks"

const nasty = fixtures + "/nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json"

// writeChunks writes n small Pass C records to a JSONL file and returns its path.
func writeChunks(t testing.TB, dir string, n int, idf string) string {
	t.Helper()
	var b strings.Builder
	for i := range n {
		rec := map[string]any{"chunk_id": fmt.Sprintf(idf, i), "content": fmt.Sprintf("Chunk %d: the quick brown fox jumps over the lazy dog.", i), "stage": "raw"}
		line, _ := json.Marshal(rec)
		b.Write(line)
		b.WriteByte('\n')
	}
	p := filepath.Join(dir, fmt.Sprintf("chunks-%d.jsonl", n))
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadEveryChunkFixture(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	tests := []struct {
		file    string
		total   int64
		written int64
	}{
		{"job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl", 400, 400},
		{"job_1757237159_c8623a8fec21_items.json", 400, 400},
		{"job_1757237159_c8623a8fec21_pass_d_vectors.jsonl", 100, 100},
		{"job_1757237159_c8623a8fec21_vectorized_chunks.json", 100, 100},
		{"job_1757237159_c8623a8fec21_pass_a_chunks.json", 400, 400},
		{"job_1757237159_c8623a8fec21_pass_b_enriched.json", 400, 400},
		{"passA_chunks.json", 20, 20},
		{"passB_enriched.json", 20, 20},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			_, job := e.load(t, filepath.Join(fixtures, tc.file), false)
			if job.State != jobs.JobCompleted || job.Total != tc.total || job.Written != tc.written || job.Rejected != 0 || job.DeadLettered != 0 {
				t.Fatalf("job = %+v, want completed with %d/%d written", job, tc.written, tc.total)
			}
		})
	}
	// Pass C, then items, then Pass D over the same ids: 400 chunk documents, 100 vectorized.
	// (Pass A/B and the mock files add their own ids.)
	raw, vec := 0, 0
	ids, err := e.store.ListIDs(context.Background(), "ttrpg_chunks_dev", "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !strings.Contains(id, "_c_") {
			continue
		}
		switch e.doc(t, id)["stage"] {
		case "raw":
			raw++
		case "vectorized":
			vec++
		}
	}
	if raw != 300 || vec != 100 {
		t.Fatalf("Pass C/items/Pass D documents: %d raw, %d vectorized; want 300 and 100", raw, vec)
	}
	// 400 _c_ + 400 _chunk_ (Pass A, then Pass B over the same ids) + 20 mock ids.
	if n := e.count(t); n != 820 {
		t.Fatalf("store holds %d documents, want 820", n)
	}
	// Content is kept byte for byte whichever escaping the file used.
	var first map[string]any
	line, _ := os.ReadFile(filepath.Join(fixtures, "job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl"))
	_ = json.Unmarshal([]byte(strings.SplitN(string(line), "\n", 2)[0]), &first)
	got := e.doc(t, first["chunk_id"].(string))
	if got["content"] != first["content"] {
		t.Fatalf("content of %s changed", first["chunk_id"])
	}
	if _, ok := got["embedding"]; !ok && got["stage"] == "vectorized" {
		t.Fatal("vectorized document lost its embedding")
	}
}

// TestNastyFileOutcomes loads the nasty file: each adversarial item is written, split or
// rejected as it should be, the later duplicate wins, and nothing is dead-lettered.
func TestNastyFileOutcomes(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	res, job := e.load(t, nasty, false)
	if job.State != jobs.JobCompletedWithErrors {
		t.Fatalf("state = %s, want completed_with_errors", job.State)
	}
	checkNastyRejections(t, res, job)
	// The later duplicate wins.
	var file struct {
		Chunks []json.RawMessage `json:"chunks"`
	}
	b, _ := os.ReadFile(nasty)
	if err := json.Unmarshal(b, &file); err != nil {
		t.Fatal(err)
	}
	var dup struct {
		ID      string `json:"id"`
		Content string `json:"content"`
	}
	_ = json.Unmarshal(file.Chunks[12], &dup)
	if got := e.doc(t, dup.ID)["content"]; got != dup.Content {
		t.Fatalf("%s holds %q, want the later item's content", dup.ID, got)
	}
	n := checkOverSplit(t, e, file.Chunks[24])
	sp := checkStraddleSplit(t, e, file.Chunks[30])
	// 30 normal ids (one replaced by the later duplicate), 3 whole adversarial items (lone
	// surrogate, emoji, control characters) and the parts of the two split items.
	if got, want := e.count(t), int64(30+3+n+sp); got != want {
		t.Fatalf("store holds %d documents, want %d", got, want)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}

// checkNastyRejections checks the nasty job's counts, which items it rejected and why, and the
// duplicate-id warning of its load result.
func checkNastyRejections(t *testing.T, res intake.LoadResult, job jobs.Job) {
	t.Helper()
	// 42 items: 30 normal + 5 accepted adversarial (surrogate, emoji, duplicate, control,
	// straddle) + split over_8000 — and 6 rejected: empty, deep, 2 MB, big array, no id,
	// numeric id.
	if job.Total != 42 || job.Rejected != 6 || job.Written != 36 || job.DeadLettered != 0 {
		t.Fatalf("job = total %d written %d rejected %d dead %d; want 42/36/6/0", job.Total, job.Written, job.Rejected, job.DeadLettered)
	}
	wantReject := map[int]string{13: "empty content", 14: "depth", 21: "content too large", 27: "array", 34: "no id", 37: "number"}
	for _, r := range job.Rejections {
		want, ok := wantReject[r.Index]
		if !ok {
			t.Errorf("unexpected rejection %+v", r)
			continue
		}
		if !strings.Contains(r.Reason, want) {
			t.Errorf("item %d rejected for %q, want a reason mentioning %q", r.Index, r.Reason, want)
		}
		delete(wantReject, r.Index)
	}
	if len(wantReject) > 0 {
		t.Errorf("items not rejected: %v", wantReject)
	}
	if len(res.Warnings) != 1 || res.Warnings[0].Index != 12 {
		t.Errorf("warnings = %+v, want the duplicate id at item 12", res.Warnings)
	}
}

// checkOverSplit checks that the over-8000-byte item is split into parts under 7000 bytes with
// deterministic ids, and returns how many.
func checkOverSplit(t *testing.T, e *testEnv, item json.RawMessage) int {
	t.Helper()
	var over struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(item, &over)
	parts := e.doc(t, over.ID)
	n := int(parts["parts"].(float64))
	if n < 2 {
		t.Fatalf("%s was not split: %v parts", over.ID, parts["parts"])
	}
	for p := 2; p <= n; p++ {
		d := e.doc(t, fmt.Sprintf("%s-part%d", over.ID, p))
		if c := d["content"].(string); len(c) > 7000 {
			t.Fatalf("part %d has %d bytes", p, len(c))
		}
	}
	return n
}

// checkStraddleSplit checks that the straddling item (9,403 bytes in one paragraph) is split
// too, with no character cut, and returns into how many parts.
func checkStraddleSplit(t *testing.T, e *testEnv, item json.RawMessage) int {
	t.Helper()
	var straddle struct {
		ID      string `json:"id"`
		Content string `json:"content"`
	}
	_ = json.Unmarshal(item, &straddle)
	sp := int(e.doc(t, straddle.ID)["parts"].(float64))
	var joined strings.Builder
	for p := 1; p <= sp; p++ {
		id := straddle.ID
		if p > 1 {
			id = fmt.Sprintf("%s-part%d", straddle.ID, p)
		}
		joined.WriteString(e.doc(t, id)["content"].(string))
	}
	for _, r := range []string{"’", "🐉", "—"} {
		if strings.Count(joined.String(), r) != strings.Count(straddle.Content, r) {
			t.Errorf("%q lost or broken across parts", r)
		}
	}
	return sp
}

func TestTransientFailuresRetryUntilWrittenOnce(t *testing.T) {
	e := newEnv(t, envOpts{maxDeliver: 5})
	sink := newFaultySink(e.store)
	sink.failTimes["retry_0003"] = 2
	e.startWorker(t, sink, nil)
	path := writeChunks(t, t.TempDir(), 10, "retry_%04d")
	_, job := e.load(t, path, false)
	if job.State != jobs.JobCompleted || job.Written != 10 {
		t.Fatalf("job = %+v", job)
	}
	if w := sink.writesOf("retry_0003"); w != 1 {
		t.Fatalf("retry_0003 written %d times, want exactly once", w)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
	waitFor(t, "every message acked", func() bool { return e.pendingAcks(t) == 0 })
}

func TestPermanentFailureDeadLettersOnlyThatMessage(t *testing.T) {
	e := newEnv(t, envOpts{})
	sink := newFaultySink(e.store)
	sink.reject["perm_0004"] = true
	e.startWorker(t, sink, nil)
	path := writeChunks(t, t.TempDir(), 10, "perm_%04d")
	_, job := e.load(t, path, false)
	if job.State != jobs.JobCompletedWithErrors || job.Written != 9 || job.DeadLettered != 1 {
		t.Fatalf("job = %+v", job)
	}
	for i := range 10 {
		id := fmt.Sprintf("perm_%04d", i)
		_, err := e.store.GetDoc(context.Background(), "ttrpg_chunks_dev", id)
		if (err == nil) == (i == 4) {
			t.Fatalf("%s: stored=%v", id, err == nil)
		}
	}
	dl := e.deadLetters(t)
	if len(dl) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dl))
	}
	d := dl[0]
	errObj := d["error"].(map[string]any)
	if errObj["class"] != "rejected" || !strings.Contains(errObj["message"].(string), "perm_0004") || errObj["sink"] != "docstore" {
		t.Fatalf("dead letter error = %v", errObj)
	}
	payload, _ := base64.StdEncoding.DecodeString(d["payload"].(string))
	if !strings.Contains(string(payload), `"perm_0004"`) || d["subject"] != "sluice.v1.chunks.dev" || d["item"].(float64) != 4 {
		t.Fatalf("dead letter does not hold the original message: %v", d)
	}
	v, _ := schemas.NewValidator()
	b, _ := json.Marshal(d)
	if err := v.Validate(schemas.DeadLetter, b); err != nil {
		t.Fatalf("dead letter breaks its schema: %v", err)
	}
	waitFor(t, "every message settled", func() bool { return e.pendingAcks(t) == 0 })
}

func TestExhaustedRetriesDeadLetter(t *testing.T) {
	e := newEnv(t, envOpts{maxDeliver: 3})
	sink := newFaultySink(e.store)
	sink.failTimes["ex_0001"] = 1000
	e.startWorker(t, sink, nil)
	_, job := e.load(t, writeChunks(t, t.TempDir(), 3, "ex_%04d"), false)
	if job.Written != 2 || job.DeadLettered != 1 {
		t.Fatalf("job = %+v", job)
	}
	dl := e.deadLetters(t)
	if len(dl) != 1 || dl[0]["error"].(map[string]any)["class"] != "exhausted" || dl[0]["attempts"].(float64) != 3 {
		t.Fatalf("dead letters = %v", dl)
	}
}

func TestResubmitCreatesNoDuplicates(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	path := filepath.Join(fixtures, "passA_chunks.json")
	first, _ := e.load(t, path, false)
	again, job := e.load(t, path, false)
	if !again.Existing || again.JobID != first.JobID || job.Written != 20 {
		t.Fatalf("resubmission = %+v, job %+v; want the existing job", again, job)
	}
	forced, job2 := e.load(t, path, true)
	if forced.Existing || forced.JobID == first.JobID || job2.Written != 20 {
		t.Fatalf("forced = %+v, job %+v", forced, job2)
	}
	if n := e.count(t); n != 20 {
		t.Fatalf("store holds %d documents after three loads, want 20", n)
	}
}

func TestChunkWithoutJobIsWritten(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	m := nats.NewMsg(schemas.ChunkSubject("dev"))
	m.Data = []byte(`{"chunk_id":"lonely","content":"a chunk published with the nats CLI"}`)
	if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "lonely chunk written", func() bool {
		_, err := e.store.GetDoc(context.Background(), "ttrpg_chunks_dev", "lonely")
		return err == nil
	})
}

func TestDrainFinishesInFlightWork(t *testing.T) {
	e := newEnv(t, envOpts{})
	sink := newFaultySink(e.store)
	sink.delay = 200 * time.Millisecond
	stop := e.startWorker(t, sink, nil)
	res, err := e.loader(t).Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 50, "drain_%04d")})
	if err != nil {
		t.Fatal(err)
	}
	// Stop as soon as the first write is under way.
	waitFor(t, "a write in flight", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls > 0 })
	if err := stop(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	// Whatever the drained worker counted as written is in the store.
	job, err := e.jobs.Get(context.Background(), res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	if job.Written == 0 || e.count(t) < job.Written {
		t.Fatalf("written %d, store holds %d: drain did not finish in-flight writes", job.Written, e.count(t))
	}
	// Nothing was stranded: what the drain did not finish it handed back, so a new worker
	// finishes the job well inside the 30 s AckWait a stranded message would wait for.
	start := time.Now()
	e.startWorker(t, e.store, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	final, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
	t.Logf("restart finished the job in %s", time.Since(start))
	if err != nil || final.Written != 50 {
		t.Fatalf("after restart: %+v, %v", final, err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestContractViolationsDeadLetter(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	for _, tc := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"job without item", map[string]string{schemas.HeaderJob: "j1"}, "Sluice-Item"},
		{"wrong schema header", map[string]string{schemas.HeaderSchema: "sluice.job.v1"}, "Sluice-Schema"},
	} {
		m := nats.NewMsg(schemas.ChunkSubject("dev"))
		m.Data = []byte(`{"chunk_id":"contract","content":"x"}`)
		for k, v := range tc.headers {
			m.Header.Set(k, v)
		}
		if _, err := e.js.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
		waitFor(t, tc.name+" dead-lettered", func() bool {
			for _, d := range e.deadLetters(t) {
				if strings.Contains(d["error"].(map[string]any)["message"].(string), tc.want) {
					return true
				}
			}
			return false
		})
	}
	if _, err := e.store.GetDoc(context.Background(), "ttrpg_chunks_dev", "contract"); err == nil {
		t.Fatal("a message breaking the contract was written")
	}
}

// A batch holding chunks of several environments, and one that can never be written, writes
// each chunk to its own environment's collection and dead-letters only the bad one.
func TestOneBatchSpansEnvironments(t *testing.T) {
	e := newEnv(t, envOpts{})
	ctx := context.Background()
	envs := []string{"dev", "test", "prod"}
	for i := range 30 {
		m := nats.NewMsg(schemas.ChunkSubject(envs[i%3]))
		m.Data = fmt.Appendf(nil, `{"chunk_id":"mixed%02d","content":"chunk %d"}`, i, i)
		if i == 13 {
			m.Data = []byte(`{"chunk_id":"mixed13","content":""}`) // empty content: permanent
		}
		if _, err := e.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Published before the worker starts, so its first batches mix the three environments.
	e.startWorker(t, e.store, nil)
	waitFor(t, "every chunk settled", func() bool { return e.pendingAcks(t) == 0 })
	for k, env := range envs {
		want := int64(10)
		if k == 13%3 {
			want = 9
		}
		n, err := e.store.CountDocs(ctx, "ttrpg_chunks_"+env)
		if err != nil || n != want {
			t.Fatalf("ttrpg_chunks_%s holds %d documents (%v), want %d", env, n, err, want)
		}
		for i := k; i < 30; i += 3 {
			_, err := e.store.GetDoc(ctx, "ttrpg_chunks_"+env, fmt.Sprintf("mixed%02d", i))
			if (err == nil) != (i != 13) {
				t.Fatalf("mixed%02d in %s: %v", i, env, err)
			}
		}
	}
	dls := e.deadLetters(t)
	if len(dls) != 1 || dls[0]["stream_seq"] != float64(14) || dls[0]["subject"] != schemas.ChunkSubject("test") {
		t.Fatalf("dead letters = %v, want only mixed13's (stream sequence 14, in test)", dls)
	}
}
