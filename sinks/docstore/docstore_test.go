package docstore

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sinks/sinktest"
)

var _ pipeline.DocSink = (*Store)(nil)

const coll = "chunks_test"

// openStore opens a store on path and closes it when the test ends.
func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func tempStore(t *testing.T) *Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), "docs.db"))
}

func doc(id string, version uint64, content string) document.Doc {
	body, err := json.Marshal(map[string]any{"_id": id, "content": content})
	if err != nil {
		panic(err) // a map of strings always marshals
	}
	return document.Doc{ID: id, Version: version, Body: body}
}

// mustWrite writes docs and fails unless every document succeeded.
func mustWrite(t *testing.T, s *Store, collection string, docs ...document.Doc) {
	t.Helper()
	outcomes, err := s.WriteDocs(t.Context(), collection, docs)
	if err != nil {
		t.Fatalf("WriteDocs: %v", err)
	}
	for i, o := range outcomes {
		if o != nil {
			t.Fatalf("WriteDocs: document %d (%s): %v", i, docs[i].ID, o)
		}
	}
}

// stored returns the stored body and version of id, failing if it is missing.
func stored(t *testing.T, s *Store, id string) (string, int64) {
	t.Helper()
	var body string
	var version int64
	err := s.r.QueryRowContext(t.Context(),
		"SELECT body, version FROM documents WHERE collection = ? AND id = ?", coll, id).Scan(&body, &version)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return body, version
}

// totalChanges counts rows the writer connection has changed since it opened; the writer
// pool has exactly one connection, so it covers every write.
func totalChanges(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.w.QueryRowContext(t.Context(), "SELECT total_changes()").Scan(&n); err != nil {
		t.Fatalf("total_changes: %v", err)
	}
	return n
}

func TestConformance(t *testing.T) {
	sinktest.Run(t, sinktest.Features{
		NotFound:     ErrNotFound,
		MaxBatch:     1000,
		VersionGuard: true,
	}, func(t *testing.T) sinktest.Sink { return tempStore(t) })
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"ok", Config{Path: "a/b.db"}, nil},
		{"ok explicit readers", Config{Path: "a.db", MaxReadConns: 2}, nil},
		{"no path", Config{}, []string{"Path is required"}},
		{"question mark", Config{Path: "a?.db"}, []string{"must not contain '?'"}},
		{"all problems at once", Config{Path: "", MaxReadConns: -1}, []string{"Path is required", "MaxReadConns is -1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.wantErr)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Validate() = %q, want it to mention %q", err, want)
				}
			}
		})
	}
}

func TestOpenSetsUpFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nested", "dir", "docs.db")
	s := openStore(t, path)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database file: %v", err)
	}
	tests := []struct {
		name   string
		db     *sql.DB
		pragma string
		want   string
	}{
		{"journal mode", s.w, "journal_mode", "wal"},
		{"synchronous FULL", s.w, "synchronous", "2"},
		{"writer busy timeout", s.w, "busy_timeout", "5000"},
		{"reader busy timeout", s.r, "busy_timeout", "5000"},
		{"reader query only", s.r, "query_only", "1"},
		{"schema version", s.r, "user_version", "3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if err := tt.db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
			}
			if got != tt.want {
				t.Fatalf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
			}
		})
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), Config{Path: path})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open succeeded on a file with schema version 99")
	}
	if !strings.Contains(err.Error(), "schema version 99") {
		t.Fatalf("Open: %v, want it to name the schema version", err)
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs.db")
	s, err := Open(t.Context(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	want := document.Doc{ID: "kept", Version: 3, Body: json.RawMessage(`{ "z":1,  "_id":"kept" ,"content":"nul\u0000 crlf\r\n"}`)}
	mustWrite(t, s, coll, want, doc("other", 1, "x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s2 := openStore(t, path)
	got, err := s2.GetDoc(t.Context(), coll, "kept")
	if err != nil {
		t.Fatalf("GetDoc after reopen: %v", err)
	}
	if !bytes.Equal(got, want.Body) {
		t.Fatalf("GetDoc after reopen = %s, want the exact bytes %s", got, want.Body)
	}
	if n, err := s2.CountDocs(t.Context(), coll); err != nil || n != 2 {
		t.Fatalf("CountDocs after reopen = %d, %v; want 2", n, err)
	}
	// The version survived too: an older write is still refused.
	mustWrite(t, s2, coll, doc("kept", 2, "older"))
	if body, _ := stored(t, s2, "kept"); body != string(want.Body) {
		t.Fatalf("older write after reopen replaced the document: %s", body)
	}
}

// TestCrashAfterWrite runs a child process that writes, then kills itself with SIGKILL
// without closing the store (the WAL is never checkpointed). What WriteDocs reported as
// written must be there when the file is opened again.
func TestCrashAfterWrite(t *testing.T) {
	if path := os.Getenv("DOCSTORE_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "docs.db")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCrashAfterWrite$", "-test.count=1")
	cmd.Env = append(os.Environ(), "DOCSTORE_CRASH_CHILD="+path)
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want it killed by SIGKILL; output:\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("written\n")) {
		t.Fatalf("child did not report its write; output:\n%s", out)
	}
	s := openStore(t, path)
	n, err := s.CountDocs(t.Context(), coll)
	if err != nil || n != 500 {
		t.Fatalf("CountDocs after crash = %d, %v; want 500", n, err)
	}
	got, err := s.GetDoc(t.Context(), coll, "crash-0499")
	if err != nil {
		t.Fatalf("GetDoc after crash: %v", err)
	}
	if want := doc("crash-0499", 1, "survives a crash 499").Body; !bytes.Equal(got, want) {
		t.Fatalf("GetDoc after crash = %s, want %s", got, want)
	}
}

// crashChild writes 500 documents, reports success, and dies without Close.
func crashChild(path string) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: path})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	docs := make([]document.Doc, 500)
	for i := range docs {
		docs[i] = doc(fmt.Sprintf("crash-%04d", i), 1, fmt.Sprintf("survives a crash %d", i))
	}
	outcomes, err := s.WriteDocs(ctx, coll, docs)
	if err != nil || slices.ContainsFunc(outcomes, func(e error) bool { return e != nil }) {
		fmt.Println("write:", err, outcomes)
		os.Exit(2)
	}
	fmt.Println("written")
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // wait for the signal
}

