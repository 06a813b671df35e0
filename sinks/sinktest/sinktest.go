// Package sinktest is the conformance suite every document sink passes. A sink's own test
// calls Run with the guarantees the sink declares in Features and a constructor; the suite
// writes through WriteDocs and checks what is really stored through GetDoc.
//
// The suite compares stored documents semantically (a sink may reorder keys or add fields
// such as "_id"), except the "content" string, which must come back byte-exact.
package sinktest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/document"
)

// Sink is what the suite calls on a document sink: the write path and a read-back.
// Implementations must be safe for concurrent use.
type Sink interface {
	// WriteDocs has the contract of pipeline.DocSink.WriteDocs.
	WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error)
	// GetDoc returns the stored document with id in collection, or an error that wraps
	// Features.NotFound when there is none.
	GetDoc(ctx context.Context, collection, id string) (json.RawMessage, error)
}

// Features declares what the sink under test guarantees.
type Features struct {
	// NotFound is the sentinel GetDoc wraps for a missing document (matched with errors.Is).
	// Required.
	NotFound error
	// MaxBatch is the largest WriteDocs call the sink accepts in one call, for example 1000
	// for the embedded store and 100 for Astra's insertMany. Optional; 0 means 100.
	MaxBatch int
	// VersionGuard says the sink honours document.Doc.Version: a write older than the stored
	// version is skipped and reported as success. Without it the version tests are skipped.
	VersionGuard bool
	// Collection is the collection the suite writes to. Optional; "" means "sinktest_chunks".
	// Every subtest uses its own document ids (with a per-Run random part), so a sink may
	// share one backend between subtests and between runs.
	Collection string
}

const (
	defaultMaxBatch   = 100
	defaultCollection = "sinktest_chunks"
	// concurrentWriters is the number of goroutines in the concurrency test.
	concurrentWriters = 16
)

// Run runs the conformance suite as subtests of t. newSink is called once per subtest, from
// the test goroutine; it may return a fresh sink or a shared one, and registers its own
// cleanup with t.Cleanup. Run fails t at once when Features is unusable.
func Run(t *testing.T, f Features, newSink func(t *testing.T) Sink) {
	t.Helper()
	if f.NotFound == nil {
		t.Fatal("sinktest: Features.NotFound is required")
	}
	if f.MaxBatch < 0 {
		t.Fatalf("sinktest: Features.MaxBatch is %d, want >= 0", f.MaxBatch)
	}
	if f.MaxBatch == 0 {
		f.MaxBatch = defaultMaxBatch
	}
	if f.Collection == "" {
		f.Collection = defaultCollection
	}
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce) // crypto/rand.Read never fails (it panics instead)
	s := suite{f: f, newSink: newSink, nonce: hex.EncodeToString(nonce)}

	tests := []struct {
		name string
		run  func(t *testing.T, s suite)
	}{
		{"WriteAndReadBack", testWriteAndReadBack},
		{"IdempotentRewrite", testIdempotentRewrite},
		{"ReplaceWhenContentChanged", testReplaceWhenContentChanged},
		{"VersionGuard", testVersionGuard},
		{"PartialBatchFailure", testPartialBatchFailure},
		{"OutcomesLength", testOutcomesLength},
		{"DuplicateIDsInBatch", testDuplicateIDsInBatch},
		{"MaxBatch", testMaxBatch},
		{"UnicodeAndControlChars", testUnicode},
		{"ConcurrentWriters", testConcurrentWriters},
		{"MissingDoc", testMissingDoc},
		{"CancelledContext", testCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, s) })
	}
}

type suite struct {
	f       Features
	newSink func(t *testing.T) Sink
	nonce   string
}

// id returns a document id unique to this Run, subtest and n.
func (s suite) id(t *testing.T, n int) string {
	return fmt.Sprintf("st_%s_%s_%04d", s.nonce, sanitize(t.Name()), n)
}

// sanitize keeps ids short and free of the '/' that subtest names contain.
func sanitize(name string) string {
	out := make([]byte, 0, len(name))
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			out = append(out, c)
		default:
			out = append(out, '_')
		}
	}
	if len(out) > 60 {
		out = out[len(out)-60:]
	}
	return string(out)
}

// chunk builds a chunk-like document with the given content.
func chunk(t *testing.T, id string, version uint64, content string) document.Doc {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"_id":      id,
		"chunk_id": id,
		"content":  content,
		"metadata": map[string]any{"page": 3, "section": "Conditions", "tags": []string{"a", "b"}},
		"stage":    "raw",
	})
	if err != nil {
		t.Fatalf("marshal body for %s: %v", id, err)
	}
	return document.Doc{ID: id, Version: version, Body: body}
}

