package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/synadia-io/orbit.go/jetstreamext"
)

// MaxAtomicBatch is nats-server's default limit on messages in one atomic batch.
const MaxAtomicBatch = 1000

// PublishAtomic publishes msgs as one atomic batch: all are stored or none is, for the cost of
// one synced write. It blocks until the server acknowledges the commit. At most MaxAtomicBatch
// messages, all to one stream.
//
// If the server rejects the batch because a Nats-Msg-Id in it is already stored (error 10201:
// a batch retried after a lost ack, or a resubmitted job), PublishAtomic publishes the messages
// one by one instead, letting the server drop the ones it already has. So a retried call is
// safe: every message ends up stored exactly once within the duplicate window. A refusal
// that passes (the server's limit of open batches, no JetStream answer) is tried again with
// backoff, up to ≈10 s.
func PublishAtomic(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	if len(msgs) > MaxAtomicBatch {
		return fmt.Errorf("atomic batch of %d messages exceeds %d", len(msgs), MaxAtomicBatch)
	}
	// A refusal that passes (the server's batch limit, 10210) is tried again with backoff.
	err := withRetry(ctx, func() error {
		_, err := jetstreamext.PublishMsgBatch(ctx, js, msgs)
		return err
	})
	if err == nil {
		return nil
	}
	if !isDuplicateBatch(err) {
		return fmt.Errorf("publish atomic batch of %d: %w", len(msgs), err)
	}
	return publishEach(ctx, js, msgs)
}

// ClearBatchHeaders removes the atomic batch headers PublishAtomic stamped onto m: sent again
// with them, m would open a new batch.
func ClearBatchHeaders(m *nats.Msg) {
	if m.Header == nil {
		return
	}
	m.Header.Del(jetstreamext.BatchIDHeader)
	m.Header.Del(jetstreamext.BatchSeqHeader)
	m.Header.Del(jetstreamext.BatchCommitHeader)
}

// isDuplicateBatch reports whether the server refused an atomic batch because a Nats-Msg-Id in
// it is already stored (error 10201).
func isDuplicateBatch(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishDuplicateMsgID
}

// publishEach publishes msgs one by one, in order, letting the server drop the ones whose
// Nats-Msg-Id it already stored.
func publishEach(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	for _, m := range msgs {
		ClearBatchHeaders(m)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("publish %s after duplicate batch: %w", m.Header.Get(nats.MsgIdHdr), err)
		}
	}
	return nil
}

// BatchWriterConfig configures a BatchWriter.
type BatchWriterConfig struct {
	// BatchSize is the number of messages per atomic batch. Default MaxAtomicBatch (1,000):
	// batches commit one after another, so fewer, larger ones keep the broker busy
	// (BenchmarkBatchWriter: ordered batches of 500 ran ≈9% below the old racing writer,
	// batches of 1,000 level with it). BatchBytes bounds their memory.
	BatchSize int
	// BatchBytes closes a batch early once its payloads reach this size. Default 4 MiB.
	BatchBytes int
	// Concurrency is how many batches may be in flight at once: sent to the server and staged
	// there while the batches before them commit. Default 4. Commits stay in order whatever it
	// is; it bounds the memory the writer and the server hold for uncommitted batches, and it
	// stays far below nats-server's limit of 50 atomic batches in flight per stream.
	Concurrency int
	// Admission is the process's publish scheduler: every batch takes one of its slots while
	// it is open on the server. Optional: nil bounds only this writer (Concurrency).
	Admission *Admission
	// Unordered lets batches commit in any order, each as soon as it is staged. Optional,
	// default false. Only for messages whose relative order does not matter (benchmarks of
	// the old behaviour); Sluice's loaders never set it.
	Unordered bool
}

// BatchWriter streams messages into atomic batches and stores them in the order they were
// added: message i+1 never gets a lower stream sequence than message i. Up to Concurrency
// batches are in flight at once — each is sent to the server (staged) as soon as it is full,
// while the ones before it commit — but each commits only after the batch before it has, so
// the stream holds them in order (a later item with the same id wins; graph nodes precede the
// edges that need them). Add blocks while Concurrency batches are in flight. It is not safe for
// concurrent use; one goroutine adds, then calls Close.
type BatchWriter struct {
	js      jetstream.JetStream
	cfg     BatchWriterConfig
	ctx     context.Context
	cur     []*nats.Msg
	curSize int
	sem     chan struct{}
	wg      sync.WaitGroup
	// prev is closed once the batch flushed last has committed (or failed): the next batch
	// commits only after it. Only the adding goroutine touches it.
	prev chan struct{}
	mu   sync.Mutex // guards err
	err  error
}

// NewBatchWriter returns a writer publishing to js. ctx bounds every publish. The caller must
// call Close, which waits for every batch.
func NewBatchWriter(ctx context.Context, js jetstream.JetStream, cfg BatchWriterConfig) *BatchWriter {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = MaxAtomicBatch
	}
	if cfg.BatchSize > MaxAtomicBatch {
		cfg.BatchSize = MaxAtomicBatch
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 4 << 20
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	prev := make(chan struct{})
	close(prev)
	return &BatchWriter{js: js, cfg: cfg, ctx: ctx, sem: make(chan struct{}, cfg.Concurrency), prev: prev}
}