func TestWriteDocsRejectsBadDocuments(t *testing.T) {
	s := tempStore(t)
	tests := []struct {
		name    string
		doc     document.Doc
		wantErr string
	}{
		{"empty id", document.Doc{ID: "", Body: json.RawMessage(`{"_id":""}`)}, "empty id"},
		{"array body", document.Doc{ID: "a1", Body: json.RawMessage(`["_id","a1"]`)}, "not a JSON object"},
		{"empty body", document.Doc{ID: "a2", Body: nil}, "not a JSON object"},
		{"invalid JSON", document.Doc{ID: "a3", Body: json.RawMessage(`{"_id":"a3",}`)}, "not a JSON object"},
		{"trailing data", document.Doc{ID: "a4", Body: json.RawMessage(`{"_id":"a4"} {}`)}, "invalid JSON"},
		{"raw control char", document.Doc{ID: "a5", Body: json.RawMessage("{\"_id\":\"a5\",\"c\":\"a\x00b\"}")}, "not a JSON object"},
		{"invalid UTF-8", document.Doc{ID: "a6", Body: json.RawMessage("{\"_id\":\"a6\",\"c\":\"\xff\"}")}, "not valid UTF-8"},
		{"no _id", document.Doc{ID: "a7", Body: json.RawMessage(`{"id":"a7"}`)}, `no "_id"`},
		{"nested _id only", document.Doc{ID: "a8", Body: json.RawMessage(`{"m":{"_id":"a8"}}`)}, `no "_id"`},
		{"_id differs", document.Doc{ID: "a9", Body: json.RawMessage(`{"_id":"other"}`)}, "differs"},
		{"_id case differs", document.Doc{ID: "b1", Body: json.RawMessage(`{"_ID":"b1"}`)}, `no "_id"`},
		{"_id number", document.Doc{ID: "90210", Body: json.RawMessage(`{"_id":90210}`)}, "want a string"},
		{"_id null", document.Doc{ID: "b2", Body: json.RawMessage(`{"_id":null}`)}, "want a string"},
		{"_id twice", document.Doc{ID: "b3", Body: json.RawMessage(`{"_id":"b3","_id":"b3"}`)}, "more than once"},
		{"version too high", document.Doc{ID: "b4", Version: 1 << 63, Body: json.RawMessage(`{"_id":"b4"}`)}, "version exceeds"},
	}
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := doc(fmt.Sprintf("before-%d", n), 1, "neighbour")
			after := doc(fmt.Sprintf("after-%d", n), 1, "neighbour")
			outcomes, err := s.WriteDocs(t.Context(), coll, []document.Doc{before, tt.doc, after})
			if err != nil {
				t.Fatalf("WriteDocs: %v", err)
			}
			if outcomes[0] != nil || outcomes[2] != nil {
				t.Fatalf("neighbours failed: %v, %v", outcomes[0], outcomes[2])
			}
			o := outcomes[1]
			if !fault.IsPermanent(o) || fault.ClassOf(o) != fault.Rejected {
				t.Fatalf("outcome = %v (class %q), want permanent %q", o, fault.ClassOf(o), fault.Rejected)
			}
			if !strings.Contains(o.Error(), tt.wantErr) {
				t.Fatalf("outcome = %q, want it to mention %q", o, tt.wantErr)
			}
			if _, err := s.GetDoc(t.Context(), coll, tt.doc.ID); !errors.Is(err, ErrNotFound) {
				t.Fatalf("rejected document is readable (err %v)", err)
			}
			for _, d := range []document.Doc{before, after} {
				if got, err := s.GetDoc(t.Context(), coll, d.ID); err != nil || !bytes.Equal(got, d.Body) {
					t.Fatalf("neighbour %s = %s, %v", d.ID, got, err)
				}
			}
		})
	}
}

func TestCollectionNames(t *testing.T) {
	s := tempStore(t)
	tests := []struct {
		name string
		coll string
		ok   bool
	}{
		{"simple", "chunks", true},
		{"underscores and digits", "chunks_dev_2", true},
		{"48 chars", "a" + strings.Repeat("b", 47), true},
		{"empty", "", false},
		{"49 chars", "a" + strings.Repeat("b", 48), false},
		{"leading digit", "1chunks", false},
		{"leading underscore", "_chunks", false},
		{"dash", "chunks-dev", false},
		{"dot", "chunks.dev", false},
		{"non-ASCII letter", "chünks", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcomes, err := s.WriteDocs(t.Context(), tt.coll, []document.Doc{doc("x", 1, "y")})
			if tt.ok {
				if err != nil || len(outcomes) != 1 || outcomes[0] != nil {
					t.Fatalf("WriteDocs(%q) = %v, %v; want success", tt.coll, outcomes, err)
				}
				return
			}
			if !fault.IsPermanent(err) || !errors.Is(err, ErrInvalidCollection) || outcomes != nil {
				t.Fatalf("WriteDocs(%q) = %v, %v; want a permanent ErrInvalidCollection", tt.coll, outcomes, err)
			}
			if _, err := s.GetDoc(t.Context(), tt.coll, "x"); !errors.Is(err, ErrInvalidCollection) {
				t.Fatalf("GetDoc(%q): %v, want ErrInvalidCollection", tt.coll, err)
			}
		})
	}
}

