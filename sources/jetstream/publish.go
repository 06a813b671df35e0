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
// safe: every message ends up stored exactly once within the duplicate window.
func PublishAtomic(ctx context.Context, js jetstream.JetStream, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	if len(msgs) > MaxAtomicBatch {
		return fmt.Errorf("atomic batch of %d messages exceeds %d", len(msgs), MaxAtomicBatch)
	}
	_, err := jetstreamext.PublishMsgBatch(ctx, js, msgs)
	if err == nil {
		return nil
	}
	var apiErr *jetstream.APIError
	if !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstreamext.JSErrCodeBatchPublishDuplicateMsgID) {
		return fmt.Errorf("publish atomic batch of %d: %w", len(msgs), err)
	}
	for _, m := range msgs {
		// PublishMsgBatch stamped the batch headers onto the messages; sent again with them,
		// each would open a new batch.
		m.Header.Del(jetstreamext.BatchIDHeader)
		m.Header.Del(jetstreamext.BatchSeqHeader)
		m.Header.Del(jetstreamext.BatchCommitHeader)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("publish %s after duplicate batch: %w", m.Header.Get(nats.MsgIdHdr), err)
		}
	}
	return nil
}

// BatchWriterConfig configures a BatchWriter.
type BatchWriterConfig struct {
	// BatchSize is the number of messages per atomic batch. Default 500, at most MaxAtomicBatch.
	BatchSize int
	// BatchBytes closes a batch early once its payloads reach this size. Default 4 MiB.
	BatchBytes int
	// Concurrency is how many batches may be in flight at once. Default 4.
	Concurrency int
}

// BatchWriter streams messages into atomic batches with a bounded number of batches in flight:
// Add blocks while Concurrency batches await their acks. It is not safe for concurrent use;
// one goroutine adds, then calls Close.
type BatchWriter struct {
	js      jetstream.JetStream
	cfg     BatchWriterConfig
	ctx     context.Context
	cur     []*nats.Msg
	curSize int
	sem     chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex // guards err
	err     error
}

// NewBatchWriter returns a writer publishing to js. ctx bounds every publish. The caller must
// call Close, which waits for every batch.
func NewBatchWriter(ctx context.Context, js jetstream.JetStream, cfg BatchWriterConfig) *BatchWriter {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
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
	return &BatchWriter{js: js, cfg: cfg, ctx: ctx, sem: make(chan struct{}, cfg.Concurrency)}
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
	w.wg.Add(1)
	go func() {
		defer func() { <-w.sem; w.wg.Done() }()
		if err := PublishAtomic(w.ctx, w.js, batch); err != nil {
			w.mu.Lock()
			if w.err == nil {
				w.err = err
			}
			w.mu.Unlock()
		}
	}()
	return nil
}

// Err returns the first publish error so far.
func (w *BatchWriter) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close publishes what is queued, waits for every batch to be acknowledged, and returns the
// first error. Only when it returns nil is every added message stored.
func (w *BatchWriter) Close() error {
	ferr := w.flush()
	w.wg.Wait()
	if err := w.Err(); err != nil {
		return err
	}
	return ferr
}

// Publisher is a Watermill message.Publisher over JetStream. Each Publish call is one atomic
// batch (so at most MaxAtomicBatch messages); message metadata becomes headers, and the
// message UUID becomes Nats-Msg-Id unless the metadata sets one. Safe for concurrent use. It
// does not own the connection.
type Publisher struct {
	js jetstream.JetStream
}

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
		if nm.Header.Get(nats.MsgIdHdr) == "" {
			nm.Header.Set(nats.MsgIdHdr, m.UUID)
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
