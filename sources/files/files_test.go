package files

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

const fixtures = "../../testdata/chunks"

// readAll reads every item, failing the test on a fatal error.
func readAll(t testing.TB, r *Reader) []Item {
	t.Helper()
	var items []Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			return items
		}
		if err != nil {
			t.Fatalf("after %d items: %v", len(items), err)
		}
		items = append(items, it)
	}
}

func openFixture(t testing.TB, name string) *Reader {
	t.Helper()
	r, err := Open(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestFixtures(t *testing.T) {
	const job = "job_1757237159_c8623a8fec21"
	tests := []struct {
		file     string
		format   Format
		items    int
		jobID    string
		rejected map[int]string // index -> error text
		dups     map[int]int    // index -> DuplicateOf
	}{
		{file: job + "_pass_c_raw_chunks.jsonl", format: JSONL, items: 400},
		{file: job + "_pass_d_vectors.jsonl", format: JSONL, items: 100},
		{file: job + "_vectorized_chunks.json", format: VectorizedChunks, items: 100, jobID: job},
		{file: job + "_items.json", format: Items, items: 400, jobID: job},
		{file: job + "_pass_a_chunks.json", format: Chunks, items: 400, jobID: job},
		{file: job + "_pass_b_enriched.json", format: EnrichedChunks, items: 400, jobID: job},
		{file: "passA_chunks.json", format: Chunks, items: 20, jobID: job},
		{file: "passB_enriched.json", format: EnrichedChunks, items: 20, jobID: job},
		{file: "nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json", format: Chunks, items: 42, jobID: "job_1757498642_0a06fa1bc2da",
			rejected: map[int]string{34: "item 34: no id", 37: "item 37: id must be a string, got number"},
			dups:     map[int]int{12: 7}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			r := openFixture(t, tc.file)
			items := readAll(t, r)
			if len(items) != tc.items {
				t.Errorf("%d items, want %d", len(items), tc.items)
			}
			if r.Format() != tc.format {
				t.Errorf("format %q, want %q", r.Format(), tc.format)
			}
			if tc.jobID != "" && r.SourceJobID() != tc.jobID {
				t.Errorf("job id %q, want %q", r.SourceJobID(), tc.jobID)
			}
			for i, it := range items {
				if it.Index != i {
					t.Errorf("item %d has index %d", i, it.Index)
				}
				want, rejected := tc.rejected[i]
				switch {
				case rejected:
					var ie *ItemError
					if !errors.As(it.Err, &ie) || ie.Index != i || it.Err.Error() != want {
						t.Errorf("item %d: error %v, want %q", i, it.Err, want)
					}
					if !fault.IsPermanent(it.Err) || fault.ClassOf(it.Err) != fault.Validation {
						t.Errorf("item %d: error class %q, permanent %v", i, fault.ClassOf(it.Err), fault.IsPermanent(it.Err))
					}
					if it.ID != "" {
						t.Errorf("item %d: rejected item has id %q", i, it.ID)
					}
				case it.Err != nil:
					t.Errorf("item %d: unexpected rejection %v", i, it.Err)
				case it.ID == "" || len(it.Record) == 0:
					t.Errorf("item %d: id %q, %d record bytes", i, it.ID, len(it.Record))
				}
				wantDup, dup := tc.dups[i]
				if !dup {
					wantDup = -1
				}
				if it.DuplicateOf != wantDup {
					t.Errorf("item %d: DuplicateOf %d, want %d", i, it.DuplicateOf, wantDup)
				}
			}
		})
	}
}

// The Pass C and Pass D files hold JSONL; without the name's hint the Reader must recognise
// them from the content and still read every line.
func TestJSONLRecognisedWithoutHint(t *testing.T) {
	for _, tc := range []struct {
		file  string
		items int
	}{
		{"job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl", 400},
		{"job_1757237159_c8623a8fec21_pass_d_vectors.jsonl", 100},
		{"relationship_edges.jsonl", 388 + 69},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(fixtures, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewReader(bytes.NewReader(data), Options{Name: tc.file})
			if err != nil {
				t.Fatal(err)
			}
			items := readAll(t, r)
			if len(items) != tc.items || r.Format() != JSONL || r.SourceJobID() != "" {
				t.Fatalf("%d items, format %q, job %q", len(items), r.Format(), r.SourceJobID())
			}
			hinted := readAll(t, openFixture(t, tc.file))
			for i := range items {
				if !bytes.Equal(items[i].Record, hinted[i].Record) || items[i].ID != hinted[i].ID {
					t.Fatalf("item %d differs from the hinted read", i)
				}
			}
		})
	}
}

