package document

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

const fixtures = "../../testdata/chunks"

func newBuilder(t testing.TB) *Builder {
	t.Helper()
	b, err := NewBuilder(Config{Env: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nastyItems returns the 42 raw items of the adversarial fixture.
func nastyItems(t testing.TB) []json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtures, "nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ Chunks []json.RawMessage }
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Chunks) != 42 {
		t.Fatalf("nasty file has %d items, want 42", len(f.Chunks))
	}
	return f.Chunks
}

// firstLine returns the first line of a JSONL fixture.
func firstLine(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() {
		t.Fatalf("%s: no first line: %v", name, sc.Err())
	}
	return bytes.Clone(sc.Bytes())
}

// body decodes a document body into its top-level fields.
func body(t testing.TB, d Doc) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(d.Body, &m); err != nil {
		t.Fatalf("doc %s: body is not JSON: %v", d.ID, err)
	}
	return m
}

func str(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("%s is not a string: %v", raw, err)
	}
	return s
}

// inputContent decodes the content of a raw record the way encoding/json does.
func inputContent(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var r struct{ Content string }
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	return r.Content
}

func TestBuildNastyFile(t *testing.T) {
	b := newBuilder(t)
	items := nastyItems(t)
	nastyBuildAll(t, b, items)
	t.Run("deep_metadata names the depth", func(t *testing.T) { nastyDeepMetadata(t, b, items) })
	t.Run("lone_surrogate", func(t *testing.T) { nastyLoneSurrogate(t, b, items) })
	nastyStoredExactly(t, b, items)
	t.Run("control_chars NUL written as \\u0000", func(t *testing.T) { nastyNULEscaped(t, b, items) })
	t.Run("over_8000_bytes split", func(t *testing.T) { nastyOver8000Split(t, b, items) })
	t.Run("multibyte_straddle", func(t *testing.T) { nastyMultibyteStraddle(t, b, items) })
}

// nastyBuildAll builds every item of the nasty file: the six it must reject are rejected
// with their class and message, the 36 others build valid UTF-8 documents of the version given.
func nastyBuildAll(t *testing.T, b *Builder, items []json.RawMessage) {
	wantErr := map[int]struct {
		class fault.Class
		msg   string
	}{
		13: {fault.Validation, "empty content"},
		14: {fault.Limit, `field "metadata.nested.child`},
		21: {fault.Limit, "content too large: 2097152 bytes exceeds maximum 1048576"},
		27: {fault.Limit, `field "metadata.tags": array length 1500 exceeds maximum 1000`},
		34: {fault.Validation, "no id"},
		37: {fault.Validation, "id must be a string, got number"},
	}
	accepted, rejected := 0, 0
	for i, raw := range items {
		docs, err := b.Build(raw, Meta{Version: 7})
		if w, ok := wantErr[i]; ok {
			rejected++
			if err == nil {
				t.Errorf("item %d: accepted, want rejection %q", i, w.msg)
				continue
			}
			if !fault.IsPermanent(err) || fault.ClassOf(err) != w.class {
				t.Errorf("item %d: error %v is class %q permanent %v, want permanent %q", i, err, fault.ClassOf(err), fault.IsPermanent(err), w.class)
			}
			if !strings.Contains(err.Error(), w.msg) {
				t.Errorf("item %d: error %q does not contain %q", i, err, w.msg)
			}
			continue
		}
		if err != nil {
			t.Errorf("item %d: %v", i, err)
			continue
		}
		accepted++
		for _, d := range docs {
			if d.Version != 7 {
				t.Errorf("item %d: doc %s version %d, want 7", i, d.ID, d.Version)
			}
			if !utf8.Valid(d.Body) {
				t.Errorf("item %d: doc %s body is not valid UTF-8", i, d.ID)
			}
		}
	}
	if accepted != 36 || rejected != 6 || accepted+rejected != 42 {
		t.Errorf("accepted %d rejected %d, want 36 + 6 = 42", accepted, rejected)
	}
}

// nastyStoredExactly checks that emoji, right-to-left and control characters are stored
// exactly as decoded.
func nastyStoredExactly(t *testing.T, b *Builder, items []json.RawMessage) {
	for _, tc := range []struct {
		name  string
		index int
		bytes int
	}{
		{"emoji_rtl", 10, 482},
		{"control_chars", 19, 263},
	} {
		t.Run(tc.name+" stored exactly", func(t *testing.T) {
			docs, err := b.Build(items[tc.index], Meta{})
			if err != nil || len(docs) != 1 {
				t.Fatalf("got %d docs, %v", len(docs), err)
			}
			got := str(t, body(t, docs[0])["content"])
			want := inputContent(t, items[tc.index])
			if got != want {
				t.Errorf("stored content differs from the decoded input:\n got %q\nwant %q", got, want)
			}
			if len(got) != tc.bytes {
				t.Errorf("content %d bytes, want %d", len(got), tc.bytes)
			}
		})
	}
}

