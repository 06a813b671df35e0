package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"strconv"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// GraphStore is where graph batches are applied: sinks/graph's SQLite or PostgreSQL store.
type GraphStore interface {
	// ApplyBatch applies b in one transaction, all or nothing, and records msgID so that the
	// same message applied again changes nothing. Errors are classified with pipeline/fault.
	ApplyBatch(ctx context.Context, b graph.Batch, msgID string) (graph.Result, error)
}

// handleGraph applies one graph batch message: the batch (GraphStore shape, nodes and edges)
// goes to the graph store in one transaction, keyed by the message's stream position so a
// redelivery never bumps versions twice; acked after commit.
func (w *Worker) handleGraph(msg *message.Message) error {
	m, meta, err := native(msg)
	if err != nil {
		return fmt.Errorf("graph handler: %w", err)
	}
	ctx := msg.Context()
	if _, ok := schemas.EnvFromSubject(m.Subject()); !ok {
		return w.deadLetter(ctx, wm(msg), m, meta, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject()), "")
	}
	jobID := m.Headers().Get(schemas.HeaderJob)
	item := int64(-1)
	if jobID != "" {
		n, err := strconv.ParseInt(m.Headers().Get(schemas.HeaderItem), 10, 64)
		if err != nil || n < 0 || !schemas.ValidKey(jobID) {
			return w.deadLetter(ctx, wm(msg), m, meta, fault.Permanentf(fault.Validation,
				"a graph batch with %s must carry a valid job id and a %s index", schemas.HeaderJob, schemas.HeaderItem), "")
		}
		item = n
	}
	batch, err := graph.FromGraphStoreBatch(bytes.NewReader(m.Data()))
	if err != nil {
		return w.deadLetter(ctx, wm(msg), m, meta, err, "graph")
	}
	if _, err := w.cfg.Graph.ApplyBatch(ctx, batch, meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10)); err != nil {
		if fault.IsPermanent(err) {
			return w.deadLetter(ctx, wm(msg), m, meta, err, "graph")
		}
		return w.fail(ctx, wm(msg), m, meta, fmt.Errorf("apply graph batch: %w", err), "graph")
	}
	if jobID != "" {
		if err := w.progress.Record(ctx, Mark{Job: jobID, Item: item, Outcome: Written}); err != nil {
			return w.fail(ctx, wm(msg), m, meta, fmt.Errorf("record progress: %w", err), "")
		}
	}
	w.dlq.forget(meta)
	w.metrics.outcome("graph_applied", 0)
	return nil
}
