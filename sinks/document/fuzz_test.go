package document

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
	"github.com/sluice-dev/sluice/schemas/record"
)

// FuzzBuild builds documents from arbitrary records, with the default configuration and with
// small limits so that splitting and every limit are reached by short inputs. Properties: no
// panic; a refusal is permanent, fault.Validation or fault.Limit (always fault.Limit when it
// wraps a *LimitError); every document's body is a valid JSON object within the builder's Limits
// whose "_id" is Doc.ID and whose "chunk_id" is the record's id; parts are numbered
// "{id}-part{n}" in order; and building again gives the same documents.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzBuild$' -fuzztime 10m ./sinks/document/
func FuzzBuild(f *testing.F) {
	for _, s := range []string{
		`{"id":"a","text":"hello"}`,
		`{"chunk_id":"c","content":"  many words here  ","metadata":{"page":1,"stage":"enriched"},"environment":null}`,
		`{"chunk_id":"e","enhanced_content":"better","original_content":"orig","entities":["x"]}`,
		`{"chunk_id":"v","content":"t","embedding":[0.1,0.2,0.3],"$vector":[1,2]}`,
		`{"chunk_id":"s","content":"\ud83d\ude00\ud800 lone surrogate","metadata":"not an object"}`,
		`{"chunk_id":"d","content":"x","a":{"b":{"c":{"d":{"e":[[[[[[1]]]]]]}}}}}`,
		`{"chunk_id":"n","content":"x","big":123456789012345678901234567890}`,
		`{"chunk_id":"k","content":"x","$bad":1,"":2}`,
		`{"chunk_id":7,"content":"x"}`,
		`{"chunk_id":"w","content":"   "}`,
	} {
		f.Add([]byte(s), false)
	}
	paths, _ := filepath.Glob(filepath.Join("..", "..", "schemas", "examples", "chunk", "*", "*.json"))
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data, true)
		}
	}
	def, err := NewBuilder(Config{Env: "dev"})
	if err != nil {
		f.Fatal(err)
	}
	smallCfg := Config{Env: "test", SplitThreshold: 40, WindowChars: 10, MaxContentBytes: 400,
		Limits: Limits{MaxStringBytes: 64, MaxDocChars: 600, MaxDepth: 5, MaxArrayLen: 4, MaxObjectProps: 8,
			MaxDocProps: 20, MaxPathLen: 24, MaxNumberLen: 12}}
	small, err := NewBuilder(smallCfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte, useSmall bool) {
		b, limits := def, Limits{}
		if useSmall {
			b, limits = small, smallCfg.Limits
		}
		m := Meta{Version: 7, Job: "job-1"}
		docs, err := b.Build(raw, m)
		if err != nil {
			checkBuildRefusal(t, err)
			return
		}
		if len(docs) == 0 {
			t.Fatalf("Build accepted %q with no documents", raw)
		}
		id, err := record.ID(raw)
		if err != nil && !needsEnrichedConversionRaw(raw) {
			t.Fatalf("Build accepted %q but RecordID refuses it: %v", raw, err)
		}
		checkBuiltDocs(t, docs, id, m, limits)
		again, err := b.Build(raw, m)
		if err != nil || len(again) != len(docs) {
			t.Fatalf("second Build differs: %d docs, %v", len(again), err)
		}
		for n := range docs {
			if again[n].ID != docs[n].ID || string(again[n].Body) != string(docs[n].Body) {
				t.Fatalf("second Build of document %d differs", n)
			}
		}
	})
}

// checkBuildRefusal checks FuzzBuild's refusal err: permanent, fault.Validation or
// fault.Limit, and fault.Limit whenever it wraps a *LimitError.
func checkBuildRefusal(t *testing.T, err error) {
	if !fault.IsPermanent(err) {
		t.Fatalf("Build error is not permanent: %v", err)
	}
	if c := fault.ClassOf(err); c != fault.Validation && c != fault.Limit {
		t.Fatalf("Build error has class %q: %v", c, err)
	}
	var le *LimitError
	if errors.As(err, &le) && fault.ClassOf(err) != fault.Limit {
		t.Fatalf("a *LimitError classified %q: %v", fault.ClassOf(err), err)
	}
}

