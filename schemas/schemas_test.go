package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/schemas"
)

func newValidator(t testing.TB) *schemas.Validator {
	t.Helper()
	v, err := schemas.NewValidator()
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return v
}

// exampleDir is the examples folder of a schema: its file name without ".v1.json".
func exampleDir(t *testing.T, name schemas.Name) string {
	t.Helper()
	f, ok := schemas.FileName(name)
	if !ok {
		t.Fatalf("FileName(%q) unknown", name)
	}
	return filepath.Join("examples", strings.TrimSuffix(f, ".v1.json"))
}

func TestExamples(t *testing.T) {
	v := newValidator(t)
	for _, name := range schemas.Names() {
		for _, kind := range []string{"valid", "invalid"} {
			dir := filepath.Join(exampleDir(t, name), kind)
			paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
			if err != nil {
				t.Fatal(err)
			}
			if len(paths) < 3 {
				t.Errorf("%s: %d examples, want at least 3", dir, len(paths))
			}
			for _, p := range paths {
				t.Run(string(name)+"/"+kind+"/"+filepath.Base(p), func(t *testing.T) {
					doc, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					err = v.Validate(name, doc)
					if kind == "valid" {
						if err != nil {
							t.Fatalf("valid example rejected: %v", err)
						}
						return
					}
					var ve *schemas.ValidationError
					if !errors.As(err, &ve) {
						t.Fatalf("invalid example: got %v, want *ValidationError", err)
					}
					if ve.Schema != name || len(ve.Problems) == 0 {
						t.Fatalf("ValidationError = %+v, want schema %s and problems", ve, name)
					}
					t.Logf("%v", ve)
				})
			}
		}
	}
}

// TestFixtureChunks validates every chunk record of every chunk-bearing fixture file against
// chunk.v1: all must pass except the nasty file's item 34 (no id) and 37 (numeric id).
func TestFixtureChunks(t *testing.T) {
	v := newValidator(t)
	const dir = "../testdata/chunks"
	tests := []struct {
		name    string
		file    string
		key     string // list key; "" for JSONL
		want    int
		invalid []int
	}{
		{name: "pass C raw JSONL", file: "job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl", want: 400},
		{name: "pass D vectors JSONL", file: "job_1757237159_c8623a8fec21_pass_d_vectors.jsonl", want: 100},
		{name: "vectorized_chunks", file: "job_1757237159_c8623a8fec21_vectorized_chunks.json", key: "vectorized_chunks", want: 100},
		{name: "items", file: "job_1757237159_c8623a8fec21_items.json", key: "items", want: 400},
		{name: "legacy pass A", file: "job_1757237159_c8623a8fec21_pass_a_chunks.json", key: "chunks", want: 400},
		{name: "legacy pass B enriched", file: "job_1757237159_c8623a8fec21_pass_b_enriched.json", key: "enriched_chunks", want: 400},
		{name: "mock pass A", file: "passA_chunks.json", key: "chunks", want: 20},
		{name: "mock pass B", file: "passB_enriched.json", key: "enriched_chunks", want: 20},
		{name: "nasty", file: "nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json", key: "chunks", want: 42, invalid: []int{34, 37}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			var items []json.RawMessage
			if tt.key == "" {
				for line := range bytes.SplitSeq(raw, []byte("\n")) {
					items = append(items, line)
				}
			} else {
				var top map[string]json.RawMessage
				if err := json.Unmarshal(raw, &top); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(top[tt.key], &items); err != nil {
					t.Fatal(err)
				}
			}
			if len(items) != tt.want {
				t.Fatalf("%d items, want %d", len(items), tt.want)
			}
			var got []int
			for i, item := range items {
				err := v.Validate(schemas.Chunk, item)
				if err == nil {
					continue
				}
				var ve *schemas.ValidationError
				if !errors.As(err, &ve) {
					t.Fatalf("item %d: %v is not a *ValidationError", i, err)
				}
				if !slices.Contains(tt.invalid, i) {
					t.Errorf("item %d rejected: %v", i, err)
				}
				got = append(got, i)
			}
			if !slices.Equal(got, tt.invalid) && !(len(got) == 0 && len(tt.invalid) == 0) {
				t.Errorf("invalid items %v, want %v", got, tt.invalid)
			}
		})
	}
}

// validateProblemsCase is a scenario of TestValidateProblems: a job event that fails
// validation and the problems reported.
type validateProblemsCase struct {
	name string
	doc  string
	// want lists substrings that must each appear in some problem; notWant must appear in none.
	want    []string
	notWant []string
	count   int // exact number of problems when > 0
}

