package pipeline

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// chunkItem is one chunk of a batch, a single-chunk message or one item of a bundle, and what
// became of it.
type chunkItem struct {
	d *sjs.Delivery
	// mctx is the message's context: its span (a bundle's items share their message's).
	mctx context.Context
	meta *jetstream.MsgMetadata
	job  string
	item int64
	// docs[first:last] of its collection's write are this chunk's documents.
	coll        string
	first, last int
	permanent   error
	transient   error
	// For an item of a bundle: its position, the item as a single-chunk message (its dead
	// letter), and whether it was settled on an earlier delivery (nothing to do).
	pos     int
	bundled *bundleItemMsg
	skip    bool
}

// chunkMsg is one message of a batch: items[lo:hi] are its chunks.
type chunkMsg struct {
	lo, hi int
	bundle bool
}

// handleChunks writes a batch of chunk messages (sjs.BatchHandler): each chunk — a message, or
// an item of a bundle message — is checked and built into documents, each collection's
// documents go to the batcher in one call, the job progress of the written ones is recorded in
// one call, and then each message is settled on its own — acked once its documents and its
// progress are durable, retried with a delay after a transient failure, dead-lettered after a
// permanent one. A bundle's items are dead-lettered one by one and the bundle is acked once all
// of them are settled (settleBundle).
//
// Traced, each message has a span continuing its traceparent (batchSpans); the batch has
// one that links to all of them, under the first message's trace, and the sink's calls are
// its children. Retries and dead letters are events on the message spans (pipeline/settle).
func (w *Worker) handleChunks(ctx context.Context, batch []*sjs.Delivery) {
	w.metrics.batchMsgs.Observe(float64(len(batch)))
	mctxs, bctx, bspan := w.batchSpans(ctx, batch)
	defer endSpans(bspan, mctxs)
	cb := w.collect(batch, mctxs)
	for coll, docs := range cb.docs {
		// Collections are written one after another; a batch spans several only when chunks
		// of different environments arrive together.
		cb.noteResults(coll, w.write(bctx, coll, docs))
	}
	var progressErr error
	if marks := cb.written(); len(marks) > 0 {
		if err := w.progress.RecordAll(bctx, marks); err != nil {
			progressErr = fmt.Errorf("record progress: %w", err)
		}
	}
	for _, cm := range cb.msgs {
		if cm.bundle {
			w.settleBundle(ctx, cb.items[cm.lo:cm.hi], progressErr)
			continue
		}
		w.settleChunk(cb.items[cm.lo], progressErr)
	}
}

// chunkBatch is a batch of chunk messages being handled: its chunks, the messages they came
// from, and their documents by collection (a batch usually has one).
type chunkBatch struct {
	items []chunkItem
	msgs  []chunkMsg
	docs  map[string][]document.Doc
}

// add appends chunk it with its documents docs.
func (cb *chunkBatch) add(it chunkItem, docs []document.Doc) {
	it.first = len(cb.docs[it.coll])
	cb.docs[it.coll] = append(cb.docs[it.coll], docs...)
	it.last = len(cb.docs[it.coll])
	cb.items = append(cb.items, it)
}

// noteResults maps the per-document results of coll's write back to the chunks: the worst
// permanent and transient error of each chunk's documents.
func (cb *chunkBatch) noteResults(coll string, results []error) {
	for i := range cb.items {
		it := &cb.items[i]
		if it.coll != coll {
			continue
		}
		for _, e := range results[it.first:it.last] {
			switch {
			case e == nil:
			case fault.IsPermanent(e):
				it.permanent = cmpErr(it.permanent, e)
			default:
				it.transient = cmpErr(it.transient, e)
			}
		}
	}
}

// written returns the progress marks of the chunks of a job whose documents are all stored.
func (cb *chunkBatch) written() []jobs.Mark {
	var marks []jobs.Mark
	for _, it := range cb.items {
		if it.job != "" && !it.skip && it.permanent == nil && it.transient == nil {
			marks = append(marks, jobs.Mark{Job: it.job, Item: it.item, Outcome: jobs.Written})
		}
	}
	return marks
}

// collect checks each message of batch and builds its chunks' documents; a bundle expands
// into its items (those settled on an earlier delivery are skipped). A message that cannot be
// a chunk is dead-lettered at once and left out. mctxs[i] is the context of batch[i], its
// span's.
func (w *Worker) collect(batch []*sjs.Delivery, mctxs []context.Context) *chunkBatch {
	cb := &chunkBatch{items: make([]chunkItem, 0, len(batch)), msgs: make([]chunkMsg, 0, len(batch)),
		docs: map[string][]document.Doc{}}
	for i, d := range batch {
		ctx := mctxs[i]
		m, meta := d.Msg(), d.Meta()
		if meta == nil {
			var err error
			if meta, err = m.Metadata(); err != nil {
				w.log.ErrorContext(ctx, "chunk without JetStream metadata; retrying", "subject", m.Subject(), "err", err)
				d.Retry(time.Second)
				continue
			}
		}
		if m.Headers().Get(schemas.HeaderSchema) != string(schemas.ChunkBundle) {
			it, docs, err := w.checkChunk(m, meta)
			if err != nil {
				_ = w.settler.DeadLetter(ctx, d, m, meta, err, "")
				continue
			}
			it.d, it.mctx = d, ctx
			cb.add(it, docs)
			cb.msgs = append(cb.msgs, chunkMsg{lo: len(cb.items) - 1, hi: len(cb.items)})
			continue
		}
		env, ok := schemas.EnvFromSubject(m.Subject())
		if !ok {
			_ = w.settler.DeadLetter(ctx, d, m, meta, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject()), "")
			continue
		}
		var done []bool
		if meta.NumDelivered > 1 {
			done = w.bundles.get(meta)
		}
		its, docs, err := w.expandBundle(m, meta, env, done)
		if err != nil {
			_ = w.settler.DeadLetter(ctx, d, m, meta, err, "")
			continue
		}
		lo := len(cb.items)
		for j, it := range its {
			it.d, it.mctx = d, ctx
			cb.add(it, docs[j])
		}
		cb.msgs = append(cb.msgs, chunkMsg{lo: lo, hi: len(cb.items), bundle: true})
	}
	return cb
}