// checkBuiltDocs checks FuzzBuild's documents: each body valid JSON within limits, its _id
// Doc.ID, its job and version m's, its chunk_id the record's id (when it has one), and the
// first document's id the chunk id.
func checkBuiltDocs(t *testing.T, docs []Doc, id string, m Meta, limits Limits) {
	for n, d := range docs {
		if !json.Valid(d.Body) {
			t.Fatalf("document %d body is not valid JSON: %s", n, d.Body)
		}
		if err := limits.Check(d.Body); err != nil {
			t.Fatalf("document %d breaks the limits: %v\n%s", n, err, d.Body)
		}
		var head struct {
			ID      string `json:"_id"`
			ChunkID string `json:"chunk_id"`
			Job     string `json:"sluice_job"`
		}
		if err := json.Unmarshal(d.Body, &head); err != nil {
			t.Fatalf("document %d: %v", n, err)
		}
		if head.ID != d.ID || d.Version != m.Version || head.Job != m.Job {
			t.Fatalf("document %d: _id %q, sluice_job %q, version %d; Doc.ID %q", n, head.ID, head.Job, d.Version, d.ID)
		}
		if id != "" && head.ChunkID != id {
			t.Fatalf("document %d: chunk_id %q, want the record's id %q", n, head.ChunkID, id)
		}
		if n == 0 && d.ID != head.ChunkID {
			t.Fatalf("first document _id %q is not the chunk id %q", d.ID, head.ChunkID)
		}
	}
}

// needsEnrichedConversionRaw reports whether raw is a legacy enriched item, whose id the
// builder takes after conversion.
func needsEnrichedConversionRaw(raw []byte) bool {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return false
	}
	return record.IsEnriched(fields)
}

// FuzzLimitsCheck checks Limits.Check, the one-pass validator every document sink relies on,
// against encoding/json: a body Check passes is a valid JSON object in valid UTF-8, and a body
// Check calls malformed (fault.Validation) is not one.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzLimitsCheck$' -fuzztime 10m ./sinks/document/
func FuzzLimitsCheck(f *testing.F) {
	for _, s := range []string{
		`{"a":"b","n":-1.5e+3,"t":true,"f":false,"z":null,"arr":[1,[2,{"x":"\u00e9\ud83d\ude00"}]]}`,
		`{"$vector":[1,2,3],"embedding":[` + strings.Repeat("0,", 50) + `0]}`,
		`{"a":"\ud800"}`, `{"a":01}`, `{"a":1.}`, `{"a":"` + "\xff" + `"}`, `{"a":1}{}`, `[1]`, `{"a" 1}`, ` {} `,
	} {
		f.Add([]byte(s))
	}
	small := Limits{MaxStringBytes: 8, MaxDocChars: 200, MaxDepth: 3, MaxArrayLen: 3, MaxObjectProps: 4,
		MaxDocProps: 8, MaxPathLen: 10, MaxNumberLen: 6}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, l := range []Limits{{}, small} {
			err := l.Check(body)
			wellFormed := json.Valid(body) && utf8.Valid(body) && jsonscan.FirstByte(body) == '{'
			switch {
			case err == nil && !wellFormed:
				t.Fatalf("Check passes %q, which is not a JSON object in valid UTF-8", body)
			case err != nil && fault.ClassOf(err) == fault.Validation && wellFormed:
				t.Fatalf("Check calls %q malformed: %v", body, err)
			case err != nil && fault.ClassOf(err) != fault.Validation && fault.ClassOf(err) != fault.Limit:
				t.Fatalf("Check error has class %q: %v", fault.ClassOf(err), err)
			}
		}
	})
}