func nastyDeepMetadata(t *testing.T, b *Builder, items []json.RawMessage) {
	_, err := b.Build(items[14], Meta{})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitDepth || le.Actual != 21 || le.Max != 16 {
		t.Fatalf("got %v, want a nesting depth 21 > 16 LimitError", err)
	}
	if !strings.HasPrefix(le.Path, "metadata.nested.child.child") {
		t.Errorf("path %q", le.Path)
	}
	if !strings.Contains(err.Error(), "nesting depth 21 exceeds maximum 16") {
		t.Errorf("message %q", err)
	}
}

func nastyLoneSurrogate(t *testing.T, b *Builder, items []json.RawMessage) {
	docs, err := b.Build(items[2], Meta{})
	if err != nil || len(docs) != 1 {
		t.Fatalf("got %d docs, %v", len(docs), err)
	}
	c := str(t, body(t, docs[0])["content"])
	if n := strings.Count(c, "\uFFFD"); n != 2 {
		t.Errorf("%d replacement characters, want 2", n)
	}
	if len(c) != 157 {
		t.Errorf("content %d bytes, want 157", len(c))
	}
	if !utf8.ValidString(c) {
		t.Error("content is not valid UTF-8")
	}
}

func nastyNULEscaped(t *testing.T, b *Builder, items []json.RawMessage) {
	docs, _ := b.Build(items[19], Meta{})
	if len(docs) != 1 || !bytes.Contains(docs[0].Body, []byte(`\u0000`)) {
		t.Fatalf("body does not hold \\u0000: %s", docs[0].Body)
	}
}