func TestEnrichedConverted(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(fixtures, "job_1757237159_c8623a8fec21_pass_b_enriched.json"))
	if err != nil {
		t.Fatal(err)
	}
	var src struct {
		EnrichedChunks []struct {
			ChunkID         string `json:"chunk_id"`
			EnhancedContent string `json:"enhanced_content"`
		} `json:"enriched_chunks"`
	}
	if err := json.Unmarshal(data, &src); err != nil {
		t.Fatal(err)
	}
	items := readAll(t, openFixture(t, "job_1757237159_c8623a8fec21_pass_b_enriched.json"))
	if len(items) != len(src.EnrichedChunks) {
		t.Fatalf("%d items, want %d", len(items), len(src.EnrichedChunks))
	}
	for i, it := range items {
		var rec struct {
			ChunkID  string `json:"chunk_id"`
			Content  string
			Metadata struct {
				ChunkType string `json:"chunk_type"`
			}
			EnhancedContent *string `json:"enhanced_content"`
		}
		if err := json.Unmarshal(it.Record, &rec); err != nil {
			t.Fatal(err)
		}
		want := src.EnrichedChunks[i]
		if it.ID != want.ChunkID || rec.ChunkID != want.ChunkID || rec.Content != want.EnhancedContent ||
			rec.Metadata.ChunkType != "enriched" || rec.EnhancedContent != nil {
			t.Fatalf("item %d: id %q content %.30q chunk_type %q; want %q %.30q enriched",
				i, it.ID, rec.Content, rec.Metadata.ChunkType, want.ChunkID, want.EnhancedContent)
		}
	}
}

// The Pass C file escapes non-ASCII as \uXXXX; items.json holds raw UTF-8. After decoding,
// the content must be the same bytes.
func TestContentIdenticalAcrossEncodings(t *testing.T) {
	const job = "job_1757237159_c8623a8fec21"
	contents := func(file, idKey, textKey string) map[string]string {
		out := map[string]string{}
		for _, it := range readAll(t, openFixture(t, file)) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(it.Record, &m); err != nil {
				t.Fatal(err)
			}
			var s string
			if err := json.Unmarshal(m[textKey], &s); err != nil {
				t.Fatal(err)
			}
			out[it.ID] = s
		}
		return out
	}
	passC := contents(job+"_pass_c_raw_chunks.jsonl", "chunk_id", "content")
	items := contents(job+"_items.json", "id", "text")
	if len(passC) != 400 || len(items) != 400 {
		t.Fatalf("%d and %d ids", len(passC), len(items))
	}
	multibyte := 0
	for id, c := range passC {
		got, ok := items[id]
		if !ok {
			t.Fatalf("%s missing from items", id)
		}
		if got != c {
			t.Fatalf("%s: content differs between encodings", id)
		}
		if strings.ContainsFunc(c, func(r rune) bool { return r > 127 }) {
			multibyte++
		}
	}
	if multibyte != 146 {
		t.Errorf("%d chunks with multi-byte text, the README says 146", multibyte)
	}
}

func TestNonChunkFiles(t *testing.T) {
	for _, file := range []string{
		"graph_snapshot.json",
		"split_index.json",
		"alias_map.json",
		"job_1757237159_c8623a8fec21_pass_b_dictionary_delta.json",
		"job_1757237159_c8623a8fec21_graphstore_batch.json",
		"job_1757237159_c8623a8fec21_pass_c_graph.json",
	} {
		t.Run(file, func(t *testing.T) {
			r := openFixture(t, file)
			it, err := r.Next()
			if !errors.Is(err, ErrNoChunks) {
				t.Fatalf("got item %+v, error %v; want ErrNoChunks", it, err)
			}
			want := "no chunk array (chunks, vectorized_chunks, items, enriched_chunks) in " + file
			if err.Error() != want || !fault.IsPermanent(err) {
				t.Errorf("error %q (permanent %v), want %q", err, fault.IsPermanent(err), want)
			}
			if _, again := r.Next(); again != err {
				t.Errorf("second Next: %v, want the same fatal error", again)
			}
		})
	}
}