// Add queues m; it returns the first error of any earlier batch, after which nothing more is
// published.
func (w *BatchWriter) Add(m *nats.Msg) error {
	if err := w.Err(); err != nil {
		return err
	}
	w.cur = append(w.cur, m)
	w.curSize += len(m.Data)
	if len(w.cur) >= w.cfg.BatchSize || w.curSize >= w.cfg.BatchBytes {
		return w.flush()
	}
	return nil
}

func (w *BatchWriter) flush() error {
	if len(w.cur) == 0 {
		return nil
	}
	batch := w.cur
	w.cur, w.curSize = nil, 0
	select {
	case w.sem <- struct{}{}:
	case <-w.ctx.Done():
		return w.ctx.Err()
	}
	// The process-wide slot is taken in the adding goroutine, batch after batch, so a
	// writer's earliest open batch always holds one: waiting for it cannot deadlock.
	release, err := w.cfg.Admission.Acquire(w.ctx)
	if err != nil {
		<-w.sem
		return err
	}
	prev, done := w.prev, make(chan struct{})
	w.prev = done
	w.wg.Add(1)
	go func() {
		defer func() { release(); close(done); <-w.sem; w.wg.Done() }()
		var err error
		if w.cfg.Unordered {
			err = PublishAtomic(w.ctx, w.js, batch)
		} else {
			err = publishAfter(w.ctx, w.js, batch, prev, w.Err)
		}
		if err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		}
	}()
	return nil
}

// errEarlierBatch stops a batch whose predecessor failed: committing it would store messages
// after a gap.
var errEarlierBatch = errors.New("an earlier batch failed")

// publishAfter stages msgs as one atomic batch at once, then commits it once prev is closed,
// unless failed (the writer's first error) reports that an earlier batch failed. A commit the
// server refuses (a staged batch it abandoned, a Nats-Msg-Id already stored) or whose answer
// is lost is published again with PublishAtomic, which stores every message exactly once
// within the duplicate window.
func publishAfter(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg, prev <-chan struct{}, failed func() error) error {
	bp, err := jetstreamext.NewBatchPublisher(js)
	if err != nil {
		return fmt.Errorf("start atomic batch: %w", err)
	}
	staged := true
	for _, m := range msgs[:len(msgs)-1] {
		if err := bp.AddMsg(m); err != nil {
			// Not staged (a full server, a lost first ack): publish the whole batch again
			// once it is this batch's turn.
			staged = false
			break
		}
	}
	select {
	case <-prev:
	case <-ctx.Done():
		_ = bp.Discard()
		return ctx.Err()
	}
	if failed() != nil {
		_ = bp.Discard()
		return errEarlierBatch
	}
	if staged {
		_, err := bp.CommitMsg(ctx, msgs[len(msgs)-1])
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case isDuplicateBatch(err):
			return publishEach(ctx, js, msgs)
		}
	} else {
		_ = bp.Discard()
	}
	return PublishAtomic(ctx, js, msgs)
}

// Err returns the first publish error so far.
func (w *BatchWriter) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close publishes what is queued, waits for every batch to be acknowledged, and returns the
// first error. Only when it returns nil is every added message stored, in the order added.
func (w *BatchWriter) Close() error {
	ferr := w.flush()
	w.wg.Wait()
	if err := w.Err(); err != nil {
		return err
	}
	return ferr
}

// Publisher is a Watermill message.Publisher over JetStream. Each Publish call is one atomic
// batch (so at most MaxAtomicBatch messages); message metadata becomes headers, the message
// UUID goes in HeaderUUID (a Subscriber restores it), and "<topic>/<UUID>" becomes Nats-Msg-Id
// unless the metadata sets one: a retried Publish is stored once, while one message published
// to several topics of a stream is stored for each (Watermill's conformance suite publishes
// the same messages to ten topics). Safe for concurrent use. It does not own the connection.
type Publisher struct {
	js jetstream.JetStream
}

// HeaderUUID carries a Watermill message's UUID through JetStream (Publisher, Subscriber).
const HeaderUUID = "Watermill-Uuid"

// NewPublisher returns a Publisher over js.
func NewPublisher(js jetstream.JetStream) *Publisher { return &Publisher{js: js} }

var _ message.Publisher = (*Publisher)(nil)

// Publish publishes msgs to topic (a subject) and returns once the server stored all of them.
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	out := make([]*nats.Msg, 0, len(msgs))
	for _, m := range msgs {
		nm := nats.NewMsg(topic)
		nm.Data = m.Payload
		for k, v := range m.Metadata {
			nm.Header.Set(k, v)
		}
		nm.Header.Set(HeaderUUID, m.UUID)
		if nm.Header.Get(nats.MsgIdHdr) == "" {
			nm.Header.Set(nats.MsgIdHdr, topic+"/"+m.UUID)
		}
		out = append(out, nm)
	}
	ctx := context.Background()
	if len(msgs) > 0 && msgs[0].Context() != nil {
		ctx = msgs[0].Context()
	}
	return PublishAtomic(ctx, p.js, out)
}

// Close does nothing: the Publisher owns no resources.
func (p *Publisher) Close() error { return nil }