// write calls WriteDocs and fails t unless the call and every document succeeded.
func write(t *testing.T, ctx context.Context, sink Sink, coll string, docs []document.Doc) {
	t.Helper()
	outcomes, err := sink.WriteDocs(ctx, coll, docs)
	if err != nil {
		t.Fatalf("WriteDocs(%d docs): %v", len(docs), err)
	}
	if len(outcomes) != len(docs) {
		t.Fatalf("WriteDocs(%d docs) returned %d outcomes", len(docs), len(outcomes))
	}
	for i, o := range outcomes {
		if o != nil {
			t.Fatalf("WriteDocs: document %d (%s): %v", i, docs[i].ID, o)
		}
	}
}

// assertStored fails t unless the stored document with want.ID matches want.Body: every
// top-level field of want is present with an equal value, and "content" is byte-exact.
func assertStored(t *testing.T, ctx context.Context, sink Sink, coll string, want document.Doc) {
	t.Helper()
	got, err := sink.GetDoc(ctx, coll, want.ID)
	if err != nil {
		t.Fatalf("GetDoc(%s): %v", want.ID, err)
	}
	if err := sameDoc(got, want.Body); err != nil {
		t.Fatalf("GetDoc(%s): %v\n got: %s\nwant: %s", want.ID, err, got, want.Body)
	}
}

// assertMissing fails t unless GetDoc reports id as not found.
func assertMissing(t *testing.T, ctx context.Context, sink Sink, f Features, coll, id string) {
	t.Helper()
	got, err := sink.GetDoc(ctx, coll, id)
	if !errors.Is(err, f.NotFound) {
		t.Fatalf("GetDoc(%s) = %s, %v; want an error wrapping %v", id, got, err, f.NotFound)
	}
}

// sameDoc reports how got differs from want, or nil. Extra fields in got are allowed.
func sameDoc(got, want []byte) error {
	var g, w map[string]any
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Errorf("stored body is not a JSON object: %w", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		return fmt.Errorf("expected body is not a JSON object: %w", err)
	}
	for k, wv := range w {
		gv, ok := g[k]
		if !ok {
			return fmt.Errorf("field %q missing", k)
		}
		if k == "content" {
			gs, gok := gv.(string)
			ws, _ := wv.(string)
			if !gok || gs != ws {
				return fmt.Errorf("content differs:\n got %+q\nwant %+q", gv, ws)
			}
			continue
		}
		if !reflect.DeepEqual(gv, wv) {
			return fmt.Errorf("field %q = %v, want %v", k, gv, wv)
		}
	}
	return nil
}

func testWriteAndReadBack(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	docs := make([]document.Doc, 10)
	for i := range docs {
		docs[i] = chunk(t, s.id(t, i), 1, fmt.Sprintf("Chunk %d: A blinded creature can’t see — “½” • −1.", i))
	}
	write(t, ctx, sink, s.f.Collection, docs)
	for _, d := range docs {
		assertStored(t, ctx, sink, s.f.Collection, d)
	}
}

func testIdempotentRewrite(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	docs := make([]document.Doc, 5)
	for i := range docs {
		docs[i] = chunk(t, s.id(t, i), 7, fmt.Sprintf("redelivered chunk %d", i))
	}
	for range 3 {
		write(t, ctx, sink, s.f.Collection, docs)
		for _, d := range docs {
			assertStored(t, ctx, sink, s.f.Collection, d)
		}
	}
}

func testReplaceWhenContentChanged(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	tests := []struct {
		name     string
		versions [2]uint64
	}{
		{"higher version", [2]uint64{1, 2}},
		{"same version", [2]uint64{4, 4}},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := s.id(t, n)
			old := chunk(t, id, tt.versions[0], "old content")
			write(t, ctx, sink, s.f.Collection, []document.Doc{old})
			assertStored(t, ctx, sink, s.f.Collection, old)
			replaced := chunk(t, id, tt.versions[1], "new content, changed")
			write(t, ctx, sink, s.f.Collection, []document.Doc{replaced})
			assertStored(t, ctx, sink, s.f.Collection, replaced)
		})
	}
}

func testVersionGuard(t *testing.T, s suite) {
	if !s.f.VersionGuard {
		t.Skip("sink does not declare VersionGuard")
	}
	ctx := t.Context()
	sink := s.newSink(t)
	id, other := s.id(t, 0), s.id(t, 1)
	v5 := chunk(t, id, 5, "version five")
	write(t, ctx, sink, s.f.Collection, []document.Doc{v5})

	// An older version is skipped and still reported as success, in a batch with a
	// neighbour that is written.
	v3 := chunk(t, id, 3, "version three (stale redelivery)")
	neighbour := chunk(t, other, 3, "neighbour")
	write(t, ctx, sink, s.f.Collection, []document.Doc{v3, neighbour})
	assertStored(t, ctx, sink, s.f.Collection, v5)
	assertStored(t, ctx, sink, s.f.Collection, neighbour)

	v7 := chunk(t, id, 7, "version seven")
	write(t, ctx, sink, s.f.Collection, []document.Doc{v7})
	assertStored(t, ctx, sink, s.f.Collection, v7)

	// Older again, after the newer one.
	v6 := chunk(t, id, 6, "version six (late)")
	write(t, ctx, sink, s.f.Collection, []document.Doc{v6})
	assertStored(t, ctx, sink, s.f.Collection, v7)
}

