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
	err := s.c.Find(ctx, coll, map[string]any{"sluice_job": rb.Job}, dataapi.FindOptions{Projection: map[string]any{PrevJobsField: 1}},
		func(doc json.RawMessage) error {
			var d struct {
				Prev []string `json:"sluice_prev_jobs"`
			}
			if json.Unmarshal(doc, &d) != nil {
				return nil // not ours to judge: the document is still deleted
			}
			for _, j := range d.Prev {
				if j == "" || j == rb.Job {
					continue
				}
				if res.Superseded == nil {
					res.Superseded = map[string]int64{}
				}
				res.Superseded[j]++
			}
			return nil
		})
	var ae *dataapi.APIError
	if errors.As(err, &ae) && ae.Code == dataapi.CodeUnknownCollection {
		return document.JobRollbackResult{}, nil
	}
	if err != nil {
		return document.JobRollbackResult{}, fmt.Errorf("roll back job %s in %s: read its documents: %w", rb.Job, coll, err)
	}
	if rb.BeforeDelete != nil && len(res.Superseded) > 0 {
		if err := rb.BeforeDelete(ctx, res.Superseded); err != nil {
			return document.JobRollbackResult{}, fmt.Errorf("roll back job %s in %s: %w", rb.Job, coll, err)
		}
	}
	res.Deleted, err = s.DeleteJobDocs(ctx, coll, rb.Job)
	return res, err
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
