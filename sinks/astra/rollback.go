package astra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/document"
)

// DeleteJobDocs deletes every document of coll whose "sluice_job" is jobID (job rollback) and
// returns how many. deleteMany removes 20 per call; it loops until none is left. A missing
// collection has nothing to delete.
func (s *Sink) DeleteJobDocs(ctx context.Context, coll, jobID string) (int64, error) {
	n, err := s.c.DeleteMany(ctx, coll, map[string]any{"sluice_job": jobID})
	var ae *dataapi.APIError
	if errors.As(err, &ae) && ae.Code == dataapi.CodeUnknownCollection {
		return 0, nil
	}
	if err != nil {
		return int64(n), fmt.Errorf("delete documents of job %s from %s: %w", jobID, coll, err)
	}
	return int64(n), nil
}

// PrevJobsField is the document field in which Sink keeps the earlier jobs that wrote a
// document (their "sluice_job"), newest first, at most MaxPrevJobs: when a write replaces a
// document another job wrote, the stored document's job joins the list. A rollback that deletes
// the document names those jobs as superseded. A body's own field of that name is dropped.
const PrevJobsField = "sluice_prev_jobs"

// MaxPrevJobs bounds PrevJobsField, as the embedded store bounds its kept versions (four
// earlier passes of the legacy pipeline), so that a document rewritten by many jobs does not
// grow without end.
const MaxPrevJobs = 4

// RollbackJobDocs deletes every document of coll whose "sluice_job" is rb.Job (the job wrote
// it last) and reports how many, and per earlier job (PrevJobsField) how many of its documents
// went with them. AstraDB keeps no previous versions: rb.RestorePrevious fails with a
// permanent fault.Validation error and nothing is deleted. It reads the job's documents first
// (their PrevJobsField only), calls rb.BeforeDelete with the counts, then deletes: a document
// another job rewrites between the read and the delete stays, and its earlier writers are
// then counted although their version went by that rewrite. A missing collection has nothing
// to delete. Carrying the same rollback out again deletes nothing more and reports nothing
// superseded (the Data API has no transactions to record the first outcome with). It blocks
// for one find per page of 20 documents and one deleteMany per 20; safe for concurrent use.
func (s *Sink) RollbackJobDocs(ctx context.Context, coll string, rb document.JobRollback) (document.JobRollbackResult, error) {
	var res document.JobRollbackResult
	if rb.RestorePrevious {
		return res, fault.Permanentf(fault.Validation, "AstraDB keeps no previous version of a document to restore; roll back without restoring to delete the job's documents")
	}
	plan, err := s.tallyJobDocs(ctx, coll, rb.Job, 0)
	if unknownCollection(err) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("roll back job %s in %s: read its documents: %w", rb.Job, coll, err)
	}
	res.Superseded = plan.Superseded
	if rb.BeforeDelete != nil && len(res.Superseded) > 0 {
		if err := rb.BeforeDelete(ctx, res.Superseded); err != nil {
			return document.JobRollbackResult{}, fmt.Errorf("roll back job %s in %s: %w", rb.Job, coll, err)
		}
	}
	res.Deleted, err = s.DeleteJobDocs(ctx, coll, rb.Job)
	return res, err
}

// MaxPreviewDocuments bounds how many of a job's documents PreviewJobRollback reads: one find
// per page of 20, so 100,000 documents are 5,000 calls (minutes against AstraDB). A preview
// that stops there says Truncated; its counts are then lower bounds.
const MaxPreviewDocuments = 100_000