func TestWriteDocsVersionRules(t *testing.T) {
	type write struct {
		version uint64
		content string
	}
	tests := []struct {
		name        string
		writes      []write
		wantContent string
		wantVersion int64
	}{
		{"older skipped", []write{{5, "A"}, {3, "B"}}, "A", 5},
		{"newer replaces", []write{{5, "A"}, {6, "B"}}, "B", 6},
		{"equal version, new content replaces", []write{{5, "A"}, {5, "B"}}, "B", 5},
		{"newer identical content raises the version", []write{{5, "A"}, {7, "A"}}, "A", 7},
		// Regression guard: if an identical newer write left the version at 5, the late
		// redelivery of version 6 would overwrite the newest content.
		{"late intermediate version after identical newer write", []write{{5, "A"}, {7, "A"}, {6, "B"}}, "A", 7},
		{"version 0 is unconditional", []write{{5, "A"}, {0, "B"}}, "B", 0},
		{"version 0 identical is skipped", []write{{5, "A"}, {0, "A"}}, "A", 5},
	}
	s := tempStore(t)
	for n, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("v%d", n)
			for _, w := range tt.writes {
				mustWrite(t, s, coll, doc(id, w.version, w.content))
			}
			body, version := stored(t, s, id)
			if want := string(doc(id, 0, tt.wantContent).Body); body != want || version != tt.wantVersion {
				t.Fatalf("stored %s version %d, want %s version %d", body, version, want, tt.wantVersion)
			}
		})
	}
}

// TestIdenticalRewriteWritesNothing checks that a redelivered batch changes no row, so
// redelivery costs no write amplification.
func TestIdenticalRewriteWritesNothing(t *testing.T) {
	s := tempStore(t)
	docs := make([]document.Doc, 50)
	for i := range docs {
		docs[i] = doc(fmt.Sprintf("r%02d", i), 9, fmt.Sprintf("content %d", i))
	}
	start := totalChanges(t, s)
	mustWrite(t, s, coll, docs...)
	if got := totalChanges(t, s) - start; got != 50 {
		t.Fatalf("first write changed %d rows, want 50", got)
	}
	mid := totalChanges(t, s)
	mustWrite(t, s, coll, docs...)
	if got := totalChanges(t, s) - mid; got != 0 {
		t.Fatalf("identical rewrite changed %d rows, want 0", got)
	}
	docs[7] = doc(docs[7].ID, 9, "changed")
	mustWrite(t, s, coll, docs...)
	if got := totalChanges(t, s) - mid; got != 1 {
		t.Fatalf("rewrite with one changed document changed %d rows, want 1", got)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(t.Context(), Config{Path: filepath.Join(t.TempDir(), "docs.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
	}{
		{"WriteDocs", func() error { _, err := s.WriteDocs(ctx, coll, []document.Doc{doc("a", 1, "b")}); return err }},
		{"GetDoc", func() error { _, err := s.GetDoc(ctx, coll, "a"); return err }},
		{"CountDocs", func() error { _, err := s.CountDocs(ctx, coll); return err }},
		{"ListIDs", func() error { _, err := s.ListIDs(ctx, coll, "", 10); return err }},
		{"DeleteDocs", func() error { _, err := s.DeleteDocs(ctx, coll, []string{"a"}); return err }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrClosed) || fault.IsPermanent(err) {
				t.Fatalf("%s after Close: %v, want a transient ErrClosed", tt.name, err)
			}
		})
	}
}

func TestDeleteListCount(t *testing.T) {
	s := tempStore(t)
	ctx := t.Context()
	var want []string
	var docs []document.Doc
	for i := range 25 {
		id := fmt.Sprintf("d%02d", 24-i) // written out of order
		docs = append(docs, doc(id, 1, "x"))
		want = append(want, id)
	}
	slices.Sort(want)
	mustWrite(t, s, coll, docs...)
	mustWrite(t, s, "other", doc("d00", 1, "other collection"), doc("e1", 1, "y"), doc("e2", 1, "z"))

	counts := []struct {
		coll string
		want int64
	}{{coll, 25}, {"other", 3}, {"empty", 0}}
	for _, c := range counts {
		if n, err := s.CountDocs(ctx, c.coll); err != nil || n != c.want {
			t.Fatalf("CountDocs(%s) = %d, %v; want %d", c.coll, n, err, c.want)
		}
	}

	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("ListIDs paging does not end")
		}
		page, err := s.ListIDs(ctx, coll, after, 10)
		if err != nil {
			t.Fatalf("ListIDs after %q: %v", after, err)
		}
		if len(page) > 10 {
			t.Fatalf("ListIDs returned %d ids, limit 10", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1]
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ListIDs pages = %v, want %v", got, want)
	}
	if ids, err := s.ListIDs(ctx, coll, "", 0); err != nil || len(ids) != 25 {
		t.Fatalf("ListIDs with limit 0 = %d ids, %v; want all 25", len(ids), err)
	}

	n, err := s.DeleteDocs(ctx, coll, []string{"d03", "d10", "d10", "missing", "d24"})
	if err != nil || n != 3 {
		t.Fatalf("DeleteDocs = %d, %v; want 3", n, err)
	}
	if n, err := s.DeleteDocs(ctx, coll, nil); err != nil || n != 0 {
		t.Fatalf("DeleteDocs(nil) = %d, %v; want 0", n, err)
	}
	for _, id := range []string{"d03", "d10", "d24"} {
		if _, err := s.GetDoc(ctx, coll, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetDoc(%s) after delete: %v, want ErrNotFound", id, err)
		}
	}
	if n, err := s.CountDocs(ctx, coll); err != nil || n != 22 {
		t.Fatalf("CountDocs after delete = %d, %v; want 22", n, err)
	}
	// The same id in another collection is untouched.
	if _, err := s.GetDoc(ctx, "other", "d00"); err != nil {
		t.Fatalf("GetDoc(other/d00): %v", err)
	}
	if n, err := s.DeleteDocs(ctx, "other", []string{"d03"}); err != nil || n != 0 {
		t.Fatalf("DeleteDocs(other, d03) = %d, %v; want 0", n, err)
	}
}

