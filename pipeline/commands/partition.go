package commands

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// heldCommand is one command message a partition holds: pulled, not yet settled.
type heldCommand struct {
	m    jetstream.Msg
	meta *jetstream.MsgMetadata
	// attempts is how often it was tried: its deliveries before this one plus the tries of
	// this delivery. A transient failure is retried in place (the partition keeps holding it
	// and everything after it) rather than handed back, so its successors never leave this
	// worker's hands out of order.
	attempts uint64
	// retryAt is when its next try may start (zero: now).
	retryAt time.Time
	// pulled is when it arrived; set before it is held and not changed after.
	pulled time.Time
}

// partition consumes one command partition. It holds up to sjs.CommandBatch of its pending
// commands in stream order and applies them as one chain (see Worker.applyChain),
// acknowledging the prefix that is settled. Per-key order rests on two rules:
//
//   - Commands are applied in stream order, a failed one retried in place before anything
//     after it of its key.
//   - A chain is applied only while this worker holds every command the partition has
//     pending. The consumer pins the partition to one client (sjs.CommandPriorityGroup), so
//     that is the normal case; it is checked against the server's count of pending messages
//     whenever it may not hold: after start, after the pin moved (a worker that stopped or
//     stalled may still hold older commands), after a redelivery (older ones may be on their
//     way back in pieces), and after a gap in the delivery sequence (a delivery that went
//     elsewhere). Until the count matches, the partition holds what it has and waits.
type partition struct {
	w    *Worker
	name string
	cons jetstream.Consumer
	// work is the context chains are applied in: it outlives the run's by the drain timeout.
	work context.Context

	mu   sync.Mutex // guards held (the extender reads it)
	held []*heldCommand

	certain  bool   // this worker is known to hold every pending command
	pin      string // the pin id of the last delivery
	lastDseq uint64 // the consumer sequence of the last delivery
}

// partitionPollWait is how long a partition that holds commands it may not apply yet waits
// for more deliveries before it checks again.
const partitionPollWait = 50 * time.Millisecond

// run consumes the partition until ctx ends, then hands back what it holds, in stream order.
func (p *partition) run(ctx context.Context) error {
	it, err := p.cons.Messages(jetstream.PullMaxMessages(sjs.CommandBatch),
		jetstream.PullPriorityGroup(sjs.CommandPriorityGroup), jetstream.PullExpiry(time.Second))
	if err != nil {
		return err
	}
	in := make(chan jetstream.Msg, sjs.CommandBatch)
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		defer close(in)
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrConnectionClosed) {
					return
				}
				// Missed heartbeats, a reconnect: the iterator pulls again by itself.
				time.Sleep(partitionPollWait)
				continue
			}
			in <- m // bounded: the server delivers at most CommandBatch pending
		}
	}()
	defer func() {
		it.Drain()
		// What the iterator still hands over is held too, then everything goes back.
		for m := range in {
			p.add(m)
		}
		<-readDone
		p.handBack()
	}()
	for {
		p.mu.Lock()
		n := len(p.held)
		p.mu.Unlock()
		if n == 0 {
			select {
			case m, ok := <-in:
				if !ok {
					return nil
				}
				p.add(m)
			case <-ctx.Done():
				return nil
			}
		}
		// Take what else has come, without waiting.
	more:
		for {
			select {
			case m, ok := <-in:
				if !ok {
					return nil
				}
				p.add(m)
			default:
				break more
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if wait := p.ready(ctx); wait > 0 {
			select {
			case m, ok := <-in:
				if !ok {
					return nil
				}
				p.add(m)
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		p.w.applyChain(p.work, p)
	}
}

// add holds m in stream order and notes what it says about the partition: a new pin, a
// redelivery or a gap in the deliveries makes the partition uncertain. A redelivery of a
// command already held replaces it (either acknowledges it).
func (p *partition) add(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		// Not a JetStream message: nothing to order it by. The server redelivers it.
		p.w.log.Warn("command without metadata", "subject", m.Subject(), "err", err)
		return
	}
	if pin := m.Headers().Get(pinHeader); pin != p.pin {
		p.pin, p.certain = pin, false
	}
	if meta.NumDelivered > 1 || (p.lastDseq != 0 && meta.Sequence.Consumer != p.lastDseq+1) {
		p.certain = false
	}
	p.lastDseq = meta.Sequence.Consumer
	h := &heldCommand{m: m, meta: meta, attempts: meta.NumDelivered, pulled: time.Now()}
	p.mu.Lock()
	defer p.mu.Unlock()
	i, found := slices.BinarySearchFunc(p.held, meta.Sequence.Stream, func(h *heldCommand, seq uint64) int {
		return cmpSeq(h.meta.Sequence.Stream, seq)
	})
	if found {
		h.attempts = max(h.attempts, p.held[i].attempts)
		h.retryAt = p.held[i].retryAt
		p.held[i] = h
		return
	}
	p.held = slices.Insert(p.held, i, h)
}

func cmpSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// pinHeader is the header nats-server sets on every message it delivers to a pinned client.
const pinHeader = "Nats-Pin-Id"

// ready reports how long to wait before the held chain may be applied: 0 when it may be now.
// It waits while the first command waits for its retry, and while the partition is uncertain
// and the server counts more pending commands than this worker holds.
func (p *partition) ready(ctx context.Context) time.Duration {
	p.mu.Lock()
	n := len(p.held)
	var retryAt time.Time
	if n > 0 {
		retryAt = p.held[0].retryAt
	}
	p.mu.Unlock()
	if n == 0 {
		return partitionPollWait
	}
	if d := time.Until(retryAt); d > 0 {
		return min(d, 500*time.Millisecond)
	}
	if p.certain {
		return 0
	}
	info, err := p.cons.Info(ctx)
	if err != nil {
		if ctx.Err() == nil {
			p.w.log.Warn("command partition: read the consumer's pending count", "consumer", p.name, "err", err)
		}
		return 10 * partitionPollWait
	}
	if info.NumAckPending > n {
		// Older commands are held elsewhere (a worker that stopped; its AckWait brings them
		// back here) or are on their way back.
		return partitionPollWait
	}
	p.certain = true
	return 0
}

// snapshot returns the held commands; the partition goroutine alone changes the slice's
// contents, so the caller may read them until it calls settle.
func (p *partition) snapshot() []*heldCommand {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.held)
}

// drop removes the settled commands from the held ones.
func (p *partition) drop(settled map[*heldCommand]bool) {
	if len(settled) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = slices.DeleteFunc(p.held, func(h *heldCommand) bool { return settled[h] })
}

// extend sends InProgress for every command held longer than every, so none is redelivered
// while this worker holds it (a chain applied in a moment needs none).
func (p *partition) extend(every time.Duration) {
	p.mu.Lock()
	var late []*heldCommand
	for _, h := range p.held {
		if time.Since(h.pulled) >= every {
			late = append(late, h)
		}
	}
	p.mu.Unlock()
	for _, h := range late {
		_ = h.m.InProgress()
	}
}

// handBack returns every held command to the server in stream order (a retry waiting keeps
// its delay), for the worker that takes the partition over.
func (p *partition) handBack() {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, h := range held {
		var err error
		if d := time.Until(h.retryAt); d > 0 {
			err = h.m.NakWithDelay(d)
		} else {
			err = h.m.Nak()
		}
		if err != nil {
			p.w.log.Warn("hand back command", "subject", h.m.Subject(), "err", err)
		}
	}
}