func testPartialBatchFailure(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	tests := []struct {
		name string
		body string
	}{
		{"array", `[1,2,3]`},
		{"string", `"just a string"`},
		{"null", `null`},
		{"truncated", `{"_id":"x","content":"cut`},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs := make([]document.Doc, 5)
			for i := range docs {
				docs[i] = chunk(t, s.id(t, n*10+i), 1, fmt.Sprintf("neighbour %d", i))
			}
			bad := 2
			docs[bad].Body = json.RawMessage(tt.body)
			outcomes, err := sink.WriteDocs(ctx, s.f.Collection, docs)
			if err != nil {
				t.Fatalf("WriteDocs failed as a whole because of one bad document: %v", err)
			}
			if len(outcomes) != len(docs) {
				t.Fatalf("got %d outcomes for %d docs", len(outcomes), len(docs))
			}
			for i, o := range outcomes {
				switch {
				case i == bad && o == nil:
					t.Fatalf("document %d with body %s: outcome nil, want a permanent error", i, tt.body)
				case i == bad && !fault.IsPermanent(o):
					t.Fatalf("document %d with body %s: outcome %v is not permanent", i, tt.body, o)
				case i != bad && o != nil:
					t.Fatalf("neighbour %d failed: %v", i, o)
				}
			}
			for i, d := range docs {
				if i == bad {
					assertMissing(t, ctx, sink, s.f, s.f.Collection, d.ID)
					continue
				}
				assertStored(t, ctx, sink, s.f.Collection, d)
			}
		})
	}
}

func testOutcomesLength(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	for _, n := range []int{0, 1, 3, 17} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			docs := make([]document.Doc, n)
			for i := range docs {
				docs[i] = chunk(t, s.id(t, i), 1, "outcomes")
			}
			if n > 1 {
				docs[n-1].Body = json.RawMessage(`[]`) // a rejected doc still has its outcome
			}
			outcomes, err := sink.WriteDocs(ctx, s.f.Collection, docs)
			if err != nil {
				t.Fatalf("WriteDocs(%d docs): %v", n, err)
			}
			if len(outcomes) != n {
				t.Fatalf("WriteDocs(%d docs) returned %d outcomes", n, len(outcomes))
			}
		})
	}
}

func testDuplicateIDsInBatch(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	dup, other := s.id(t, 0), s.id(t, 1)
	first := chunk(t, dup, 1, "first copy of the duplicate")
	middle := chunk(t, other, 1, "unrelated")
	last := chunk(t, dup, 1, "last copy of the duplicate wins")
	write(t, ctx, sink, s.f.Collection, []document.Doc{first, middle, last})
	assertStored(t, ctx, sink, s.f.Collection, last)
	assertStored(t, ctx, sink, s.f.Collection, middle)
}

func testMaxBatch(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	docs := make([]document.Doc, s.f.MaxBatch)
	for i := range docs {
		docs[i] = chunk(t, s.id(t, i), 1, fmt.Sprintf("batch member %d of %d", i, len(docs)))
	}
	write(t, ctx, sink, s.f.Collection, docs)
	for _, d := range docs {
		assertStored(t, ctx, sink, s.f.Collection, d)
	}
}

