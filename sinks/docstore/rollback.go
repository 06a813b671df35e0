package docstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/sinks/document"
)

// MaxPreviousVersions is how many earlier versions of one document the store keeps, one per
// earlier job that wrote it (the newest of that job's writes): the version a rollback with
// RestorePrevious puts back, and the earlier writers a rollback that deletes names as
// superseded. Four covers a document rewritten by each pass of the legacy pipeline (Pass A
// chunks, B enriched, C, D vectors) once more; each kept version costs the document's size
// again. Past it the oldest is dropped: it can no longer be restored nor named.
const MaxPreviousVersions = 4

// previousSchema is migration 3. A document's previous versions are kept by a trigger, so the
// write path pays nothing for a new document and one indexed insert for a document another
// job rewrites. A write by the same job (a redelivery, a newer version of its own) keeps
// nothing: a rollback of that job removes all of its versions anyway.
const previousSchema = `
CREATE TABLE IF NOT EXISTS previous_documents (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	collection TEXT NOT NULL,
	id         TEXT NOT NULL,
	job        TEXT NOT NULL,
	version    INTEGER NOT NULL,
	body       TEXT NOT NULL,
	hash       BLOB NOT NULL,
	updated_at INTEGER NOT NULL
);
-- One kept version per earlier job: the trigger's lookups name all three columns, so that
-- SQLite never picks previous_by_job for them (that scanned every kept version of the job per
-- rewrite: 20,000 rewrites took 85 s instead of 1).
CREATE UNIQUE INDEX IF NOT EXISTS previous_by_id ON previous_documents (collection, id, job);
CREATE INDEX IF NOT EXISTS previous_by_job ON previous_documents (collection, job);
CREATE TABLE IF NOT EXISTS rollbacks (
	collection  TEXT NOT NULL,
	rollback_id TEXT NOT NULL,
	result      TEXT NOT NULL,
	done_at     INTEGER NOT NULL,
	PRIMARY KEY (collection, rollback_id)
);
CREATE TRIGGER IF NOT EXISTS keep_previous BEFORE UPDATE OF body ON documents
WHEN coalesce(json_extract(old.body, '$.sluice_job'), '') IS NOT coalesce(json_extract(new.body, '$.sluice_job'), '')
BEGIN
	DELETE FROM previous_documents
	 WHERE collection = old.collection AND id = old.id AND job = coalesce(json_extract(old.body, '$.sluice_job'), '');
	INSERT INTO previous_documents (collection, id, job, version, body, hash, updated_at)
	VALUES (old.collection, old.id, coalesce(json_extract(old.body, '$.sluice_job'), ''), old.version, old.body, old.hash, old.updated_at);
	DELETE FROM previous_documents
	 WHERE collection = old.collection AND id = old.id AND seq NOT IN (
		SELECT seq FROM previous_documents WHERE collection = old.collection AND id = old.id
		 ORDER BY seq DESC LIMIT 4);
END;
CREATE TRIGGER IF NOT EXISTS drop_previous AFTER DELETE ON documents
BEGIN
	DELETE FROM previous_documents WHERE collection = old.collection AND id = old.id;
END`

