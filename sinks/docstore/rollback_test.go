package docstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sinks/document"
)

// jobDoc is document id as job wrote it, with content saying so.
func jobDoc(id, job string, version uint64) document.Doc {
	body := fmt.Sprintf(`{"_id":%q,"content":"by %s","sluice_job":%q}`, id, job, job)
	if job == "" {
		body = fmt.Sprintf(`{"_id":%q,"content":"by nobody"}`, id)
	}
	return document.Doc{ID: id, Version: version, Body: json.RawMessage(body)}
}

// writeJob writes ids as job with version v.
func writeJob(t *testing.T, s *Store, job string, v uint64, ids ...string) {
	t.Helper()
	var docs []document.Doc
	for _, id := range ids {
		docs = append(docs, jobDoc(id, job, v))
	}
	mustWrite(t, s, coll, docs...)
}

// contentOf returns the stored content of id, or "" when it is gone.
func contentOf(t *testing.T, s *Store, id string) string {
	t.Helper()
	raw, err := s.GetDoc(t.Context(), coll, id)
	if err != nil {
		return ""
	}
	var d struct{ Content string }
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	return d.Content
}

// jobWrite is one write of a rollback scenario: job writes ids at version v.
type jobWrite struct {
	job string
	v   uint64
	ids []string
}

// jobRollbackCase is a scenario of TestRollbackJobDocs.
type jobRollbackCase struct {
	name string
	// writes are applied in order.
	writes []jobWrite
	// rollbacks before the one checked (deleting).
	before  []string
	job     string
	restore bool
	want    document.JobRollbackResult
	content map[string]string // "" = gone
}

func TestRollbackJobDocs(t *testing.T) {
	ids := []string{"a", "b", "c"}
	tests := []jobRollbackCase{
		{
			name:    "the job wrote nothing",
			writes:  []jobWrite{{"jA", 1, ids}},
			job:     "jB",
			want:    document.JobRollbackResult{},
			content: map[string]string{"a": "by jA", "b": "by jA", "c": "by jA"},
		},
		{
			name:    "the job wrote nothing, restoring",
			writes:  []jobWrite{{"jA", 1, ids}},
			job:     "jB",
			restore: true,
			want:    document.JobRollbackResult{},
			content: map[string]string{"a": "by jA", "b": "by jA", "c": "by jA"},
		},
		{
			name:    "nothing superseded",
			writes:  []jobWrite{{"jB", 2, ids}},
			job:     "jB",
			want:    document.JobRollbackResult{Deleted: 3},
			content: map[string]string{"a": "", "b": "", "c": ""},
		},
		{
			name:    "the finding: A then B, roll back B",
			writes:  []jobWrite{{"jA", 1, ids}, {"jB", 2, ids}},
			job:     "jB",
			want:    document.JobRollbackResult{Deleted: 3, Superseded: map[string]int64{"jA": 3}},
			content: map[string]string{"a": "", "b": "", "c": ""},
		},
		{
			name:    "two earlier jobs share the ids",
			writes:  []jobWrite{{"jA1", 1, ids}, {"jA2", 2, ids[:2]}, {"jB", 3, ids}},
			job:     "jB",
			want:    document.JobRollbackResult{Deleted: 3, Superseded: map[string]int64{"jA1": 3, "jA2": 2}},
			content: map[string]string{"a": "", "b": "", "c": ""},
		},
		{
			name:    "a later job's rewrite stays",
			writes:  []jobWrite{{"jA", 1, ids}, {"jB", 2, ids}, {"jC", 3, ids[:1]}},
			job:     "jB",
			want:    document.JobRollbackResult{Deleted: 2, Superseded: map[string]int64{"jA": 2}},
			content: map[string]string{"a": "by jC", "b": "", "c": ""},
		},
		{
			name:    "restore the previous version",
			writes:  []jobWrite{{"jA1", 1, ids}, {"jA2", 2, ids[:2]}, {"jB", 3, ids[1:]}},
			job:     "jB",
			restore: true,
			want:    document.JobRollbackResult{Restored: 2},
			content: map[string]string{"a": "by jA2", "b": "by jA2", "c": "by jA1"},
		},
		{
			name:    "restore without a previous version deletes",
			writes:  []jobWrite{{"jA", 1, ids[:1]}, {"jB", 2, ids}},
			job:     "jB",
			restore: true,
			want:    document.JobRollbackResult{Restored: 1, Deleted: 2},
			content: map[string]string{"a": "by jA", "b": "", "c": ""},
		},
		{
			name:    "restore skips a previous version that was itself rolled back",
			writes:  []jobWrite{{"jA0", 1, ids[:1]}, {"jA", 2, ids}, {"jB", 3, ids}},
			before:  []string{"jA"},
			job:     "jB",
			restore: true,
			want:    document.JobRollbackResult{Restored: 1, Deleted: 2},
			content: map[string]string{"a": "by jA0", "b": "", "c": ""},
		},
		{
			name:    "a job rewriting its own documents keeps nothing",
			writes:  []jobWrite{{"jB", 1, ids}, {"jB", 2, ids}},
			job:     "jB",
			restore: true,
			want:    document.JobRollbackResult{Deleted: 3},
			content: map[string]string{"a": "", "b": "", "c": ""},
		},
		{
			name:    "a document written without a job is never named",
			writes:  []jobWrite{{"", 1, ids[:1]}, {"jB", 2, ids[:2]}},
			job:     "jB",
			want:    document.JobRollbackResult{Deleted: 2},
			content: map[string]string{"a": "", "b": "", "c": ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkJobRollback(t, tt) })
	}
}