// PreviewJobRollback reports what RollbackJobDocs would do now to job's documents in coll,
// without changing anything: it reads them as the rollback does (their PrevJobsField only,
// page by page) and counts with the same code. AstraDB keeps no previous versions, so
// restorePrevious changes nothing (Restorable is 0: every document would be deleted) and is
// not refused: the caller says restoring is unsupported. A missing collection previews
// nothing. It reads at most MaxPreviewDocuments documents and then sets Truncated. It blocks
// for one find per page of 20; safe for concurrent use.
func (s *Sink) PreviewJobRollback(ctx context.Context, coll, job string, restorePrevious bool) (document.JobRollbackPreview, error) {
	_ = restorePrevious // nothing to restore on AstraDB: the preview is the same
	plan, err := s.tallyJobDocs(ctx, coll, job, MaxPreviewDocuments)
	if unknownCollection(err) {
		return document.JobRollbackPreview{}, nil
	}
	if err != nil {
		return document.JobRollbackPreview{}, fmt.Errorf("preview rollback of job %s in %s: read its documents: %w", job, coll, err)
	}
	return plan, nil
}

// tallyJobDocs reads the documents of coll whose "sluice_job" is job (their PrevJobsField
// only) and counts them as a rollback that deletes them (document.JobRollbackPreview.Tally),
// for RollbackJobDocs and PreviewJobRollback alike. limit > 0 stops after that many documents
// and sets Truncated when there were more; 0 reads them all. A missing collection is the
// Data API's error (unknownCollection).
func (s *Sink) tallyJobDocs(ctx context.Context, coll, job string, limit int) (document.JobRollbackPreview, error) {
	var plan document.JobRollbackPreview
	opts := dataapi.FindOptions{Projection: map[string]any{PrevJobsField: 1}}
	if limit > 0 {
		opts.Limit = limit + 1 // one more says whether there are more
	}
	err := s.c.Find(ctx, coll, map[string]any{"sluice_job": job}, opts, func(doc json.RawMessage) error {
		if limit > 0 && plan.Documents == int64(limit) {
			plan.Truncated = true
			return nil
		}
		var d struct {
			Prev []string `json:"sluice_prev_jobs"`
		}
		if json.Unmarshal(doc, &d) != nil {
			d.Prev = nil // not ours to judge: the document is still deleted
		}
		plan.Tally(job, false, false, d.Prev)
		return nil
	})
	if err != nil {
		return document.JobRollbackPreview{}, err
	}
	return plan, nil
}

// unknownCollection reports whether err is the Data API's answer for a missing collection.
func unknownCollection(err error) bool {
	var ae *dataapi.APIError
	return errors.As(err, &ae) && ae.Code == dataapi.CodeUnknownCollection
}

// withPrevJobs returns body (a prepared document, which has no PrevJobsField) with
// PrevJobsField naming stored's writer and its earlier ones, when stored was written by
// another job than body. Else body as it is, with stored's list carried over.
func withPrevJobs(stored, body json.RawMessage) (json.RawMessage, error) {
	var st, ours struct {
		Job  string   `json:"sluice_job"`
		Prev []string `json:"sluice_prev_jobs"`
	}
	if err := json.Unmarshal(stored, &st); err != nil {
		return nil, fault.Retry(fault.Transient, fmt.Errorf("decode stored document: %w", err))
	}
	if err := json.Unmarshal(body, &ours); err != nil {
		return nil, fault.Permanent(fault.Validation, fmt.Errorf("decode document: %w", err))
	}
	prev := make([]string, 0, MaxPrevJobs)
	if st.Job != "" && st.Job != ours.Job {
		prev = append(prev, st.Job)
	}
	for _, j := range st.Prev {
		if len(prev) == MaxPrevJobs {
			break
		}
		if j != "" && j != ours.Job && !slices.Contains(prev, j) {
			prev = append(prev, j)
		}
	}
	if len(prev) == 0 {
		return body, nil
	}
	list, err := json.Marshal(prev)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", PrevJobsField, err)
	}
	out := make([]byte, 0, len(body)+len(list)+len(PrevJobsField)+4)
	out = append(out, body[:len(body)-1]...) // prepare ends the object with '}'
	out = append(out, `,"`+PrevJobsField+`":`...)
	out = append(out, list...)
	return append(out, '}'), nil
}