func testUnicode(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	tests := []struct {
		name    string
		content string
	}{
		{"NUL", "before\x00after\x00"},
		{"CRLF", "line one\r\nline two\r\n"},
		{"lone CR", "carriage\rreturn"},
		{"C0 controls", "bel\a bs\b tab\t vt\v ff\f esc\x1b[31mred\x1b[0m us\x1f del\x7f"},
		{"bidi controls", "rlm\u200f rle\u202bשלום\u202c rlo\u202eabc\u202c lri\u2067x\u2069 مرحبا"},
		{"emoji ZWJ", "family 👨‍👩‍👧‍👦 skin 👋🏽 flag 🇳🇴 keycap 1️⃣ dragon 🐉"},
		{"line separators", "ls\u2028ps\u2029nel\u0085"},
		{"BOM and ZWSP", "\ufeffbom zw\u200bsp"},
		{"combining and CJK", "e\u0301 n\u0303 漢字 𠀋"},
		{"HTML-sensitive", `<script>&amp;"quoted"\back\slash</script>`},
		{"only whitespace-like", " \t\r\n"},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := chunk(t, s.id(t, n), 1, tt.content)
			write(t, ctx, sink, s.f.Collection, []document.Doc{d})
			assertStored(t, ctx, sink, s.f.Collection, d)
		})
	}

	// The same text as a producer may send it: raw UTF-8 instead of escapes, and astral
	// characters as surrogate-pair escapes.
	t.Run("raw JSON text", func(t *testing.T) {
		id := s.id(t, 100)
		body := fmt.Sprintf(`{"_id":%q,"content":"raw ’ 🐉 \ud83d\udc09 \u0000 \u2028 end"}`, id)
		d := document.Doc{ID: id, Version: 1, Body: json.RawMessage(body)}
		write(t, ctx, sink, s.f.Collection, []document.Doc{d})
		got, err := sink.GetDoc(ctx, s.f.Collection, id)
		if err != nil {
			t.Fatalf("GetDoc(%s): %v", id, err)
		}
		var doc struct {
			Content string `json:"content"`
		}
		if err := json.Unmarshal(got, &doc); err != nil {
			t.Fatalf("stored body %s: %v", got, err)
		}
		const want = "raw ’ 🐉 🐉 \x00 \u2028 end"
		if doc.Content != want {
			t.Fatalf("content = %+q, want %+q", doc.Content, want)
		}
	})
}

func testConcurrentWriters(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	const ids = 12
	body := func(id string, writer int) document.Doc {
		return chunk(t, id, uint64(writer+1), fmt.Sprintf("written by writer %d", writer))
	}
	// Every writer writes every id with its own version, in a rotated order so that writers
	// collide on different ids at different times.
	batches := make([][]document.Doc, concurrentWriters)
	for w := range batches {
		for k := range ids {
			batches[w] = append(batches[w], body(s.id(t, (k+w)%ids), w))
		}
	}
	errs := make(chan error, concurrentWriters)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w, batch := range batches {
		wg.Go(func() {
			<-start
			// Half a batch at a time, so one writer's docs land in several calls.
			for _, part := range [][]document.Doc{batch[:ids/2], batch[ids/2:]} {
				outcomes, err := sink.WriteDocs(ctx, s.f.Collection, part)
				if err != nil {
					errs <- fmt.Errorf("writer %d: WriteDocs: %w", w, err)
					return
				}
				if len(outcomes) != len(part) {
					errs <- fmt.Errorf("writer %d: %d outcomes for %d docs", w, len(outcomes), len(part))
					return
				}
				for i, o := range outcomes {
					if o != nil {
						errs <- fmt.Errorf("writer %d: document %s: %w", w, part[i].ID, o)
						return
					}
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	for k := range ids {
		id := s.id(t, k)
		if s.f.VersionGuard {
			assertStored(t, ctx, sink, s.f.Collection, body(id, concurrentWriters-1))
			continue
		}
		// Without a version guard any writer may win, but the document is one writer's,
		// whole.
		got, err := sink.GetDoc(ctx, s.f.Collection, id)
		if err != nil {
			t.Fatalf("GetDoc(%s): %v", id, err)
		}
		matched := false
		for w := range concurrentWriters {
			if sameDoc(got, body(id, w).Body) == nil {
				matched = true
				break
			}
		}
		if !matched {
			t.Fatalf("GetDoc(%s) = %s, which no writer wrote", id, got)
		}
	}
}

func testMissingDoc(t *testing.T, s suite) {
	ctx := t.Context()
	sink := s.newSink(t)
	assertMissing(t, ctx, sink, s.f, s.f.Collection, s.id(t, 0))
	// A document in the collection does not make another id exist.
	write(t, ctx, sink, s.f.Collection, []document.Doc{chunk(t, s.id(t, 1), 1, "present")})
	assertMissing(t, ctx, sink, s.f, s.f.Collection, s.id(t, 2))
}

func testCancelledContext(t *testing.T, s suite) {
	sink := s.newSink(t)
	existing := chunk(t, s.id(t, 0), 1, "stored before the cancelled call")
	write(t, t.Context(), sink, s.f.Collection, []document.Doc{existing})

	docs := []document.Doc{chunk(t, existing.ID, 2, "must not replace the stored content")}
	for i := 1; i < 20; i++ {
		docs = append(docs, chunk(t, s.id(t, i), 1, "must not be written"))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	outcomes, err := sink.WriteDocs(ctx, s.f.Collection, docs)
	if err == nil {
		t.Fatalf("WriteDocs with a cancelled context succeeded (outcomes %v), want an error", outcomes)
	}
	if fault.IsPermanent(err) {
		t.Fatalf("WriteDocs with a cancelled context: %v is permanent, want transient", err)
	}
	assertStored(t, t.Context(), sink, s.f.Collection, existing)
	for _, d := range docs[1:] {
		assertMissing(t, t.Context(), sink, s.f, s.f.Collection, d.ID)
	}
}
