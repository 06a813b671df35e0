package files_test

// This file is an external test package: it checks the reader's output against the document
// builder, a sink, which package files itself must not import (sources never import sinks).

import (
	"encoding/json"
	"io"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/files"
)

// readFixture reads every item of a file under testdata/chunks, failing the test on a fatal
// error.
func readFixture(t *testing.T, name string) []files.Item {
	t.Helper()
	r, err := files.Open(filepath.Join("../../testdata/chunks", name))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var items []files.Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			return items
		}
		if err != nil {
			t.Fatalf("%s after %d items: %v", name, len(items), err)
		}
		items = append(items, it)
	}
}

// Every item of the normal fixtures builds into documents, and loading Pass C, then items,
// then Pass D (the later write wins) leaves 400 chunks: 100 vectorized and 300 raw.
func TestFixturesBuild(t *testing.T) {
	b, err := document.NewBuilder(document.Config{Env: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	const job = "job_1757237159_c8623a8fec21"
	stage := map[string]string{}
	for _, f := range []struct {
		file      string
		loadOrder bool // part of the Pass C, items, Pass D sequence
	}{
		{job + "_pass_c_raw_chunks.jsonl", true}, {job + "_items.json", true}, {job + "_pass_d_vectors.jsonl", true},
		{job + "_vectorized_chunks.json", false}, {job + "_pass_a_chunks.json", false}, {job + "_pass_b_enriched.json", false},
		{"passA_chunks.json", false}, {"passB_enriched.json", false},
	} {
		file, loadOrder := f.file, f.loadOrder
		for _, it := range readFixture(t, file) {
			if it.Err != nil {
				t.Fatalf("%s: %v", file, it.Err)
			}
			docs, err := b.Build(it.Record, document.Meta{})
			if err != nil {
				t.Fatalf("%s item %d: %v", file, it.Index, err)
			}
			if len(docs) != 1 || docs[0].ID != it.ID {
				t.Fatalf("%s item %d: %d docs, first %q", file, it.Index, len(docs), docs[0].ID)
			}
			if loadOrder {
				var m struct{ Stage string }
				if err := json.Unmarshal(docs[0].Body, &m); err != nil {
					t.Fatal(err)
				}
				stage[it.ID] = m.Stage
			}
		}
	}
	count := map[string]int{}
	for _, s := range stage {
		count[s]++
	}
	if len(stage) != 400 || count["vectorized"] != 100 || count["raw"] != 300 {
		t.Errorf("%d chunks, stages %v; want 400: 100 vectorized, 300 raw", len(stage), count)
	}
}
