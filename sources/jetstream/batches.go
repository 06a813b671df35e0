package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"
)

// BatchConfig configures ConsumeBatches.
type BatchConfig struct {
	// MaxBatch is the most messages — or, with Weight, the most weight — handed to the
	// handler at once. Default 100. A batch closes once it reaches MaxBatch; the message that
	// reaches it stays in it, so a batch weighs at most MaxBatch plus one message less one.
	MaxBatch int
	// Weight weighs a message for MaxBatch (at least 1). Optional: nil weighs each 1. The
	// chunk worker weighs a bundle by its chunks: counted in messages, one batch of 100
	// bundles built 10,000 chunks' documents at once, and 20 handlers held 762 MiB.
	Weight func(*Delivery) int
	// Linger is how long a partial batch waits for more messages before it is handed over.
	// Default 5 ms. Under load batches fill long before it runs out.
	Linger time.Duration
	// Workers is how many batches are handled at once. Default 10.
	Workers int
}

func (c *BatchConfig) setDefaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 100
	}
	if c.Linger <= 0 {
		c.Linger = 5 * time.Millisecond
	}
	if c.Workers <= 0 {
		c.Workers = 10
	}
}

// BatchHandler handles a batch of messages and settles each one with Ack (after its write
// succeeded), Retry or Term. Messages it leaves unsettled, or all of them if it panics, are
// retried after a second. ctx is not cancelled when a drain starts (in-flight batches are
// finished), only when the drain times out.
type BatchHandler func(ctx context.Context, batch []*Delivery)

// Msg returns the JetStream message.
func (d *Delivery) Msg() jetstream.Msg { return d.js }

// Received returns when the message was pulled.
func (d *Delivery) Received() time.Time { return d.started }

// Meta returns the message's metadata (stream, sequences, deliveries), parsed once when it
// was pulled; nil if it could not be parsed.
func (d *Delivery) Meta() *jetstream.MsgMetadata { return d.meta }

// Ack acknowledges a message of a BatchHandler and frees its slot. Of Ack, Retry and Term,
// the first call settles the message; later calls do nothing.
func (d *Delivery) Ack() { d.settleOnce(dispAck, 0, "") }

// Retry makes JetStream redeliver the message after delay (NakWithDelay) and frees its slot.
func (d *Delivery) Retry(delay time.Duration) { d.settleOnce(dispRetry, delay, "") }

// Term terminates the message (never redelivered) with reason and frees its slot.
// Dead-letter it first.
func (d *Delivery) Term(reason string) { d.settleOnce(dispTerm, 0, reason) }

func (d *Delivery) settleOnce(kind disposition, delay time.Duration, reason string) {
	if d.sub == nil || !d.settled.CompareAndSwap(false, true) {
		return
	}
	d.mu.Lock()
	d.kind, d.delay, d.reason = kind, delay, reason
	d.mu.Unlock()
	d.sub.settle(d)
	d.sub.finish(d)
}

// ConsumeBatches pulls like Subscribe — only for free in-flight slots, extending AckWait of
// messages held long — but hands messages to handle in batches of up to MaxBatch, Workers
// batches at a time, without a router and without a goroutine per message. It is the other
// way to use a Subscriber: call Subscribe or ConsumeBatches, once.
//
// It blocks until ctx ends or Close is called, then drains: it stops pulling, hands over
// what was pulled, waits up to DrainTimeout for every message to be settled, and otherwise
// nacks what is left for redelivery, cancels the handlers' ctx, waits up to DrainTimeout
// again for them to return, and returns an error wrapping ErrDrainTimeout.
func (s *Subscriber) ConsumeBatches(ctx context.Context, cfg BatchConfig, handle BatchHandler) error {
	if handle == nil {
		return errors.New("subscriber: a batch handler is required")
	}
	cfg.setDefaults()
	if err := s.claimForBatches(); err != nil {
		return err
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.closing:
		}
	}()
	// Handlers finish in-flight work during a drain; they are cancelled only when it times out.
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopTicker := make(chan struct{})
	tickerDone := make(chan struct{})
	go s.extendLoop(stopTicker, tickerDone)

	// Every delivery holds one of MaxInFlight slots, so sending to in never blocks.
	in := make(chan *Delivery, s.cfg.MaxInFlight)
	gathered := make(chan struct{})
	go func() {
		defer close(gathered)
		s.gather(hctx, in, cfg, handle)
	}()
	s.pullLoop(func(m jetstream.Msg, h held) {
		meta, _ := m.Metadata()
		d := &Delivery{js: m, meta: meta, size: h.size, weight: h.weight, started: time.Now(), sub: s}
		s.mu.Lock()
		s.inflight[d] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		in <- d
	})
	close(in)

	return s.drainBatches(cancel, gathered, stopTicker, tickerDone)
}