// checkJobRollback applies tt's writes and earlier rollbacks to a fresh store, rolls back
// tt.job and checks the outcome, the content left, that a redelivered rollback changes
// nothing and that no version of the job is kept.
func checkJobRollback(t *testing.T, tt jobRollbackCase) {
	s := tempStore(t)
	for _, w := range tt.writes {
		writeJob(t, s, w.job, w.v, w.ids...)
	}
	for _, j := range tt.before {
		if _, err := s.RollbackJobDocs(t.Context(), coll, document.JobRollback{Job: j, ID: j + "@1"}); err != nil {
			t.Fatal(err)
		}
	}
	// The preview says what the rollback then does, and changes nothing (previewed twice,
	// in both modes, before it).
	var preview document.JobRollbackPreview
	for _, restore := range []bool{!tt.restore, tt.restore} {
		p, err := s.PreviewJobRollback(t.Context(), coll, tt.job, restore)
		if err != nil {
			t.Fatal(err)
		}
		preview = p
	}
	rb := document.JobRollback{Job: tt.job, ID: tt.job + "@2", RestorePrevious: tt.restore}
	got, err := s.RollbackJobDocs(t.Context(), coll, rb)
	if err != nil {
		t.Fatal(err)
	}
	if preview.Truncated || preview.Deleted() != got.Deleted || preview.Restorable != got.Restored ||
		preview.Documents != got.Deleted+got.Restored || !maps.Equal(preview.Superseded, got.Superseded) {
		t.Fatalf("preview = %+v, then rollback = %+v", preview, got)
	}
	if got.Deleted != tt.want.Deleted || got.Restored != tt.want.Restored || !maps.Equal(got.Superseded, tt.want.Superseded) {
		t.Fatalf("rollback = %+v, want %+v", got, tt.want)
	}
	for id, want := range tt.content {
		if c := contentOf(t, s, id); c != want {
			t.Errorf("%s holds %q, want %q", id, c, want)
		}
	}
	// The same rollback carried out again (a redelivered event) changes nothing and
	// reports the first outcome.
	again, err := s.RollbackJobDocs(t.Context(), coll, rb)
	if err != nil || again.Deleted != got.Deleted || again.Restored != got.Restored || !maps.Equal(again.Superseded, got.Superseded) {
		t.Fatalf("again = %+v, %v; first %+v", again, err, got)
	}
	// Nothing of the rolled-back job is kept to be restored later.
	if n := keptOf(t, s, tt.job); n != 0 {
		t.Fatalf("%d versions of %s still kept", n, tt.job)
	}
}

// The preview refuses what the rollback refuses, and reads a closed store never.
func TestPreviewJobRollbackRefusesBadInput(t *testing.T) {
	s := tempStore(t)
	if _, err := s.PreviewJobRollback(t.Context(), coll, "", false); err == nil {
		t.Fatal("no job accepted")
	}
	if _, err := s.PreviewJobRollback(t.Context(), "bad name", "j", false); err == nil {
		t.Fatal("bad collection accepted")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PreviewJobRollback(t.Context(), coll, "j", false); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed store: %v, want ErrClosed", err)
	}
}

