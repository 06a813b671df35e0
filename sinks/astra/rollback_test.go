package astra

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/document"
)

// writeAs writes ids into coll as job with version v.
func writeAs(t *testing.T, s *Sink, coll, job string, v uint64, ids ...string) {
	t.Helper()
	var docs []document.Doc
	for _, id := range ids {
		docs = append(docs, document.Doc{ID: id, Version: v,
			Body: json.RawMessage(fmt.Sprintf(`{"_id":%q,"content":"by %s","sluice_job":%q}`, id, job, job))})
	}
	out, err := s.WriteDocs(context.Background(), coll, docs)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range out {
		if e != nil {
			t.Fatalf("document %d: %v", i, e)
		}
	}
}

func prevJobsOf(t *testing.T, srv *dataapitest.Server, coll, id string) []string {
	t.Helper()
	var d struct {
		Prev []string `json:"sluice_prev_jobs"`
	}
	if err := json.Unmarshal(srv.Documents("default_keyspace", coll)[id], &d); err != nil {
		t.Fatal(err)
	}
	return d.Prev
}

func TestRollbackJobDocs(t *testing.T) {
	ids := []string{"a", "b", "c"}
	type write struct {
		job string
		v   uint64
		ids []string
	}
	tests := []struct {
		name   string
		writes []write
		job    string
		want   document.JobRollbackResult
		left   int
		prevOf map[string][]string // checked before the rollback
	}{
		{"the job wrote nothing", []write{{"jA", 1, ids}}, "jB", document.JobRollbackResult{}, 3, nil},
		{"nothing superseded", []write{{"jB", 1, ids}}, "jB", document.JobRollbackResult{Deleted: 3}, 0, nil},
		{"the finding: A then B", []write{{"jA", 1, ids}, {"jB", 2, ids}}, "jB",
			document.JobRollbackResult{Deleted: 3, Superseded: map[string]int64{"jA": 3}}, 0,
			map[string][]string{"a": {"jA"}}},
		{"two earlier jobs", []write{{"jA1", 1, ids}, {"jA2", 2, ids[:2]}, {"jB", 3, ids}}, "jB",
			document.JobRollbackResult{Deleted: 3, Superseded: map[string]int64{"jA1": 3, "jA2": 2}}, 0,
			map[string][]string{"a": {"jA2", "jA1"}, "c": {"jA1"}}},
		{"a later job's rewrite stays", []write{{"jA", 1, ids}, {"jB", 2, ids}, {"jC", 3, ids[:1]}}, "jB",
			document.JobRollbackResult{Deleted: 2, Superseded: map[string]int64{"jA": 2}}, 1,
			map[string][]string{"a": {"jB", "jA"}}},
		{"a job rewriting its own documents names nobody", []write{{"jB", 1, ids}, {"jB", 2, ids}}, "jB",
			document.JobRollbackResult{Deleted: 3}, 0, map[string][]string{"a": nil}},
		{"the list is bounded", []write{{"j1", 1, ids}, {"j2", 2, ids}, {"j3", 3, ids}, {"j4", 4, ids}, {"j5", 5, ids}, {"j6", 6, ids}}, "j6",
			document.JobRollbackResult{Deleted: 3, Superseded: map[string]int64{"j2": 3, "j3": 3, "j4": 3, "j5": 3}}, 0,
			map[string][]string{"a": {"j5", "j4", "j3", "j2"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := dataapitest.Start(t, dataapitest.Config{})
			env := newEnv(t, srv, nil, nil)
			for _, w := range tt.writes {
				writeAs(t, env.sink, "rb", w.job, w.v, w.ids...)
			}
			for id, want := range tt.prevOf {
				if got := prevJobsOf(t, srv, "rb", id); !slices.Equal(got, want) {
					t.Fatalf("%s: %s = %v, want %v", id, PrevJobsField, got, want)
				}
			}
			// The preview, with or without restoring (nothing to restore here), says what the
			// rollback then does.
			for _, restore := range []bool{true, false} {
				p, err := env.sink.PreviewJobRollback(context.Background(), "rb", tt.job, restore)
				if err != nil {
					t.Fatal(err)
				}
				if p.Truncated || p.Restorable != 0 || p.Documents != tt.want.Deleted || p.Deleted() != tt.want.Deleted ||
					!maps.Equal(p.Superseded, tt.want.Superseded) {
					t.Fatalf("preview (restore %v) = %+v, want %+v", restore, p, tt.want)
				}
			}
			if n := len(srv.Documents("default_keyspace", "rb")); n != len(ids) {
				t.Fatalf("the preview changed the collection: %d documents", n)
			}
			var before map[string]int64
			got, err := env.sink.RollbackJobDocs(context.Background(), "rb", document.JobRollback{Job: tt.job, ID: "r",
				BeforeDelete: func(_ context.Context, m map[string]int64) error {
					if n := len(srv.Documents("default_keyspace", "rb")); n != len(ids) {
						return fmt.Errorf("%d documents when told, want all %d still there", n, len(ids))
					}
					before = maps.Clone(m)
					return nil
				}})
			if err != nil {
				t.Fatal(err)
			}
			if got.Deleted != tt.want.Deleted || !maps.Equal(got.Superseded, tt.want.Superseded) || !maps.Equal(before, tt.want.Superseded) {
				t.Fatalf("rollback = %+v (told %v), want %+v", got, before, tt.want)
			}
			if n := len(srv.Documents("default_keyspace", "rb")); n != tt.left {
				t.Fatalf("%d documents left, want %d", n, tt.left)
			}
		})
	}
}

// A redelivered write of the same content is still recognised as unchanged: the kept list
// is not content.
func TestPrevJobsNotContent(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	writeAs(t, env.sink, "rb", "jA", 1, "a")
	writeAs(t, env.sink, "rb", "jB", 2, "a")
	before := string(srv.Documents("default_keyspace", "rb")["a"])
	writeAs(t, env.sink, "rb", "jB", 2, "a")
	if after := string(srv.Documents("default_keyspace", "rb")["a"]); after != before {
		t.Fatalf("a redelivery rewrote the document:\n%s\n%s", before, after)
	}
	// A producer cannot set the list: its own field is dropped.
	out, err := env.sink.WriteDocs(context.Background(), "rb", []document.Doc{{ID: "z", Version: 1,
		Body: json.RawMessage(`{"_id":"z","sluice_job":"jZ","sluice_prev_jobs":["forged"]}`)}})
	if err != nil || out[0] != nil {
		t.Fatal(err, out)
	}
	if p := prevJobsOf(t, srv, "rb", "z"); p != nil {
		t.Fatalf("forged list stored: %v", p)
	}
}

func TestRollbackJobDocsRefusals(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	writeAs(t, env.sink, "rb", "jA", 1, "a")
	writeAs(t, env.sink, "rb", "jB", 2, "a")
	_, err := env.sink.RollbackJobDocs(context.Background(), "rb", document.JobRollback{Job: "jB", ID: "r", RestorePrevious: true})
	if !fault.IsPermanent(err) {
		t.Fatalf("restore on AstraDB: %v, want a permanent error", err)
	}
	if n := len(srv.Documents("default_keyspace", "rb")); n != 1 {
		t.Fatalf("a refused restore deleted documents: %d left", n)
	}
	// A BeforeDelete that fails stops the rollback before anything is deleted.
	_, err = env.sink.RollbackJobDocs(context.Background(), "rb", document.JobRollback{Job: "jB", ID: "r",
		BeforeDelete: func(context.Context, map[string]int64) error { return fmt.Errorf("job store away") }})
	if err == nil || len(srv.Documents("default_keyspace", "rb")) != 1 {
		t.Fatalf("failed BeforeDelete: %v, %d documents", err, len(srv.Documents("default_keyspace", "rb")))
	}
	// A missing collection has nothing to roll back nor to preview (the double counts each find
	// on it: the rollback's and two previews').
	env = newEnv(t, dataapitest.Start(t, dataapitest.Config{}, "UNKNOWN_COLLECTION", "UNKNOWN_COLLECTION", "UNKNOWN_COLLECTION"), nil, nil)
	res, err := env.sink.RollbackJobDocs(context.Background(), "nosuch", document.JobRollback{Job: "jB", ID: "r"})
	if err != nil || res.Deleted != 0 {
		t.Fatalf("missing collection: %+v %v", res, err)
	}
	// Nor anything to preview, restoring or not.
	for _, restore := range []bool{false, true} {
		p, err := env.sink.PreviewJobRollback(context.Background(), "nosuch", "jB", restore)
		if err != nil || p.Documents != 0 || p.Superseded != nil || p.Truncated {
			t.Fatalf("preview of a missing collection: %+v %v", p, err)
		}
	}
}

// A preview reads at most a bound of documents (MaxPreviewDocuments in PreviewJobRollback)
// and says when it stopped: counts up to the bound, Truncated set; exactly the bound is not
// truncated.
func TestPreviewJobRollbackBounded(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	var ids []string
	for i := range 45 { // three pages of 20
		ids = append(ids, fmt.Sprintf("d%02d", i))
	}
	writeAs(t, env.sink, "rb", "jA", 1, ids...)
	writeAs(t, env.sink, "rb", "jB", 2, ids...)
	for _, tt := range []struct {
		name      string
		limit     int
		docs      int64
		truncated bool
	}{
		{"under the bound", 44, 44, true},
		{"one page", 20, 20, true},
		{"exactly the bound", 45, 45, false},
		{"over the bound", 100, 45, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := env.sink.tallyJobDocs(context.Background(), "rb", "jB", tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			if p.Documents != tt.docs || p.Truncated != tt.truncated || p.Superseded["jA"] != tt.docs {
				t.Fatalf("preview = %+v, want %d documents, truncated %v", p, tt.docs, tt.truncated)
			}
		})
	}
}