func TestValidateProblems(t *testing.T) {
	v := newValidator(t)
	manyBad := `{"type":"seal","job_id":"j","env":"dev","total":50,"published":0,"rejected":50,"rejections":[`
	for i := range 50 {
		if i > 0 {
			manyBad += ","
		}
		manyBad += fmt.Sprintf(`{"index":%d}`, i)
	}
	manyBad += `],"sealed_at":"2025-09-10T10:04:09Z"}`

	tests := []validateProblemsCase{
		{
			name:    "seal missing total reports only the seal branch",
			doc:     `{"type":"seal","job_id":"j","env":"dev","published":1,"rejected":0,"sealed_at":"2025-09-10T10:04:09Z"}`,
			want:    []string{`"": missing property 'total'`},
			notWant: []string{"open"},
			count:   1,
		},
		{
			name: "nested pointer",
			doc:  `{"type":"seal","job_id":"j","env":"dev","total":1,"published":0,"rejected":1,"rejections":[{"index":-1,"reason":"x"}],"sealed_at":"2025-09-10T10:04:09Z"}`,
			want: []string{`"/rejections/0/index"`},
		},
		{
			name:    "missing type reports the type, not every branch",
			doc:     `{"job_id":"j","env":"dev","created_at":"2025-09-10T10:04:02Z"}`,
			want:    []string{`"": missing property 'type'`},
			notWant: []string{"total", "created_at"},
			count:   2,
		},
		{
			name: "unknown type",
			doc:  `{"type":"close","job_id":"j","env":"dev"}`,
			want: []string{`"/type"`},
		},
		{
			name: "totals rule checked in Go",
			doc:  `{"type":"seal","job_id":"j","env":"dev","total":3,"published":1,"rejected":0,"sealed_at":"2025-09-10T10:04:09Z"}`,
			want: []string{"total 3 != published 1 + rejected 0"},
		},
		{
			name:  "problems are capped",
			doc:   manyBad,
			want:  []string{`"/rejections/0": missing property 'reason'`, "and 31 more problems"},
			count: schemas.MaxProblems,
		},
		{
			name: "not JSON",
			doc:  `{"type":`,
			want: []string{`"": not valid JSON`},
		},
		{
			name: "trailing data",
			doc:  `{"type":"open"} {}`,
			want: []string{`"": not valid JSON`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkValidateProblems(t, tt, v) })
	}
}

// checkValidateProblems validates tt.doc as a job event with v and checks the problems
// reported: those wanted, not those unwanted, their count, and that the error names the
// schema.
func checkValidateProblems(t *testing.T, tt validateProblemsCase, v *schemas.Validator) {
	err := v.Validate(schemas.JobEvent, []byte(tt.doc))
	var ve *schemas.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want *ValidationError", err)
	}
	all := strings.Join(ve.Problems, "\n")
	for _, w := range tt.want {
		if !strings.Contains(all, w) {
			t.Errorf("problems %q lack %q", ve.Problems, w)
		}
	}
	for _, w := range tt.notWant {
		if strings.Contains(all, w) {
			t.Errorf("problems %q contain %q", ve.Problems, w)
		}
	}
	if tt.count > 0 && len(ve.Problems) != tt.count {
		t.Errorf("%d problems, want %d: %q", len(ve.Problems), tt.count, ve.Problems)
	}
	if !strings.Contains(ve.Error(), string(schemas.JobEvent)) {
		t.Errorf("Error() %q does not name the schema", ve.Error())
	}
}

func TestValidateUnknownSchema(t *testing.T) {
	v := newValidator(t)
	err := v.Validate("sluice.nope.v1", []byte(`{}`))
	if !errors.Is(err, schemas.ErrUnknownSchema) {
		t.Fatalf("got %v, want ErrUnknownSchema", err)
	}
	var ve *schemas.ValidationError
	if errors.As(err, &ve) {
		t.Fatalf("unknown schema reported as a ValidationError: %v", err)
	}
}