func nastyOver8000Split(t *testing.T, b *Builder, items []json.RawMessage) {
	const job = "job_1757498642_0a06fa1bc2da"
	const id = job + "_chunk_9001"
	docs, err := b.Build(items[24], Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 52 {
		t.Errorf("%d parts, want 52 (400-rune windows of 20457 chars)", len(docs))
	}
	original := inputContent(t, items[24])
	var wantMeta json.RawMessage
	pos := 0
	var joined strings.Builder
	for n, d := range docs {
		wantID := id
		if n > 0 {
			wantID = id + "-part" + itoa(n+1)
		}
		m := body(t, d)
		if d.ID != wantID || str(t, m["_id"]) != wantID || str(t, m["chunk_id"]) != id {
			t.Errorf("part %d: ID %q _id %s chunk_id %s, want %q / %q", n+1, d.ID, m["_id"], m["chunk_id"], wantID, id)
		}
		if string(m["part"]) != itoa(n+1) || string(m["parts"]) != itoa(len(docs)) {
			t.Errorf("part %d: part %s parts %s", n+1, m["part"], m["parts"])
		}
		c := str(t, m["content"])
		if len(c) > 7000 || c == "" || c != strings.TrimSpace(c) {
			t.Errorf("part %d: %d bytes, trimmed %v", n+1, len(c), c == strings.TrimSpace(c))
		}
		// Parts appear in order in the original, separated only by trimmed white space.
		at := strings.Index(original[pos:], c)
		if at < 0 || strings.TrimSpace(original[pos:pos+at]) != "" {
			t.Fatalf("part %d is not the next piece of the original text", n+1)
		}
		pos += at + len(c)
		joined.WriteString(c)
		if n == 0 {
			wantMeta = m["metadata"]
		} else if !bytes.Equal(m["metadata"], wantMeta) {
			t.Errorf("part %d: metadata %s differs from part 1", n+1, m["metadata"])
		}
	}
	if strings.TrimSpace(original[pos:]) != "" {
		t.Error("the parts do not cover the end of the text")
	}
	if stripWS(joined.String()) != stripWS(original) {
		t.Error("the parts do not cover the text")
	}
	if !bytes.Contains(wantMeta, []byte(`"adversarial_kind":"over_8000_bytes"`)) || !bytes.Contains(wantMeta, []byte(`"environment":"dev"`)) {
		t.Errorf("parts do not carry the item's metadata: %s", wantMeta)
	}
	again, err := b.Build(items[24], Meta{})
	if err != nil || len(again) != len(docs) {
		t.Fatalf("re-run: %d docs, %v", len(again), err)
	}
	for n := range docs {
		if again[n].ID != docs[n].ID || !bytes.Equal(again[n].Body, docs[n].Body) {
			t.Errorf("re-run part %d differs", n+1)
		}
	}
}

func nastyMultibyteStraddle(t *testing.T, b *Builder, items []json.RawMessage) {
	docs, err := b.Build(items[30], Meta{})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) < 2 {
		t.Fatalf("%d parts, want a split", len(docs))
	}
	original := inputContent(t, items[30])
	type span struct{ start, end int }
	var spans []span
	pos := 0
	for n, d := range docs {
		c := str(t, body(t, d)["content"])
		if !utf8.ValidString(c) {
			t.Errorf("part %d is not valid UTF-8", n+1)
		}
		at := strings.Index(original[pos:], c)
		if at < 0 {
			t.Fatalf("part %d is not the next piece of the original", n+1)
		}
		spans = append(spans, span{pos + at, pos + at + len(c)})
		pos += at + len(c)
	}
	for _, ch := range []struct {
		r   string
		pos int
	}{{"’", 6999}, {"🐉", 7898}, {"—", 7999}} {
		if original[ch.pos:ch.pos+len(ch.r)] != ch.r {
			t.Fatalf("fixture: %q not at byte %d", ch.r, ch.pos)
		}
		in := 0
		for _, s := range spans {
			if ch.pos >= s.start && ch.pos+len(ch.r) <= s.end {
				in++
			} else if ch.pos < s.end && ch.pos+len(ch.r) > s.start {
				t.Errorf("%q at byte %d is cut by a part boundary", ch.r, ch.pos)
			}
		}
		if in != 1 {
			t.Errorf("%q at byte %d is whole in %d parts, want 1", ch.r, ch.pos, in)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func stripWS(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsSpace(r) {
			return -1
		}
		return r
	}, s)
}

func TestBuildPassDEmbedding(t *testing.T) {
	b := newBuilder(t)
	raw := firstLine(t, "job_1757237159_c8623a8fec21_pass_d_vectors.jsonl")
	docs, err := b.Build(raw, Meta{Job: "j1"})
	if err != nil {
		t.Fatalf("Pass D record with a 1024-float unindexed embedding: %v", err)
	}
	m := body(t, docs[0])
	var emb []float64
	if err := json.Unmarshal(m["embedding"], &emb); err != nil || len(emb) != 1024 {
		t.Fatalf("embedding: %d floats, %v", len(emb), err)
	}
	if str(t, m["stage"]) != "vectorized" || str(t, m["sluice_job"]) != "j1" || str(t, m["environment"]) != "dev" {
		t.Errorf("stage %s sluice_job %s environment %s", m["stage"], m["sluice_job"], m["environment"])
	}

	// The same array under a field that is indexed breaks the array limit.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	fields["vector_copy"] = fields["embedding"]
	moved, _ := json.Marshal(fields)
	_, err = b.Build(moved, Meta{})
	var le *LimitError
	if !errors.As(err, &le) || le.Limit != LimitArrayLen || le.Path != "vector_copy" || le.Actual != 1024 {
		t.Fatalf("got %v, want an array length LimitError on vector_copy", err)
	}
	if fault.ClassOf(err) != fault.Limit || !fault.IsPermanent(err) {
		t.Errorf("class %q permanent %v", fault.ClassOf(err), fault.IsPermanent(err))
	}
}

// buildFieldsCase is a scenario of TestBuildFields: a record, its meta and the fields of the
// document built (raw JSON; "" means absent).
type buildFieldsCase struct {
	name string
	raw  string
	meta Meta
	want map[string]string // field -> raw JSON; "" means absent
}

func TestBuildFields(t *testing.T) {
	b := newBuilder(t)
	tests := []buildFieldsCase{
		{
			name: "items shape maps id and text",
			raw:  `{"id":"c1","text":"hello","metadata":{"page":1}}`,
			want: map[string]string{"_id": `"c1"`, "chunk_id": `"c1"`, "content": `"hello"`, "stage": `"raw"`,
				"environment": `"dev"`, "metadata": `{"environment":"dev","page":1}`, "id": "", "text": "", "sluice_job": "", "part": ""},
		},
		{
			name: "chunk_id wins over id, which passes through",
			raw:  `{"chunk_id":"c2","id":"other","content":"x"}`,
			want: map[string]string{"_id": `"c2"`, "id": `"other"`, "metadata": `{"environment":"dev"}`},
		},
		{
			name: "null chunk_id falls back to id",
			raw:  `{"chunk_id":null,"id":"c3","content":"x"}`,
			want: map[string]string{"_id": `"c3"`, "chunk_id": `"c3"`, "id": ""},
		},
		{
			name: "content wins over text, which passes through",
			raw:  `{"id":"c4","content":"a","text":"b"}`,
			want: map[string]string{"content": `"a"`, "text": `"b"`},
		},
		{
			name: "stage from metadata",
			raw:  `{"chunk_id":"c5","content":"x","metadata":{"stage":"vectorized","environment":"prod"}}`,
			want: map[string]string{"stage": `"vectorized"`, "metadata": `{"stage":"vectorized","environment":"prod"}`, "environment": `"dev"`},
		},
		{
			name: "record stage and environment kept",
			raw:  `{"chunk_id":"c6","content":"x","stage":"graph_enriched","environment":"test","metadata":{"stage":"raw"}}`,
			want: map[string]string{"stage": `"graph_enriched"`, "environment": `"test"`},
		},
		{
			name: "job recorded, fields pass through untouched",
			raw:  `{"chunk_id":"c7","content":"<a&b>","page_span":"6,9","coordinates":null,"x":{"y":[1,2.50]},"sluice_job":"old"}`,
			meta: Meta{Job: "job-9"},
			want: map[string]string{"sluice_job": `"job-9"`, "content": `"<a&b>"`, "page_span": `"6,9"`, "coordinates": "null", "x": `{"y":[1,2.50]}`},
		},
		{
			name: "pretty-printed values are compacted",
			raw:  "{\n  \"chunk_id\": \"c8\",\n  \"content\": \"x\",\n  \"metadata\": {\n    \"a\": [\n      1\n    ]\n  }\n}",
			want: map[string]string{"metadata": `{"environment":"dev","a":[1]}`},
		},
		{
			name: "legacy enriched item converted",
			raw:  `{"chunk_id":"e1","original_content":"orig","enhanced_content":"enh","entities":["a"],"categories":["combat"],"complexity":"basic"}`,
			want: map[string]string{"_id": `"e1"`, "content": `"enh"`, "original_content": "", "enhanced_content": "", "entities": "",
				"metadata": `{"environment":"dev","chunk_type":"enriched","entities":["a"],"categories":["combat"],"complexity":"basic","confidence":0.0}`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkBuildFields(t, tc, b) })
	}
}

// checkBuildFields builds tc.raw with b and checks the one document's fields and that its body
// starts with _id.
func checkBuildFields(t *testing.T, tc buildFieldsCase, b *Builder) {
	docs, err := b.Build(json.RawMessage(tc.raw), tc.meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 1 {
		t.Fatalf("%d docs", len(docs))
	}
	m := body(t, docs[0])
	for k, want := range tc.want {
		got, ok := m[k]
		if want == "" {
			if ok {
				t.Errorf("%s = %s, want absent", k, got)
			}
			continue
		}
		if string(got) != want {
			t.Errorf("%s = %s, want %s", k, got, want)
		}
	}
	if !strings.HasPrefix(string(docs[0].Body), `{"_id":`) {
		t.Errorf("body does not start with _id: %s", docs[0].Body)
	}
}

func TestBuildRejects(t *testing.T) {
	b := newBuilder(t)
	tests := []struct {
		name  string
		raw   string
		class fault.Class
		msg   string
	}{
		{"not an object", `["a"]`, fault.Validation, "record must be a JSON object, got array"},
		{"null", `null`, fault.Validation, "record must be a JSON object, got null"},
		{"no id", `{"content":"x"}`, fault.Validation, "no id"},
		{"numeric id", `{"id":90210,"content":"x"}`, fault.Validation, "id must be a string, got number"},
		{"object chunk_id", `{"chunk_id":{},"content":"x"}`, fault.Validation, "chunk_id must be a string, got object"},
		{"empty id", `{"id":"","content":"x"}`, fault.Validation, "id is empty"},
		{"no content", `{"id":"a"}`, fault.Validation, "no content"},
		{"empty text", `{"id":"a","text":""}`, fault.Validation, "empty content"},
		{"numeric content", `{"id":"a","content":5}`, fault.Validation, "content must be a string, got number"},
		{"metadata not an object", `{"id":"a","content":"x","metadata":"m"}`, fault.Validation, "metadata must be an object, got string"},
		{"stage not a string", `{"id":"a","content":"x","stage":3}`, fault.Validation, "stage must be a string, got number"},
		{"whitespace only, split", `{"id":"a","content":"` + strings.Repeat(" ", 7001) + `"}`, fault.Validation, "empty content: only white space"},
		{"bad field name", `{"id":"a","content":"x","metadata":{"$set":1}}`, fault.Limit, `field "metadata.$set": invalid field name`},
		{"enriched with numeric content", `{"chunk_id":"a","enhanced_content":1}`, fault.Validation, "enhanced_content must be a string, got number"},
		// Build splits the record without validating it first; Check validates the body.
		{"data after the object", `{"id":"a","content":"x"} x`, fault.Validation, "decode record: invalid character 'x' after top-level value"},
		{"truncated", `{"id":"a","content":"x"`, fault.Validation, "decode record: unexpected end of JSON input"},
		{"bad literal in a kept field", `{"id":"a","content":"x","m":tru}`, fault.Validation, "decode record: invalid character '}'"},
		{"bad number in metadata", `{"id":"a","content":"x","metadata":{"n":01}}`, fault.Validation, "decode record: invalid character '1'"},
		{"bad value in a dropped field", `{"id":"a","content":"x","_id":[1,}`, fault.Validation, "decode record"},
		{"invalid UTF-8 in a kept field", "{\"id\":\"a\",\"content\":\"x\",\"m\":\"\xff\"}", fault.Validation, "malformed JSON"},
		{"raw control character", "{\"id\":\"a\",\"content\":\"x\",\"m\":\"\x01\"}", fault.Validation, "decode record: invalid character '\\x01' in string literal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			docs, err := b.Build(json.RawMessage(tc.raw), Meta{})
			if err == nil {
				t.Fatalf("accepted: %d docs", len(docs))
			}
			if !fault.IsPermanent(err) || fault.ClassOf(err) != tc.class {
				t.Errorf("%v: class %q permanent %v, want %q", err, fault.ClassOf(err), fault.IsPermanent(err), tc.class)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
		})
	}
}

func TestBuildSplitBoundary(t *testing.T) {
	b := newBuilder(t)
	for _, tc := range []struct {
		name  string
		bytes int
		parts int
	}{
		{"at threshold stays whole", 7000, 1},
		{"one byte over splits", 7001, 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw, _ := json.Marshal(map[string]string{"id": "s", "content": strings.Repeat("a", tc.bytes)})
			docs, err := b.Build(raw, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			if len(docs) != tc.parts {
				t.Fatalf("%d parts, want %d", len(docs), tc.parts)
			}
			_, hasPart := body(t, docs[0])["part"]
			if hasPart != (tc.parts > 1) {
				t.Errorf("part field present %v", hasPart)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		errs []string
	}{
		{"defaults", Config{Env: "prod"}, nil},
		{"no env", Config{}, []string{"Env is required"}},
		{"bad env and negatives", Config{Env: "staging", WindowChars: -1, MaxContentBytes: -2},
			[]string{`got "staging"`, "WindowChars must not be negative", "MaxContentBytes must not be negative"}},
		{"threshold over string limit", Config{Env: "dev", SplitThreshold: 9000}, []string{"exceeds Limits.MaxStringBytes 8000"}},
		{"window too big for threshold", Config{Env: "dev", WindowChars: 2000}, []string{"a window of 2000 runes"}},
		{"negative limit", Config{Env: "dev", Limits: Limits{MaxDepth: -1}}, []string{"MaxDepth must not be negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			_, nerr := NewBuilder(tc.cfg)
			if (err == nil) != (nerr == nil) {
				t.Errorf("Validate %v but NewBuilder %v", err, nerr)
			}
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.errs {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not contain %q", err, w)
				}
			}
		})
	}
}

func BenchmarkBuild(b *testing.B) {
	bl := newBuilder(b)
	for _, bc := range []struct{ name, file string }{
		{"pass_c", "job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl"},
		{"pass_d", "job_1757237159_c8623a8fec21_pass_d_vectors.jsonl"},
	} {
		raw := firstLine(b, bc.file)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := bl.Build(raw, Meta{Version: 1, Job: "job"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	docs, err := newBuilder(b).Build(firstLine(b, "job_1757237159_c8623a8fec21_pass_d_vectors.jsonl"), Meta{})
	if err != nil {
		b.Fatal(err)
	}
	l := DataAPILimits()
	b.ReportAllocs()
	b.SetBytes(int64(len(docs[0].Body)))
	for b.Loop() {
		if err := l.Check(docs[0].Body); err != nil {
			b.Fatal(err)
		}
	}
}