type want struct {
	id     string // "" for a rejected item
	reason string // substring of the rejection
	dupOf  int    // 1 + the index of the earlier item with the same id; 0: not a duplicate
}

// readerCase is a scenario of TestReaderInputs: the items read from input and how reading ends.
type readerCase struct {
	name   string
	input  string
	opts   Options
	format Format
	items  []want
	fatal  string // substring of a fatal error after the items
}

func TestReaderInputs(t *testing.T) {
	rec := func(id string) string { return `{"chunk_id":"` + id + `","content":"x"}` }
	tests := []readerCase{
		{name: "JSONL, blank lines, CRLF, no trailing newline",
			input:  "\n" + rec("a") + "\r\n\r\n   \n" + rec("b") + "\n\t\n" + rec("c"),
			format: JSONL, items: []want{{id: "a"}, {id: "b"}, {id: "c"}}},
		{name: "malformed line rejects only itself",
			input:  rec("a") + "\n" + `{"chunk_id":"b","content":` + "\n" + rec("c") + "\n",
			format: JSONL, items: []want{{id: "a"}, {reason: "item 1: invalid JSON"}, {id: "c"}}},
		{name: "malformed first line",
			input:  `{"chunk_id":"a",` + "\n" + rec("b") + "\n" + rec("c"),
			format: JSONL, items: []want{{reason: "item 0: invalid JSON"}, {id: "b"}, {id: "c"}}},
		{name: "malformed first line with hint",
			input:  `{"chunk_id":"a",` + "\n" + rec("b"),
			opts:   Options{Format: JSONL},
			format: JSONL, items: []want{{reason: "item 0: invalid JSON"}, {id: "b"}}},
		{name: "reader-level checks per line",
			input: `{"id":90210}` + "\n" + `[1]` + "\n" + `{"content":"x"}` + "\n" + `{"id":""}` + "\n" + `"s"` + "\n" + rec("a") + "\n" + rec("a"),
			items: []want{{reason: "item 0: id must be a string, got number"}, {reason: "item 1: item is not a JSON object (got array)"},
				{reason: "item 2: no id"}, {reason: "item 3: id is empty"}, {reason: "item 4: item is not a JSON object (got string)"},
				{id: "a"}, {id: "a", dupOf: 6}}, format: JSONL},
		{name: "a line over MaxItemBytes is rejected, the next is read",
			input: rec("a") + "\n" + `{"chunk_id":"big","content":"` + strings.Repeat("x", 200<<10) + `"}` + "\n" + rec("c"),
			opts:  Options{MaxItemBytes: 100 << 10}, format: JSONL,
			items: []want{{id: "a"}, {reason: "item 1: line exceeds maximum size of 102400 bytes"}, {id: "c"}}},
		{name: "one record, pretty-printed",
			input:  "{\n  \"chunk_id\": \"one\",\n  \"content\": \"x\"\n}\n",
			format: JSONL, items: []want{{id: "one"}}},
		{name: "items array with a bad item",
			input:  `{"job_id":"j","items":[{"id":"a","text":"x"},7,{"id":5},{"id":"a","text":"y"}],"environment":"dev"}`,
			format: Items, items: []want{{id: "a"}, {reason: "item 1: item is not a JSON object (got number)"}, {reason: "item 2: id must be a string"}, {id: "a", dupOf: 1}}},
		{name: "empty recognised arrays are skipped",
			input:  `{"chunks":[],"vectorized_chunks":null,"items":[{"id":"a"}],"enriched_chunks":[]}`,
			format: Items, items: []want{{id: "a"}}},
		{name: "empty chunks array",
			input:  `{"job_id":"j","chunks":[]}`,
			format: "", fatal: "no chunk array"},
		{name: "two non-empty arrays",
			input:  `{"chunks":[{"id":"a"}],"items":[{"id":"b"}]}`,
			format: Chunks, items: []want{{id: "a"}}, fatal: `both a "chunks" and a "items" array`},
		{name: "syntax error inside the array is fatal",
			input:  `{"chunks":[{"id":"a"},{"id":"b",]}`,
			format: Chunks, items: []want{{id: "a"}}, fatal: "item 1 at byte offset 21: invalid JSON"},
		{name: "truncated object form",
			input:  `{"chunks":[{"id":"a"},{"id":"b"`,
			format: Chunks, items: []want{{id: "a"}}, fatal: "input ends inside the top-level object"},
		{name: "data after the object",
			input:  `{"chunks":[{"id":"a"}]} x`,
			format: Chunks, items: []want{{id: "a"}}, fatal: "unexpected data after the top-level object"},
		{name: "array item over MaxItemBytes",
			input: `{"chunks":[{"id":"a"},{"id":"big","content":"` + strings.Repeat("x", 2000) + `"},{"id":"c"}]}`,
			opts:  Options{MaxItemBytes: 1000}, format: Chunks,
			items: []want{{id: "a"}, {reason: "item 1: item of 2025 bytes exceeds maximum size of 1000 bytes"}, {id: "c"}}},
		{name: "top-level array",
			input: `[{"id":"a"}]`, fatal: "a top-level JSON array is not a chunk file"},
		// An empty input was read as a JSONL file of no items, and loaded as a job of 0 items.
		{name: "empty input", input: "  \n", fatal: "the file is empty"},
		{name: "byte order mark", input: "\xEF\xBB\xBF" + `{"chunks":[{"id":"a"}]}`, format: Chunks, items: []want{{id: "a"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkReader(t, tc) })
	}
}

// checkReader reads tc.input to its end and checks each item, the fatal error if any and
// the format recognised.
func checkReader(t *testing.T, tc readerCase) {
	r, err := NewReader(strings.NewReader(tc.input), tc.opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []Item
	var fatal error
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fatal = err
			break
		}
		got = append(got, it)
	}
	if len(got) != len(tc.items) {
		t.Fatalf("%d items, want %d (fatal %v)", len(got), len(tc.items), fatal)
	}
	for i, w := range tc.items {
		it := got[i]
		if it.Index != i || it.ID != w.id {
			t.Errorf("item %d: index %d id %q, want id %q", i, it.Index, it.ID, w.id)
		}
		if w.reason == "" && it.Err != nil {
			t.Errorf("item %d: rejected: %v", i, it.Err)
		}
		if w.reason != "" && (it.Err == nil || !strings.Contains(it.Err.Error(), w.reason)) {
			t.Errorf("item %d: error %v, want %q", i, it.Err, w.reason)
		}
		if wantDup := w.dupOf - 1; it.DuplicateOf != wantDup {
			t.Errorf("item %d: DuplicateOf %d, want %d", i, it.DuplicateOf, wantDup)
		}
	}
	switch {
	case tc.fatal == "" && fatal != nil:
		t.Errorf("fatal error %v", fatal)
	case tc.fatal != "" && (fatal == nil || !strings.Contains(fatal.Error(), tc.fatal)):
		t.Errorf("fatal error %v, want %q", fatal, tc.fatal)
	case tc.fatal != "" && !fault.IsPermanent(fatal):
		t.Errorf("fatal error %v is not permanent", fatal)
	}
	if tc.format != "" && r.Format() != tc.format {
		t.Errorf("format %q, want %q", r.Format(), tc.format)
	}
}

