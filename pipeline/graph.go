package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// GraphStore is where graph batches are applied: sinks/graph's SQLite or PostgreSQL store.
type GraphStore interface {
	// ApplyBatch applies b to env's graph (dev, test or prod; each env is a graph of its
	// own) in one transaction, all or nothing, and records msgID in env so that the same
	// message applied again changes nothing. Errors are classified with pipeline/fault.
	ApplyBatch(ctx context.Context, env string, b graph.Batch, msgID string) (graph.Result, error)
}

// handleGraph applies one graph batch message: the batch (GraphStore shape, nodes and edges)
// goes to the graph of the env its subject names (sluice.v1.graph.{env}; the loader publishes
// a job there, a requeue or a replay keeps the subject) in one transaction, keyed by the
// message's stream position so a redelivery never bumps versions twice; acked after commit.
// A batch with an edge whose endpoint is not stored yet in that env is put back at the end
// of the stream (requeueGraph); every other invalid batch is dead-lettered at once.
func (w *Worker) handleGraph(msg *message.Message) error {
	m, meta, err := settle.Native(msg)
	if err != nil {
		return fmt.Errorf("graph handler: %w", err)
	}
	// The message's span, continuing its headers' trace: the graph store's transaction is its
	// child, retries and dead letters its events.
	ctx, _ := telemetry.StartMessage(msg.Context(), telemetry.ScopePipeline, m, meta)
	defer trace.SpanFromContext(ctx).End()
	env, ok := schemas.EnvFromSubject(m.Subject())
	if !ok {
		return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject()), "")
	}
	jobID := m.Headers().Get(schemas.HeaderJob)
	item := int64(-1)
	if jobID != "" {
		n, err := strconv.ParseInt(m.Headers().Get(schemas.HeaderItem), 10, 64)
		if err != nil || n < 0 || !schemas.ValidKey(jobID) {
			return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanentf(fault.Validation,
				"a graph batch with %s must carry a valid job id and a %s index", schemas.HeaderJob, schemas.HeaderItem), "")
		}
		item = n
	}
	batch, err := graph.FromGraphStoreBatch(bytes.NewReader(m.Data()))
	if err != nil {
		return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, err, "graph")
	}
	// Held through a graph store outage (a PostgreSQL restart) by the circuit breaker: the
	// graph line is ordered, so a broker retry delay would hold every batch behind this one.
	var applyErr error
	if err := w.graphBreaker.hold(ctx, func() error {
		// The marker is the stream position: unique across envs (one stream holds every
		// env's subject), and kept per env by the store anyway.
		end := w.metrics.sinks.Begin(instrument.SinkGraph, instrument.CommandApplyGraph)
		_, applyErr = w.cfg.Graph.ApplyBatch(ctx, env, batch, meta.Stream+":"+strconv.FormatUint(meta.Sequence.Stream, 10))
		end(instrument.Status(applyErr, nil))
		var missing *graph.MissingEndpointsError
		if applyErr == nil || fault.IsPermanent(applyErr) || errors.As(applyErr, &missing) {
			return nil
		}
		return applyErr
	}); err != nil {
		applyErr = fmt.Errorf("held while the graph store was down: %w", err)
	}
	if err := applyErr; err != nil {
		var missing *graph.MissingEndpointsError
		if errors.As(err, &missing) {
			return w.requeueGraph(ctx, msg, m, meta, missing)
		}
		if fault.IsPermanent(err) {
			return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, err, "graph")
		}
		return w.settler.Fail(ctx, settle.Watermill(msg), m, meta, fmt.Errorf("apply graph batch: %w", err), "graph")
	}
	if jobID != "" {
		if err := w.progress.Record(ctx, jobs.Mark{Job: jobID, Item: item, Outcome: jobs.Written}); err != nil {
			return w.settler.Fail(ctx, settle.Watermill(msg), m, meta, fmt.Errorf("record progress: %w", err), "")
		}
	}
	w.dlq.Forget(meta)
	w.metrics.messages.Add(meta.Stream, instrument.OutcomeApplied, 1)
	return nil
}

// maxGraphRequeues bounds how often a graph batch with a missing endpoint goes back to the end
// of its stream before it is dead-lettered; with the delay before each, a batch whose nodes
// never come costs the graph consumer at most ≈ maxGraphRequeues × maxRequeueDelay.
const (
	maxGraphRequeues = 8
	maxRequeueDelay  = time.Second
)

// requeueGraph handles a graph batch with an edge whose endpoint is not stored. The nodes may
// still come — another upload's, published after this one — but they queue behind it: the
// graph consumer applies one batch at a time (MaxAckPending 1), so a Nak, even with a delay,
// would hold them back until the deliveries ran out (≈4 minutes a batch, issue 11). So after
// a short delay the batch is published again at the end of the stream, with HeaderRequeues
// counting, and the original is acked; after maxGraphRequeues it is dead-lettered. The copy's
// Nats-Msg-Id is derived from the original's stream position, so a redelivered original
// requeues once.
func (w *Worker) requeueGraph(ctx context.Context, msg *message.Message, m jetstream.Msg, meta *jetstream.MsgMetadata, missing *graph.MissingEndpointsError) error {
	n, _ := strconv.Atoi(m.Headers().Get(schemas.HeaderRequeues))
	if n >= maxGraphRequeues {
		return w.settler.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation,
			fmt.Errorf("requeued %d times, the endpoints never arrived: %w", n, missing)), "graph")
	}
	select {
	case <-time.After(min(w.cfg.Retry.Delay(uint64(n+1)), maxRequeueDelay)):
	case <-ctx.Done():
		return w.settler.Fail(ctx, settle.Watermill(msg), m, meta, ctx.Err(), "graph")
	}
	out := nats.NewMsg(m.Subject())
	out.Data = m.Data()
	for k, vs := range m.Headers() {
		out.Header[k] = append([]string(nil), vs...)
	}
	out.Header.Set(schemas.HeaderRequeues, strconv.Itoa(n+1))
	out.Header.Set(nats.MsgIdHdr, fmt.Sprintf("requeue/%s", dlq.MsgKey(meta)))
	if _, err := w.cfg.JS.PublishMsg(ctx, out); err != nil {
		return w.settler.Fail(ctx, settle.Watermill(msg), m, meta, fmt.Errorf("requeue graph batch: %w", err), "graph")
	}
	w.log.InfoContext(ctx, "graph batch requeued: an edge endpoint is not stored yet", "subject", m.Subject(), "stream_seq", meta.Sequence.Stream,
		"requeues", n+1, "missing", len(missing.Missing))
	w.dlq.Forget(meta)
	w.metrics.messages.Add(meta.Stream, instrument.OutcomeRequeued, 1)
	return nil
}