// claimForBatches marks the Subscriber as consumed by ConsumeBatches, failing when it is
// closed or already consumed.
func (s *Subscriber) claimForBatches() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("subscriber: closed")
	}
	if s.subscribed {
		return errors.New("subscriber: Subscribe or ConsumeBatches may be called once")
	}
	s.subscribed = true
	return nil
}

// drainBatches is the end of ConsumeBatches, once pulling stopped and every pulled message
// went to gather: it waits up to DrainTimeout for every message to be settled, else nacks
// what is left; then it cancels the handlers' ctx (cancel), waits for gather to finish
// (gathered closed) — after a timeout, up to DrainTimeout again — and stops the AckWait
// extension loop (stopTicker, tickerDone). It returns an error wrapping ErrDrainTimeout when
// messages were left.
func (s *Subscriber) drainBatches(cancel context.CancelFunc, gathered, stopTicker, tickerDone chan struct{}) error {
	var left []*Delivery
	if !s.waitInflight() {
		// Taken before the handlers are cancelled: once they are, they settle their own
		// messages, and the timeout must still be reported.
		s.mu.Lock()
		for d := range s.inflight {
			left = append(left, d)
		}
		s.drainLeft = max(len(left), 1)
		s.mu.Unlock()
	}
	cancel()
	for _, d := range left {
		d.settleOnce(dispRetry, 0, "")
	}
	if s.drainLeft == 0 {
		<-gathered
	} else {
		// The handlers' ctx is cancelled: give them as long again to return, so that none
		// outlives this call unless it ignores its ctx.
		select {
		case <-gathered:
		case <-time.After(s.cfg.DrainTimeout):
			s.log.Error("batch handlers still running after their ctx was cancelled")
		}
	}
	close(stopTicker)
	<-tickerDone
	close(s.done)
	if s.drainLeft > 0 {
		return fmt.Errorf("%w (%d messages)", ErrDrainTimeout, s.drainLeft)
	}
	return nil
}

// gather groups deliveries into batches of up to MaxBatch, waiting at most Linger for a
// batch to fill, and hands each to one of Workers handler goroutines. It returns when in is
// closed and every batch was handled.
func (s *Subscriber) gather(ctx context.Context, in <-chan *Delivery, cfg BatchConfig, handle BatchHandler) {
	workers := pool.New().WithMaxGoroutines(cfg.Workers)
	defer workers.Wait()
	weigh := func(d *Delivery) int {
		if cfg.Weight == nil {
			return 1
		}
		return max(1, cfg.Weight(d))
	}
	for d := range in {
		batch := make([]*Delivery, 1, cfg.MaxBatch)
		batch[0] = d
		weight := weigh(d)
		timer := time.NewTimer(cfg.Linger)
	fill:
		for weight < cfg.MaxBatch {
			select {
			case d, ok := <-in:
				if !ok {
					break fill
				}
				batch = append(batch, d)
				weight += weigh(d)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		workers.Go(func() { s.handleBatch(ctx, batch, handle) })
	}
}

func (s *Subscriber) handleBatch(ctx context.Context, batch []*Delivery, handle BatchHandler) {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("batch handler panicked; its messages will be retried", "panic", r)
		}
		delay := time.Second
		if ctx.Err() != nil {
			// The drain timed out: hand what is left back at once, as ConsumeBatches does.
			delay = 0
		}
		for _, d := range batch {
			d.settleOnce(dispRetry, delay, "")
		}
	}()
	if ctx.Err() != nil {
		// The drain timed out while this batch waited for a worker: its messages are nacked,
		// and ConsumeBatches may have returned and the caller closed what handle writes to.
		return
	}
	handle(ctx, batch)
}
