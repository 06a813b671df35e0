package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
)

// Chunk bundles (schemas.ChunkBundle) carry many chunks of one job in one message: the broker's
// cost is per message (≈46 µs of broker and client CPU per chunk at one chunk per message,
// ≈15 at ten, ≈14 at a hundred; issue 12). The worker expands a bundle into its items and
// handles each item as it handles a single-chunk message: written in the same batched write,
// counted in its job by its index, dead-lettered alone. The bundle is acked once every item is
// settled.

// docVersion returns the document version of the chunk at position pos of the message at stream
// sequence seq: seq × schemas.MaxBundleItems + pos. Later messages win over earlier ones, and
// within a bundle a later item over an earlier one, as when each item was its own message (a
// single chunk is position 0). Documents written before bundles carry version seq, never more
// than seq × MaxBundleItems of the same or a later message, so upgrading keeps the order. The
// stores hold versions up to 2^63-1 (sinks/docstore) and compare them exactly up to 2^53 (JSON
// numbers in sinks/astra): stream sequences up to 2^43, 8.8 × 10^12 messages.
func docVersion(seq uint64, pos int) uint64 {
	return seq*schemas.MaxBundleItems + uint64(pos)
}

// bundleItemMsg is one item of a bundle seen as the single-chunk message it stands for: the
// bundle's subject, its headers with Sluice-Item set to the item's index and Sluice-Schema to
// sluice.chunk.v1, and the chunk record as payload. Its dead letter is such a message, so a
// replay republishes the item alone.
//
// Its headers are built on first use: only a dead letter needs them, and copying the
// bundle's headers for every item cost ≈2 µs per chunk on the hot path (issue 12).
type bundleItemMsg struct {
	jetstream.Msg
	data  []byte
	index int

	once   sync.Once
	header nats.Header
}

// BundleIndex is the item's position in its bundle (dlq.BundleItem).
func (m *bundleItemMsg) BundleIndex() int { return m.index }

func (m *bundleItemMsg) Headers() nats.Header {
	m.once.Do(func() {
		h := nats.Header{}
		for k, vs := range m.Msg.Headers() {
			h[k] = append([]string(nil), vs...)
		}
		h.Set(schemas.HeaderSchema, string(schemas.Chunk))
		h.Set(schemas.HeaderItem, schemas.FormatItem(m.index))
		if id := h.Get(nats.MsgIdHdr); id != "" {
			h.Set(nats.MsgIdHdr, id+"#"+strconv.Itoa(m.index))
		}
		m.header = h
	})
	return m.header
}

func (m *bundleItemMsg) Data() []byte { return m.data }

// newBundleItemMsg returns item index (payload chunk) of bundle m as a single-chunk message.
func newBundleItemMsg(m jetstream.Msg, index int, chunk []byte) *bundleItemMsg {
	return &bundleItemMsg{Msg: m, data: chunk, index: index}
}

// expandBundle checks bundle m's headers and payload and builds each item's documents. An error
// means the bundle as a whole is malformed (not JSON, no items, indexes not strictly
// increasing, a bad Sluice-Job): it is permanent and dead-letters the message whole. An item
// whose chunk cannot be built gets its own permanent error and no documents. Items done on an
// earlier delivery (done[pos]) are returned with skip set and no documents.
func (w *Worker) expandBundle(m jetstream.Msg, meta *jetstream.MsgMetadata, env string, done []bool) ([]chunkItem, [][]document.Doc, error) {
	job := m.Headers().Get(schemas.HeaderJob)
	if job != "" && !schemas.ValidKey(job) {
		return nil, nil, fault.Permanentf(fault.Validation, "a chunk bundle's %s must be a valid job id (got %q)", schemas.HeaderJob, job)
	}
	var b schemas.ChunkBundlePayload
	if err := json.Unmarshal(m.Data(), &b); err != nil {
		return nil, nil, fault.Permanent(fault.Validation, fmt.Errorf("decode chunk bundle: %w", err))
	}
	if len(b.Items) == 0 || len(b.Items) > schemas.MaxBundleItems {
		return nil, nil, fault.Permanentf(fault.Validation, "a chunk bundle holds 1 to %d items (got %d)", schemas.MaxBundleItems, len(b.Items))
	}
	items := make([]chunkItem, len(b.Items))
	docs := make([][]document.Doc, len(b.Items))
	coll := w.CollectionFor(env)
	for pos, bi := range b.Items {
		if bi.Index < 0 || (pos > 0 && bi.Index <= b.Items[pos-1].Index) || len(bi.Chunk) == 0 {
			return nil, nil, fault.Permanentf(fault.Validation,
				"chunk bundle item %d: index %d is not above the previous item's, or the chunk is missing (items must be in file order)", pos, bi.Index)
		}
		it := chunkItem{meta: meta, job: job, item: int64(bi.Index), coll: coll, pos: pos,
			bundled: newBundleItemMsg(m, bi.Index, bi.Chunk)}
		if job == "" {
			it.item = -1
		}
		if pos < len(done) && done[pos] {
			it.skip = true
			items[pos] = it
			continue
		}
		d, err := w.builder(env).Build(bi.Chunk, document.Meta{Version: docVersion(meta.Sequence.Stream, pos), Job: job})
		if err != nil {
			it.permanent = err
		}
		items[pos], docs[pos] = it, d
	}
	return items, docs, nil
}