func TestReadErrorIsNotPermanent(t *testing.T) {
	boom := errors.New("connection reset")
	r, err := NewReader(io.MultiReader(strings.NewReader(`{"chunks":[{"id":"a"},`), &failingReader{boom}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if it, err := r.Next(); err != nil || it.ID != "a" {
		t.Fatalf("first item: %+v, %v", it, err)
	}
	_, err = r.Next()
	if !errors.Is(err, boom) || fault.IsPermanent(err) {
		t.Fatalf("got %v (permanent %v), want the transient read error", err, fault.IsPermanent(err))
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestNewReaderOptions(t *testing.T) {
	if _, err := NewReader(strings.NewReader(""), Options{MaxItemBytes: -1}); err == nil {
		t.Error("negative MaxItemBytes accepted")
	}
	if _, err := Open(filepath.Join(fixtures, "does-not-exist.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Open of a missing file: %v", err)
	}
}

// genRecord writes a Pass C-like record of about 1 KB.
func genRecord(w io.Writer, i int, pad string) error {
	_, err := fmt.Fprintf(w, `{"chunk_id":"gen_%08d","content":"%s","stage":"raw","page_number":%d,"metadata":{"part_index":1,"element_index":%d}}`, i, pad, i%500, i)
	return err
}

// A 100 MB stream must be read in bounded memory, in both shapes.
func TestMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("reads 2 × 100 MB")
	}
	const n = 100_000 // about 1 KB each
	pad := strings.Repeat("Lorem ipsum dolor sit amet — ‘quoted’ ", 24)[:900]
	for _, tc := range []struct {
		name   string
		format Format
		gen    func(w io.Writer) error
	}{
		{"jsonl", JSONL, func(w io.Writer) error { return genJSONL(w, n, pad) }},
		{"object", Chunks, func(w io.Writer) error { return genObject(w, n, pad) }},
	} {
		t.Run(tc.name, func(t *testing.T) { checkMemoryBounded(t, tc.format, n, tc.gen) })
	}
}

// genJSONL writes n generated records as JSON lines.
func genJSONL(w io.Writer, n int, pad string) error {
	for i := range n {
		if err := genRecord(w, i, pad); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "\n"); err != nil {
			return err
		}
	}
	return nil
}

// genObject writes n generated records as the chunks array of a chunk file.
func genObject(w io.Writer, n int, pad string) error {
	if _, err := io.WriteString(w, `{"job_id":"gen","chunks":[`); err != nil {
		return err
	}
	for i := range n {
		if i > 0 {
			if _, err := io.WriteString(w, ","); err != nil {
				return err
			}
		}
		if err := genRecord(w, i, pad); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, `],"statistics":{"total_chunks":100000}}`)
	return err
}

// checkMemoryBounded reads what gen writes through a pipe and checks that all n items of
// format are read, over 100 MB of records, while the heap in use stays under 64 MB.
func checkMemoryBounded(t *testing.T, format Format, n int, gen func(w io.Writer) error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := gen(pw)
		pw.CloseWithError(err)
		done <- err
	}()
	defer func() {
		pr.Close()
		<-done
	}()
	r, err := NewReader(pr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC() // what earlier tests left is not this reader's
	var ms runtime.MemStats
	var peak uint64
	count, bytesRead := 0, 0
	for {
		it, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if it.Err != nil {
			t.Fatalf("item %d: %v", it.Index, it.Err)
		}
		count++
		bytesRead += len(it.Record)
		if count%5000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
	}
	if count != n || r.Format() != format {
		t.Fatalf("%d items as %q, want %d as %q", count, r.Format(), n, format)
	}
	if bytesRead < 100_000_000 {
		t.Fatalf("read only %d bytes of records", bytesRead)
	}
	t.Logf("%d MB of records, peak HeapInuse %d MB", bytesRead>>20, peak>>20)
	if peak > 64<<20 {
		t.Errorf("peak HeapInuse %d MB, want under 64 MB", peak>>20)
	}
}

func BenchmarkReadJSONL(b *testing.B) {
	for _, file := range []string{
		"job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl",
		"job_1757237159_c8623a8fec21_pass_d_vectors.jsonl",
	} {
		data, err := os.ReadFile(filepath.Join(fixtures, file))
		if err != nil {
			b.Fatal(err)
		}
		name := strings.TrimSuffix(strings.TrimPrefix(file, "job_1757237159_c8623a8fec21_"), ".jsonl")
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			items := 0
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(data), Options{Format: JSONL})
				if err != nil {
					b.Fatal(err)
				}
				for {
					it, err := r.Next()
					if err == io.EOF {
						break
					}
					if err != nil || it.Err != nil {
						b.Fatal(err, it.Err)
					}
					items++
				}
			}
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
