package pipeline

import (
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
)

// handleJobEvent applies a job's open or seal event to the job store.
func (w *Worker) handleJobEvent(msg *message.Message) error {
	m, meta, err := settle.Native(msg)
	if err != nil {
		return fmt.Errorf("job handler: %w", err)
	}
	ctx, _ := telemetry.StartMessage(msg.Context(), telemetry.ScopePipeline, m, meta) // its retries and dead letter are events on it
	defer trace.SpanFromContext(ctx).End()
	if err := w.validator.Validate(schemas.JobEvent, m.Data()); err != nil {
		return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, err), "")
	}
	var ev schemas.JobEventEnvelope
	if err := ev.UnmarshalJSON(m.Data()); err != nil {
		return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, err), "")
	}
	switch {
	case ev.Open != nil:
		_, err = w.jobs.Open(ctx, *ev.Open)
	case ev.Seal != nil:
		if cerr := ev.Seal.Check(); cerr != nil {
			return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, cerr), "")
		}
		_, err = w.jobs.Seal(ctx, *ev.Seal)
	case ev.Rollback != nil:
		if verr := w.verifyRollback(m); verr != nil {
			return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, verr, "")
		}
		err = w.rollback(ctx, *ev.Rollback)
	}
	if err != nil {
		return w.settler.Fail(ctx, settle.Watermill(msg), m, meta, err, "")
	}
	w.metrics.messages.Add(meta.Stream, instrument.OutcomeApplied, 1)
	return nil
}

// verifyRollback checks that the API signed rollback m (issue 11: a forged rollback deleted
// 50,000 documents with no requester recorded).
func (w *Worker) verifyRollback(m jetstream.Msg) error {
	if w.cfg.Key == nil {
		return fault.Permanentf(fault.Auth, "rollback refused: this worker has no command key to verify it (set SLUICE_COMMAND_KEY)")
	}
	if err := w.cfg.Key.VerifyMsg(sign.Rollback, m.Headers(), m.Data()); err != nil {
		return fmt.Errorf("rollback refused: %w", err)
	}
	return nil
}

// rollback undoes what a job wrote last and records the outcome: in the job record (what was
// deleted or restored, and the earlier jobs whose documents went with it) and in each of those
// earlier jobs (state superseded). The superseded jobs are marked before the rollback is
// recorded done, and a sink that records its outcome (JobRollbacker on the embedded store)
// reports it again when the event is redelivered, so a crash in between loses no mark.
// Transient failures are returned (the event is retried); a permanent one is recorded as
// failed.
func (w *Worker) rollback(ctx context.Context, ev schemas.JobRollback) error {
	id := jobs.RollbackID(ev)
	coll := w.CollectionFor(ev.Env)
	mark := func(ctx context.Context, superseded map[string]int64) error {
		return w.jobs.MarkSuperseded(ctx, ev.JobID, id, superseded)
	}
	var res document.JobRollbackResult
	var err error
	switch s := w.cfg.Sink.(type) {
	case JobRollbacker:
		res, err = s.RollbackJobDocs(ctx, coll, document.JobRollback{
			Job: ev.JobID, ID: id, RestorePrevious: ev.RestorePrevious, BeforeDelete: mark,
		})
	case JobDocDeleter:
		if ev.RestorePrevious {
			err = fault.Permanentf(fault.Validation, "the %s store keeps no previous versions to restore; roll back without restoring to delete the job's documents", w.cfg.SinkName)
			break
		}
		res.Deleted, err = s.DeleteJobDocs(ctx, coll, ev.JobID)
	default:
		err = fault.Permanentf(fault.Validation, "the %s store cannot delete documents by job", w.cfg.SinkName)
	}
	if err != nil && !fault.IsPermanent(err) {
		return err
	}
	if err == nil {
		// Marked already by BeforeDelete on a sink that calls it; marking again is harmless.
		if merr := mark(ctx, res.Superseded); merr != nil {
			return merr
		}
	}
	// A refused rollback says why, at warn; a done one has no error to name (it logged
	// err=<nil>, issue 16).
	if err != nil {
		w.log.WarnContext(ctx, "rollback refused", "job_id", ev.JobID, "rollback_id", id, "err", err)
	} else {
		w.log.InfoContext(ctx, "rolled back job", "job_id", ev.JobID, "rollback_id", id, "deleted", res.Deleted, "restored", res.Restored,
			"superseded_jobs", len(res.Superseded))
	}
	_, ferr := w.jobs.FinishRollback(ctx, ev.JobID, id, res, err)
	return ferr
}