func TestValidateConcurrent(t *testing.T) {
	v := newValidator(t)
	good := []byte(`{"chunk_id":"c1","content":"x"}`)
	bad := []byte(`{"chunk_id":1,"content":"x"}`)
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for g := range errs {
		wg.Go(func() {
			for range 200 {
				if err := v.Validate(schemas.Chunk, good); err != nil {
					errs[g] = err
					return
				}
				if err := v.Validate(schemas.Chunk, bad); err == nil {
					errs[g] = errors.New("bad chunk accepted")
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestSchemaFiles(t *testing.T) {
	names := schemas.Names()
	want := []schemas.Name{schemas.ChunkBundle, schemas.Chunk, schemas.Command, schemas.DeadLetter, schemas.FeatureRequest, schemas.JobEvent, schemas.Requirements}
	if !slices.Equal(names, want) {
		t.Fatalf("Names() = %v, want %v", names, want)
	}
	for _, n := range names {
		t.Run(string(n), func(t *testing.T) {
			raw, ok := schemas.Schema(n)
			if !ok {
				t.Fatal("Schema: not found")
			}
			var doc struct {
				Schema string `json:"$schema"`
				ID     string `json:"$id"`
			}
			if err := json.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			file, _ := schemas.FileName(n)
			if doc.ID != "https://sluice.dev/schemas/"+file {
				t.Errorf("$id = %q, want https://sluice.dev/schemas/%s", doc.ID, file)
			}
			if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %q", doc.Schema)
			}
			// The caller owns the bytes: scribbling on them must not change the next read.
			raw[0] = 'X'
			again, _ := schemas.Schema(n)
			if again[0] != '{' {
				t.Error("Schema returned shared bytes")
			}
		})
	}
	if _, ok := schemas.Schema("sluice.nope.v1"); ok {
		t.Error("Schema of an unknown name found")
	}
}

// TestSchemaMatchesGoRules keeps the schema's job_id pattern and env enum equal to ValidKey and
// ValidEnv.
func TestSchemaMatchesGoRules(t *testing.T) {
	v := newValidator(t)
	open := func(jobID, env string) []byte {
		b, _ := json.Marshal(map[string]string{"type": "open", "job_id": jobID, "env": env, "created_at": "2025-09-10T10:04:02Z"})
		return b
	}
	for _, key := range []string{"job_1", "J-2", strings.Repeat("a", 128), strings.Repeat("a", 129), "", "a.b", "a b", "a/b", "a*", "a>", "ü", "a\n"} {
		t.Run(fmt.Sprintf("key %q", key), func(t *testing.T) {
			valid := v.Validate(schemas.JobEvent, open(key, "dev")) == nil
			if valid != schemas.ValidKey(key) {
				t.Errorf("schema valid=%v, ValidKey=%v", valid, schemas.ValidKey(key))
			}
		})
	}
	for _, env := range []string{"dev", "test", "prod", "Dev", "staging", ""} {
		t.Run(fmt.Sprintf("env %q", env), func(t *testing.T) {
			valid := v.Validate(schemas.JobEvent, open("j", env)) == nil
			if valid != schemas.ValidEnv(env) {
				t.Errorf("schema valid=%v, ValidEnv=%v", valid, schemas.ValidEnv(env))
			}
		})
	}
}

// BenchmarkValidateChunk validates one Pass D record (1024-float embedding, about 24 KB), the
// largest common chunk shape.
func BenchmarkValidateChunk(b *testing.B) {
	raw, err := os.ReadFile("../testdata/chunks/job_1757237159_c8623a8fec21_pass_d_vectors.jsonl")
	if err != nil {
		b.Fatal(err)
	}
	line, _, _ := bytes.Cut(raw, []byte("\n"))
	v := newValidator(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(line)))
	b.ResetTimer()
	for b.Loop() {
		if err := v.Validate(schemas.Chunk, line); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
}

// TestEmbeddingShortcut guards Validate's shortcut for all-number "embedding" arrays: it is only
// correct while chunk.v1.json constrains nothing but the array type and its items' type.
func TestEmbeddingShortcut(t *testing.T) {
	raw, _ := schemas.Schema(schemas.Chunk)
	var s struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	var emb map[string]any
	if err := json.Unmarshal(s.Properties["embedding"], &emb); err != nil {
		t.Fatal(err)
	}
	delete(emb, "description")
	want := map[string]any{"type": "array", "items": map[string]any{"type": "number"}}
	if fmt.Sprint(emb) != fmt.Sprint(want) {
		t.Fatalf("embedding schema is %v; Validate's shortcut assumes %v", emb, want)
	}

	v := newValidator(t)
	tests := []struct {
		name  string
		doc   string
		valid bool
	}{
		{name: "numbers", doc: `{"id":"c","text":"x","embedding":[0,1.5,-2e-3]}`, valid: true},
		{name: "empty", doc: `{"id":"c","text":"x","embedding":[]}`, valid: true},
		{name: "one string", doc: `{"id":"c","text":"x","embedding":[0,"1"]}`},
		{name: "null element", doc: `{"id":"c","text":"x","embedding":[0,null]}`},
		{name: "nested array", doc: `{"id":"c","text":"x","embedding":[[0]]}`},
		{name: "not an array", doc: `{"id":"c","text":"x","embedding":{"0":1}}`},
		{name: "null", doc: `{"id":"c","text":"x","embedding":null}`},
		{name: "numbers but other problem", doc: `{"id":7,"text":"x","embedding":[0,1]}`},
		{name: "whitespace", doc: "{\"id\":\"c\",\"text\":\"x\",\"embedding\": [ 1 ,\n2\t] }", valid: true},
		{name: "duplicate key, last is bad", doc: `{"id":"c","text":"x","embedding":[1],"embedding":["a"]}`},
		{name: "duplicate key, last is good", doc: `{"id":"c","text":"x","embedding":["a"],"embedding":[1]}`, valid: true},
		{name: "not JSON", doc: `{"id":"c","text":"x","embedding":[1,,2]}`},
		{name: "trailing data", doc: `{"id":"c","text":"x","embedding":[1]} {}`},
		{name: "array document", doc: `[{"id":"c","text":"x","embedding":[1]}]`},
		{name: "key inside a string only", doc: `{"id":"c","text":"\"embedding\""}`, valid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Validate(schemas.Chunk, []byte(tt.doc))
			if (err == nil) != tt.valid {
				t.Fatalf("Validate = %v, want valid=%v", err, tt.valid)
			}
		})
	}
}