func keptOf(t *testing.T, s *Store, job string) int {
	t.Helper()
	var n int
	if err := s.r.QueryRowContext(t.Context(), "SELECT count(*) FROM previous_documents WHERE job = ?", job).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A document keeps at most MaxPreviousVersions earlier versions: the oldest writer is
// dropped, and a deleting rollback names only the writers kept.
func TestPreviousVersionsBounded(t *testing.T) {
	s := tempStore(t)
	for v := 1; v <= MaxPreviousVersions+2; v++ {
		writeJob(t, s, fmt.Sprintf("j%d", v), uint64(v), "x")
	}
	var n int
	if err := s.r.QueryRowContext(t.Context(), "SELECT count(*) FROM previous_documents").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != MaxPreviousVersions {
		t.Fatalf("%d versions kept, want %d", n, MaxPreviousVersions)
	}
	last := fmt.Sprintf("j%d", MaxPreviousVersions+2)
	res, err := s.RollbackJobDocs(t.Context(), coll, document.JobRollback{Job: last, ID: "r"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for v := 2; v <= MaxPreviousVersions+1; v++ {
		want[fmt.Sprintf("j%d", v)] = 1
	}
	if !maps.Equal(res.Superseded, want) {
		t.Fatalf("superseded %v, want %v", res.Superseded, want)
	}
	// Deleting a document drops its kept versions too.
	if err := s.r.QueryRowContext(t.Context(), "SELECT count(*) FROM previous_documents").Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d versions kept after the delete (%v)", n, err)
	}
}

// A file from schema version 2 is migrated: documents stay, and a rewrite by another job is
// then kept.
func TestMigrateFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{schema, migrations[1], "PRAGMA user_version = 2",
		`INSERT INTO documents VALUES ('chunks_test', 'x', 1, '{"_id":"x","content":"by jA","sluice_job":"jA"}', x'00', 0)`} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	_ = raw.Close()
	s := openStore(t, path)
	writeJob(t, s, "jB", 2, "x")
	res, err := s.RollbackJobDocs(context.Background(), coll, document.JobRollback{Job: "jB", ID: "r", RestorePrevious: true})
	if err != nil || res.Restored != 1 || contentOf(t, s, "x") != "by jA" {
		t.Fatalf("restore after migration: %+v %v, content %q", res, err, contentOf(t, s, "x"))
	}
}

func TestRollbackJobDocsRefusesBadInput(t *testing.T) {
	s := tempStore(t)
	if _, err := s.RollbackJobDocs(t.Context(), "1bad", document.JobRollback{Job: "j", ID: "r"}); err == nil {
		t.Fatal("bad collection accepted")
	}
	if _, err := s.RollbackJobDocs(t.Context(), coll, document.JobRollback{Job: "j"}); err == nil {
		t.Fatal("rollback without an id accepted")
	}
	_ = s.Close()
	if _, err := s.RollbackJobDocs(t.Context(), coll, document.JobRollback{Job: "j", ID: "r"}); err == nil {
		t.Fatal("closed store accepted a rollback")
	}
}

// Regression: the trigger's lookup of a document's kept version by its job used the by-job
// index, scanning every kept version of that job per rewrite: rewriting 20,000 documents of
// one job by another took 85 s instead of 1. Every statement of the trigger must search by
// the document.
func TestKeepPreviousSearchesByDocument(t *testing.T) {
	s := tempStore(t)
	for _, q := range []string{
		"DELETE FROM previous_documents WHERE collection = 'c' AND id = 'x' AND job = 'j'",
		"DELETE FROM previous_documents WHERE collection = 'c' AND id = 'x' AND seq NOT IN (SELECT seq FROM previous_documents WHERE collection = 'c' AND id = 'x' ORDER BY seq DESC LIMIT 4)",
	} {
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(detail, "previous_by_job") || strings.HasPrefix(detail, "SCAN previous_documents") {
				t.Errorf("%s: plan %q", q, detail)
			}
		}
		_ = rows.Close()
	}
}
