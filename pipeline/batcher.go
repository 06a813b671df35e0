package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/conc/pool"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/sinks/document"
)

// ErrBatcherClosed is returned for documents submitted after Close.
var ErrBatcherClosed = errors.New("batcher closed")

// BatcherConfig configures a Batcher. Defaults follow the seed's ASYNC_DB_CONFIG.
type BatcherConfig struct {
	// Sink receives the batches. Required.
	Sink DocSink
	// MaxBatch is the most documents in one WriteDocs call. Default 100 (the Data API's
	// insertMany limit).
	MaxBatch int
	// Concurrency is how many WriteDocs calls run at once. Default 10; the worker uses the
	// sink's own WriteConcurrency when it has one (Astra: its connection pool of 20).
	Concurrency int
	// QueueSize bounds write requests waiting for a writer; Write blocks when it is full.
	// Default 4096.
	QueueSize int
	// WriteTimeout bounds one WriteDocs call. Default 30 s.
	WriteTimeout time.Duration
}

func (c *BatcherConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 100
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 10
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 4096
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
}

// Batcher runs the document writes of every chunk handler of a worker: it cuts each request
// into WriteDocs calls of at most MaxBatch documents, runs at most Concurrency calls at once
// across all handlers, and hands each caller its own documents' outcomes. The group commit
// itself is the handler's: it gathers a batch of messages and writes their documents with one
// request (Subscriber.ConsumeBatches, Worker.handleChunks).
//
// NewBatcher starts its goroutines; Close stops them. Safe for concurrent use.
type Batcher struct {
	cfg     BatcherConfig
	reqs    chan *writeReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	// base is the context of every WriteDocs call; Abort cancels it.
	base  context.Context
	abort context.CancelFunc
}

type writeReq struct {
	collection string
	docs       []document.Doc
	results    []error
	left       atomic.Int64
	done       chan struct{}
	// span is the caller's span (the chunk batch's): the parent of the sink's spans, whose
	// calls run under the Batcher's own context.
	span trace.SpanContext
}

// NewBatcher returns a running Batcher. The caller must Close it.
func NewBatcher(cfg BatcherConfig) (*Batcher, error) {
	cfg.setDefaults()
	if cfg.Sink == nil {
		return nil, errors.New("batcher: Sink is required")
	}
	b := &Batcher{
		cfg:     cfg,
		reqs:    make(chan *writeReq, cfg.QueueSize),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	b.base, b.abort = context.WithCancel(context.Background())
	go b.run()
	return b, nil
}

// Write writes docs into collection and blocks until each has an outcome, returned in order:
// nil when durably written. If ctx ends first, the outstanding outcomes are ctx's error (the
// documents may still be written: writes are idempotent).
func (b *Batcher) Write(ctx context.Context, collection string, docs []document.Doc) []error {
	results := make([]error, len(docs))
	if len(docs) == 0 {
		return results
	}
	r := &writeReq{collection: collection, docs: docs, results: results, done: make(chan struct{}),
		span: trace.SpanContextFromContext(ctx)}
	r.left.Store(int64(len(docs)))
	fail := func(err error) []error {
		for i := range results {
			results[i] = err
		}
		return results
	}
	select {
	case <-b.closing:
		return fail(ErrBatcherClosed)
	default:
	}
	select {
	case b.reqs <- r:
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-b.closing:
		return fail(ErrBatcherClosed)
	}
	select {
	case <-r.done:
		return results
	case <-b.done:
		// Closed while it was being queued: written only if the last round took it.
		select {
		case <-r.done:
			return results
		default:
			return fail(ErrBatcherClosed)
		}
	case <-ctx.Done():
		out := make([]error, len(docs))
		for i := range out {
			out[i] = ctx.Err()
		}
		return out
	}
}

func (b *Batcher) run() {
	defer close(b.done)
	writers := pool.New().WithMaxGoroutines(b.cfg.Concurrency)
	submit := func(r *writeReq) {
		for lo := 0; lo < len(r.docs); lo += b.cfg.MaxBatch {
			hi := min(lo+b.cfg.MaxBatch, len(r.docs))
			writers.Go(func() { b.write(r, lo, hi) })
		}
	}
	for {
		select {
		case r := <-b.reqs:
			submit(r)
		case <-b.closing:
			// Write what was queued before Close, then wait for every write.
			for {
				select {
				case r := <-b.reqs:
					submit(r)
					continue
				default:
				}
				break
			}
			writers.Wait()
			return
		}
	}
}

// write writes r.docs[lo:hi] with one WriteDocs call and records their outcomes.
func (b *Batcher) write(r *writeReq, lo, hi int) {
	docs := r.docs[lo:hi]
	ctx, cancel := context.WithTimeout(b.base, b.cfg.WriteTimeout)
	if r.span.IsValid() {
		ctx = trace.ContextWithSpanContext(ctx, r.span)
	}
	outcomes, err := b.cfg.Sink.WriteDocs(ctx, r.collection, docs)
	cancel()
	if err == nil && len(outcomes) != len(docs) {
		err = fmt.Errorf("sink returned %d outcomes for %d documents", len(outcomes), len(docs))
	}
	for i := range docs {
		e := err
		if e == nil {
			e = outcomes[i]
		}
		r.results[lo+i] = e
	}
	if r.left.Add(-int64(len(docs))) == 0 {
		close(r.done)
	}
}

// Close writes what is queued, waits for every write to finish and stops the Batcher. Writes
// submitted after Close fail with ErrBatcherClosed. It is idempotent.
func (b *Batcher) Close() error {
	b.once.Do(func() { close(b.closing) })
	<-b.done
	b.abort()
	return nil
}

// Abort cancels every WriteDocs call under way and every later one: their documents get the
// context's error (they may still be written; writes are idempotent). A drain that ran out of
// time calls it, so a hung sink cannot hold the process past its grace period. Close must
// still be called. Safe to call at any time, more than once.
func (b *Batcher) Abort() { b.abort() }