// maxBundleMemory bounds the bundles whose settled items a worker remembers between
// deliveries (bundleMemory): with MaxInFlight in the thousands, this covers every bundle
// in flight being retried at once several times over.
const maxBundleMemory = 1 << 14

// bundleMemory remembers, for a bundle retried because some of its items failed transiently,
// which items were settled (written with their progress recorded, or dead-lettered), so that
// its redelivery to this worker writes only the others. A redelivery to another worker, or
// after a restart, writes every item again, which the stores' version rule makes a no-op for
// the unchanged ones (same version, same content) and the job's item sets count once. Safe
// for concurrent use.
type bundleMemory struct {
	mu    sync.Mutex // guards done and order
	done  map[string][]bool
	order []string
}

// get returns the settled items of the bundle at meta's stream position, or nil.
func (b *bundleMemory) get(meta *jetstream.MsgMetadata) []bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.done[dlq.MsgKey(meta)]
}

// put remembers the settled items of a bundle that is retried; at most maxBundleMemory bundles,
// the oldest forgotten first.
func (b *bundleMemory) put(meta *jetstream.MsgMetadata, done []bool) {
	k := dlq.MsgKey(meta)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done == nil {
		b.done = map[string][]bool{}
	}
	if _, ok := b.done[k]; !ok {
		if len(b.order) >= maxBundleMemory {
			delete(b.done, b.order[0])
			b.order = b.order[1:]
		}
		b.order = append(b.order, k)
	}
	b.done[k] = done
}

// forget drops the bundle at meta's position (acked or dead-lettered).
func (b *bundleMemory) forget(meta *jetstream.MsgMetadata) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.done, dlq.MsgKey(meta)) // its order entry goes when it reaches the front
}

// settleBundle settles a bundle whose items were handled: each item that failed permanently is
// dead-lettered alone (as a single-chunk message with its index); on the last allowed delivery,
// so is each item still failing transiently (class exhausted). The bundle is acked once every
// item is settled, else it is retried with a delay and the settled items are remembered so
// that the redelivery skips them.
func (w *Worker) settleBundle(ctx context.Context, items []chunkItem, progressErr error) {
	first := items[0]
	ctx = first.mctx // the bundle message's span: its events and its log lines' trace id
	d, m, meta := first.d, first.d.Msg(), first.meta
	last := meta.NumDelivered >= w.settler.MaxDeliver
	stopping := false // items handed back by a stopping worker: never exhausted, see settle.Settler.Fail
	for _, it := range items {
		stopping = stopping || errors.Is(it.transient, settle.ErrStopped)
	}
	last = last && !stopping
	done := make([]bool, len(items))
	var cause error
	for i, it := range items {
		if it.skip {
			done[i] = true
			continue
		}
		var dead error
		switch {
		case it.permanent != nil:
			dead = it.permanent
		case it.transient != nil:
			cause = cmpErr(cause, fmt.Errorf("write chunk (bundle item %d): %w", it.item, it.transient))
			if last {
				dead = fault.Permanent(fault.Exhausted, fmt.Errorf("gave up after %d deliveries: %w", meta.NumDelivered, it.transient))
			}
		case progressErr != nil && it.job != "":
			cause = cmpErr(cause, progressErr)
			if last {
				dead = fault.Permanent(fault.Exhausted, fmt.Errorf("gave up after %d deliveries: %w", meta.NumDelivered, progressErr))
			}
		default:
			// Written (and its progress recorded): counted now, once — a redelivery skips it.
			done[i] = true
			w.metrics.chunkWritten(time.Since(d.Received()))
			continue
		}
		if dead == nil {
			continue
		}
		sink := w.cfg.SinkName
		if (it.permanent != nil && it.first == it.last) || (it.permanent == nil && it.transient == nil) {
			sink = "" // not the sink's failure: the chunk could not be built, or its progress not recorded
		}
		if err := w.settler.DeadLetterItem(ctx, it.bundled, meta, dead, sink); err != nil {
			cause = cmpErr(cause, err)
			continue
		}
		done[i] = true
	}
	for _, ok := range done {
		if !ok {
			w.bundles.put(meta, done)
			w.dlq.NoteFailure(meta)
			delay := w.settler.Retry.Delay(meta.NumDelivered)
			if stopping {
				delay = settle.StoppingRetryDelay
			}
			settle.RetryEvent(ctx, meta.NumDelivered, delay, cause)
			if ok, n := w.settler.Logs.Allow("retry/bundle/" + string(fault.ClassOf(cause))); ok {
				w.log.WarnContext(ctx, "retrying chunk bundle", "subject", m.Subject(), "stream_seq", meta.Sequence.Stream,
					"job_id", m.Headers().Get(schemas.HeaderJob), "attempt", meta.NumDelivered, "delay", delay, "err", cause, "suppressed", n)
			}
			d.Retry(delay)
			w.metrics.messages.Add(schemas.StreamChunks, instrument.OutcomeRetried, 1)
			return
		}
	}
	w.bundles.forget(meta)
	w.dlq.Forget(meta)
	d.Ack()
}