// settleChunk settles a single-chunk message: acked once its documents and its progress are
// durable, retried with a delay after a transient failure, dead-lettered after a permanent one.
// It settles under the message's context (it.mctx): its span gets the events, its logs the
// trace id.
func (w *Worker) settleChunk(it chunkItem, progressErr error) {
	ctx := it.mctx
	m := it.d.Msg()
	switch {
	case it.permanent != nil:
		_ = w.settler.DeadLetter(ctx, it.d, m, it.meta, it.permanent, w.cfg.SinkName)
	case it.transient != nil:
		_ = w.settler.Fail(ctx, it.d, m, it.meta, fmt.Errorf("write chunk: %w", it.transient), w.cfg.SinkName)
	case progressErr != nil && it.job != "":
		_ = w.settler.Fail(ctx, it.d, m, it.meta, progressErr, "")
	default:
		if it.meta.NumDelivered > 1 {
			w.dlq.Forget(it.meta)
		}
		it.d.Ack()
		w.metrics.chunkWritten(time.Since(it.d.Received()))
	}
}

// chunkWeight weighs a chunk message for the handler batches by the chunks it holds: one for
// a single chunk, a bundle's Sluice-Items header, or — for a bundle without it — an estimate
// from its size (one chunk per 512 bytes), at most schemas.MaxBundleItems. A handler batch so
// builds about Batch.MaxBatch chunks' documents at once, however they are packed, and the
// subscriber holds about MaxInFlightChunks chunks. It does not block.
func chunkWeight(m jetstream.Msg) int {
	h := m.Headers()
	if h.Get(schemas.HeaderSchema) != string(schemas.ChunkBundle) {
		return 1
	}
	if n, err := strconv.Atoi(h.Get(schemas.HeaderItems)); err == nil && n > 0 {
		return min(n, schemas.MaxBundleItems)
	}
	return min(len(m.Data())/512+1, schemas.MaxBundleItems)
}

// write writes docs through the batcher, held through a sink outage by the circuit breaker
// (breaker.hold): a write in which every document failed transiently is made again once the
// sink answers. It returns one outcome per document; the caller settles the messages.
func (w *Worker) write(ctx context.Context, coll string, docs []document.Doc) []error {
	var results []error
	if err := w.breaker.hold(ctx, func() error {
		results = w.batcher.Write(ctx, coll, docs)
		return sinkDown(results)
	}); err != nil {
		return fill(len(docs), fault.Retry(fault.Transient, fmt.Errorf("held while the sink was down: %w", err)))
	}
	return results
}

// sinkDown returns the first error if every outcome is a transient failure (the sink, not
// the documents, failed), else nil.
func sinkDown(results []error) error {
	for _, e := range results {
		if e == nil || fault.IsPermanent(e) {
			return nil
		}
	}
	if len(results) == 0 {
		return nil
	}
	return results[0]
}

func fill(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// checkChunk checks a chunk message's subject and headers and builds its documents. Its
// errors are permanent.
func (w *Worker) checkChunk(m jetstream.Msg, meta *jetstream.MsgMetadata) (chunkItem, []document.Doc, error) {
	env, ok := schemas.EnvFromSubject(m.Subject())
	if !ok {
		return chunkItem{}, nil, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject())
	}
	h := m.Headers()
	if sch := h.Get(schemas.HeaderSchema); sch != "" && sch != string(schemas.Chunk) {
		return chunkItem{}, nil, fault.Permanentf(fault.Validation,
			"header %s is %q; a chunk subject carries %q or %q", schemas.HeaderSchema, sch, schemas.Chunk, schemas.ChunkBundle)
	}
	it := chunkItem{meta: meta, item: -1, coll: w.CollectionFor(env)}
	if it.job = h.Get(schemas.HeaderJob); it.job != "" {
		n, err := strconv.ParseInt(h.Get(schemas.HeaderItem), 10, 64)
		if err != nil || n < 0 || !schemas.ValidKey(it.job) {
			return chunkItem{}, nil, fault.Permanentf(fault.Validation,
				"a chunk with %s must carry a valid job id and a %s index (got %q, %q)",
				schemas.HeaderJob, schemas.HeaderItem, it.job, h.Get(schemas.HeaderItem))
		}
		it.item = n
	}
	docs, err := w.builder(env).Build(m.Data(), document.Meta{Version: docVersion(meta.Sequence.Stream, 0), Job: it.job})
	if err != nil {
		return chunkItem{}, nil, err
	}
	return it, docs, nil
}

func cmpErr(have, e error) error {
	if have != nil {
		return have
	}
	return e
}