// RollbackJobDocs undoes what job rb.Job wrote in collection, in one synced transaction, and
// returns what it did. For each document whose "sluice_job" is rb.Job (the job wrote it
// last): with rb.RestorePrevious and a kept previous version (MaxPreviousVersions), that
// version is put back as it was; otherwise the document is deleted with its kept versions, and
// every earlier job that had a kept version of it counts it in Superseded. Documents the job
// wrote that a later job rewrote stay; the job's kept versions are dropped everywhere, so
// nothing restores them later.
//
// The outcome is recorded under (collection, rb.ID) in the same transaction: carrying out
// the same rollback again changes nothing and returns the first outcome (a redelivered
// rollback event still names the jobs it superseded). It holds the writer connection for the
// whole rollback (writes wait behind it: 20,000 documents took 2.2 s to delete, 3.5 s to
// restore on a 2-core test machine) and keeps the
// ids of the job's current documents in memory. It honours ctx; on error nothing changed.
// Safe for concurrent use.
func (s *Store) RollbackJobDocs(ctx context.Context, collection string, rb document.JobRollback) (document.JobRollbackResult, error) {
	var res document.JobRollbackResult
	if err := s.checkOpen("roll back job"); err != nil {
		return res, err
	}
	if err := checkCollection(collection); err != nil {
		return res, err
	}
	if rb.Job == "" || rb.ID == "" {
		return res, errors.New("docstore: roll back job: Job and ID are required")
	}
	fail := func(what string, err error) (document.JobRollbackResult, error) {
		return document.JobRollbackResult{}, fmt.Errorf("roll back job %s in %s: %s: %w", rb.Job, collection, what, err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fail("begin", err)
	}
	defer func() { _ = tx.Rollback() }()
	var recorded string
	err = tx.QueryRowContext(ctx, "SELECT result FROM rollbacks WHERE collection = ? AND rollback_id = ?", collection, rb.ID).Scan(&recorded)
	switch {
	case err == nil:
		if err := json.Unmarshal([]byte(recorded), &res); err != nil {
			return fail("decode recorded outcome", err)
		}
		return res, nil
	case !errors.Is(err, sql.ErrNoRows):
		return fail("read recorded outcome", err)
	}
	steps, plan, err := planRollback(ctx, tx, collection, rb.Job, rb.RestorePrevious)
	if err != nil {
		return fail("plan", err)
	}
	for _, st := range steps {
		if st.restore != 0 {
			if err := restore(ctx, tx, collection, st.id, st.restore); err != nil {
				return fail("restore "+st.id, err)
			}
			continue
		}
		// The drop_previous trigger deletes the document's kept versions with it.
		if _, err := tx.ExecContext(ctx, "DELETE FROM documents WHERE collection = ? AND id = ?", collection, st.id); err != nil {
			return fail("delete "+st.id, err)
		}
	}
	res = document.JobRollbackResult{Deleted: plan.Deleted(), Restored: plan.Restorable, Superseded: plan.Superseded}
	if _, err := tx.ExecContext(ctx, "DELETE FROM previous_documents WHERE collection = ? AND job = ?", collection, rb.Job); err != nil {
		return fail("drop the job's kept versions", err)
	}
	b, err := json.Marshal(res)
	if err != nil {
		return fail("encode outcome", err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO rollbacks (collection, rollback_id, result, done_at) VALUES (?, ?, ?, unixepoch('subsec') * 1000)",
		collection, rb.ID, string(b)); err != nil {
		return fail("record outcome", err)
	}
	if err := tx.Commit(); err != nil {
		return fail("commit", err)
	}
	return res, nil
}

// PreviewJobRollback reports what RollbackJobDocs would do now to job's documents in
// collection, with or without restorePrevious, without changing anything: it reads in one
// read-only transaction (a snapshot) and counts with the same plan as the rollback. It keeps
// the ids of the job's current documents in memory while it runs; it never truncates. It
// honours ctx; safe for concurrent use, and does not wait for writers.
func (s *Store) PreviewJobRollback(ctx context.Context, collection, job string, restorePrevious bool) (document.JobRollbackPreview, error) {
	if err := s.checkOpen("preview job rollback"); err != nil {
		return document.JobRollbackPreview{}, err
	}
	if err := checkCollection(collection); err != nil {
		return document.JobRollbackPreview{}, err
	}
	if job == "" {
		return document.JobRollbackPreview{}, errors.New("docstore: preview job rollback: job is required")
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return document.JobRollbackPreview{}, fmt.Errorf("preview rollback of job %s in %s: begin: %w", job, collection, err)
	}
	defer func() { _ = tx.Rollback() }()
	_, plan, err := planRollback(ctx, tx, collection, job, restorePrevious)
	if err != nil {
		return document.JobRollbackPreview{}, fmt.Errorf("preview rollback of job %s in %s: %w", job, collection, err)
	}
	return plan, nil
}

// rollbackStep is what a rollback does to one document: put back kept version restore, or
// delete it (restore 0; seq starts at 1).
type rollbackStep struct {
	id      string
	restore int64
}

// planRollback lists what a rollback of job does in collection, document by document, and
// counts it (document.JobRollbackPreview.Tally): RollbackJobDocs carries the steps out and
// PreviewJobRollback reports the counts, so the two cannot drift.
func planRollback(ctx context.Context, tx *sql.Tx, collection, job string, restorePrevious bool) ([]rollbackStep, document.JobRollbackPreview, error) {
	var plan document.JobRollbackPreview
	ids, err := jobDocIDs(ctx, tx, collection, job)
	if err != nil {
		return nil, plan, fmt.Errorf("list documents: %w", err)
	}
	steps := make([]rollbackStep, 0, len(ids))
	for _, id := range ids {
		prev, err := previousVersions(ctx, tx, collection, id, job)
		if err != nil {
			return nil, plan, fmt.Errorf("read previous versions of %s: %w", id, err)
		}
		earlier := make([]string, len(prev))
		for i, p := range prev {
			earlier[i] = p.job
		}
		st := rollbackStep{id: id}
		if plan.Tally(job, restorePrevious, len(prev) > 0, earlier) {
			st.restore = prev[0].seq
		}
		steps = append(steps, st)
	}
	return steps, plan, nil
}

// jobDocIDs returns the ids of collection's documents that job wrote last.
func jobDocIDs(ctx context.Context, tx *sql.Tx, collection, job string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, "SELECT id FROM documents WHERE collection = ? AND json_extract(body, '$.sluice_job') = ?", collection, job)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

type kept struct {
	seq int64
	job string
}

// previousVersions returns the kept versions of document id by jobs other than job, newest
// first.
func previousVersions(ctx context.Context, tx *sql.Tx, collection, id, job string) ([]kept, error) {
	rows, err := tx.QueryContext(ctx, "SELECT seq, job FROM previous_documents WHERE collection = ? AND id = ? AND job <> ? ORDER BY seq DESC", collection, id, job)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out []kept
	for rows.Next() {
		var k kept
		if err := rows.Scan(&k.seq, &k.job); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// restore puts kept version seq back as document id and stops keeping it. It is removed from
// the kept versions before the update, so that the version the update pushes (the rolled-back
// job's, dropped at the end of the rollback) never makes the keep_previous trigger trim an
// older one.
func restore(ctx context.Context, tx *sql.Tx, collection, id string, seq int64) error {
	var version, updatedAt int64
	var body string
	var hash []byte
	if err := tx.QueryRowContext(ctx, "SELECT version, body, hash, updated_at FROM previous_documents WHERE seq = ?", seq).
		Scan(&version, &body, &hash, &updatedAt); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM previous_documents WHERE seq = ?", seq); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, "UPDATE documents SET version = ?, body = ?, hash = ?, updated_at = ? WHERE collection = ? AND id = ?",
		version, body, hash, updatedAt, collection, id)
	return err
}