// TestReadersDoNotWaitForWriter holds a write transaction open and reads: WAL readers see
// the last committed state without waiting for the writer.
func TestReadersDoNotWaitForWriter(t *testing.T) {
	s := tempStore(t)
	ctx := t.Context()
	committed := doc("held", 1, "committed")
	mustWrite(t, s, coll, committed)

	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	pending := doc("held", 2, "uncommitted")
	if _, err := tx.StmtContext(ctx, s.upsert).ExecContext(ctx, coll, "held", 2, string(pending.Body), []byte("h"), 0); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetDoc(ctx, coll, "held")
	if err != nil {
		t.Fatalf("GetDoc during an open write transaction: %v", err)
	}
	if !bytes.Equal(got, committed.Body) {
		t.Fatalf("GetDoc during an open write transaction = %s, want the committed %s", got, committed.Body)
	}
	if n, err := s.CountDocs(ctx, coll); err != nil || n != 1 {
		t.Fatalf("CountDocs during an open write transaction = %d, %v", n, err)
	}
}

// TestConcurrentReadersDuringWrites runs readers against a writer that keeps committing
// batches: every read sees whole documents, counts never go down, and nothing fails.
func TestConcurrentReadersDuringWrites(t *testing.T) {
	s := tempStore(t)
	ctx := t.Context()
	const batches, perBatch, readers = 12, 100, 4

	done := make(chan struct{})
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(done)
		if err := writeOverlappingBatches(ctx, s, batches, perBatch); err != nil {
			errs <- err
		}
	})
	for r := range readers {
		wg.Go(func() {
			if err := readWhileWriting(ctx, s, r, done); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := s.CountDocs(ctx, coll); err != nil || n != (batches-1)*perBatch/2+perBatch {
		t.Fatalf("final CountDocs = %d, %v; want %d", n, err, (batches-1)*perBatch/2+perBatch)
	}
}

// writeOverlappingBatches writes batches of perBatch documents whose ids overlap by half
// with the batch before (a new version of each rewritten one); it returns the first failure.
func writeOverlappingBatches(ctx context.Context, s *Store, batches, perBatch int) error {
	for b := range batches {
		docs := make([]document.Doc, perBatch)
		for i := range docs {
			// Ids overlap between batches (half new, half rewritten with a new version).
			id := fmt.Sprintf("c%05d", b*perBatch/2+i)
			docs[i] = doc(id, uint64(b+1), fmt.Sprintf("batch %d doc %d %s", b, i, strings.Repeat("·", 500)))
		}
		outcomes, err := s.WriteDocs(ctx, coll, docs)
		if err != nil {
			return fmt.Errorf("writer batch %d: %w", b, err)
		}
		for i, o := range outcomes {
			if o != nil {
				return fmt.Errorf("writer batch %d doc %d: %w", b, i, o)
			}
		}
	}
	return nil
}

// readWhileWriting is reader r of TestConcurrentReadersDuringWrites: until done is closed it
// counts the documents (the count must never drop), lists 20 ids and gets each of them whole.
// It returns the first failure, or that it read nothing.
func readWhileWriting(ctx context.Context, s *Store, r int, done <-chan struct{}) error {
	var last int64
	reads := 0
	for {
		select {
		case <-done:
			if reads == 0 {
				return fmt.Errorf("reader %d: no reads", r)
			}
			return nil
		default:
		}
		reads++
		n, err := s.CountDocs(ctx, coll)
		if err != nil {
			return fmt.Errorf("reader %d: CountDocs: %w", r, err)
		}
		if n < last {
			return fmt.Errorf("reader %d: count went from %d to %d", r, last, n)
		}
		last = n
		ids, err := s.ListIDs(ctx, coll, fmt.Sprintf("c%05d", reads%500), 20)
		if err != nil {
			return fmt.Errorf("reader %d: ListIDs: %w", r, err)
		}
		for _, id := range ids {
			body, err := s.GetDoc(ctx, coll, id)
			if err != nil {
				return fmt.Errorf("reader %d: GetDoc(%s): %w", r, id, err)
			}
			var d struct {
				ID      string `json:"_id"`
				Content string `json:"content"`
			}
			if err := json.Unmarshal(body, &d); err != nil || d.ID != id || !strings.HasPrefix(d.Content, "batch ") {
				return fmt.Errorf("reader %d: GetDoc(%s) = %s (%v)", r, id, body, err)
			}
		}
	}
}

func TestDeleteJobDocs(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "d.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var docs []document.Doc
	for i, job := range []string{"jA", "jA", "jB", ""} {
		id := fmt.Sprintf("d%d", i)
		body := fmt.Sprintf(`{"_id":%q,"content":"x"}`, id)
		if job != "" {
			body = fmt.Sprintf(`{"_id":%q,"content":"x","sluice_job":%q}`, id, job)
		}
		docs = append(docs, document.Doc{ID: id, Version: 1, Body: json.RawMessage(body)})
	}
	if _, err := s.WriteDocs(ctx, "c", docs); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteJobDocs(ctx, "c", "jA")
	if err != nil || n != 2 {
		t.Fatalf("deleted %d (%v), want 2", n, err)
	}
	if c, _ := s.CountDocs(ctx, "c"); c != 2 {
		t.Fatalf("%d documents left, want 2", c)
	}
	if _, err := s.GetDoc(ctx, "c", "d2"); err != nil {
		t.Fatalf("job B's document went too: %v", err)
	}
}
