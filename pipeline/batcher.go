package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sourcegraph/conc/pool"

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
	// Linger is how long a partial batch waits for more documents before it is written.
	// Default 5 ms. Under load batches fill long before it runs out.
	Linger time.Duration
	// Concurrency is how many WriteDocs calls run at once. Default 10; the worker uses the
	// sink's own WriteConcurrency when it has one (Astra: its connection pool of 20).
	Concurrency int
	// QueueSize bounds write requests waiting to be batched; Write blocks when it is full.
	// Default 4096.
	QueueSize int
	// WriteTimeout bounds one WriteDocs call. Default 30 s.
	WriteTimeout time.Duration
}

func (c *BatcherConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 100
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
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

// Batcher group-commits documents from many concurrent handlers into batched WriteDocs calls,
// and hands each handler its own documents' outcomes. Group commit is what makes synced writes
// fast: hundreds of messages wait on one flush.
//
// NewBatcher starts its goroutines; Close stops them. Safe for concurrent use.
type Batcher struct {
	cfg     BatcherConfig
	reqs    chan *writeReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
}

type writeReq struct {
	ctx        context.Context
	collection string
	now        bool // write at once, do not wait Linger for more
	docs       []document.Doc
	results    []error
	left       atomic.Int64
	done       chan struct{}
}

type slot struct {
	req *writeReq
	i   int
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
	go b.run()
	return b, nil
}

// Write submits docs for collection and blocks until each has an outcome, returned in order:
// nil when durably written. If ctx ends first, the outstanding outcomes are ctx's error (the
// documents may still be written: writes are idempotent).
func (b *Batcher) Write(ctx context.Context, collection string, docs []document.Doc) []error {
	return b.write1(ctx, collection, docs, false)
}

// WriteNow is Write for a caller that gathered its documents already (a batch handler): they
// are written at once, with what is pending for collection, instead of waiting Linger for more.
func (b *Batcher) WriteNow(ctx context.Context, collection string, docs []document.Doc) []error {
	return b.write1(ctx, collection, docs, true)
}

func (b *Batcher) write1(ctx context.Context, collection string, docs []document.Doc, now bool) []error {
	results := make([]error, len(docs))
	if len(docs) == 0 {
		return results
	}
	r := &writeReq{ctx: ctx, collection: collection, now: now, docs: docs, results: results, done: make(chan struct{})}
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
		// Closed while it was being queued: written only if the last flush took it.
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
	pending := map[string][]slot{}
	var timer *time.Timer
	var timerC <-chan time.Time
	flush := func(collection string) {
		batch := pending[collection]
		delete(pending, collection)
		for len(batch) > 0 {
			n := min(len(batch), b.cfg.MaxBatch)
			part := batch[:n:n]
			batch = batch[n:]
			writers.Go(func() { b.write(collection, part) })
		}
	}
	flushAll := func() {
		for c := range pending {
			flush(c)
		}
		if timer != nil {
			timer.Stop()
			timer, timerC = nil, nil
		}
	}
	add := func(r *writeReq) {
		for i := range r.docs {
			pending[r.collection] = append(pending[r.collection], slot{r, i})
			if len(pending[r.collection]) >= b.cfg.MaxBatch {
				flush(r.collection)
			}
		}
		if r.now && len(pending[r.collection]) > 0 {
			flush(r.collection)
		}
		if len(pending) > 0 && timer == nil {
			timer = time.NewTimer(b.cfg.Linger)
			timerC = timer.C
		}
	}
	for {
		select {
		case r := <-b.reqs:
			add(r)
		case <-timerC:
			timer, timerC = nil, nil
			flushAll()
		case <-b.closing:
			// Take what was queued before Close, then write everything.
			for {
				select {
				case r := <-b.reqs:
					add(r)
					continue
				default:
				}
				break
			}
			flushAll()
			writers.Wait()
			return
		}
	}
}

func (b *Batcher) write(collection string, part []slot) {
	docs := make([]document.Doc, len(part))
	for i, s := range part {
		docs[i] = s.req.docs[s.i]
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.WriteTimeout)
	outcomes, err := b.cfg.Sink.WriteDocs(ctx, collection, docs)
	cancel()
	if err == nil && len(outcomes) != len(docs) {
		err = fmt.Errorf("sink returned %d outcomes for %d documents", len(outcomes), len(docs))
	}
	for i, s := range part {
		e := err
		if e == nil {
			e = outcomes[i]
		}
		s.req.results[s.i] = e
		if s.req.left.Add(-1) == 0 {
			close(s.req.done)
		}
	}
}

// Close writes what is queued, waits for every write to finish and stops the Batcher. Writes
// submitted after Close fail with ErrBatcherClosed. It is idempotent.
func (b *Batcher) Close() error {
	b.once.Do(func() { close(b.closing) })
	<-b.done
	return nil
}
