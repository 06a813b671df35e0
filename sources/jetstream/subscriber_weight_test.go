package jetstream_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Issue 12: the chunk worker bounded in-flight work in messages only. With chunk bundles of 100
// chunks its 2,200 message slots held 220,000 chunks, and a 1,000,000-chunk backlog drain
// peaked at 213 MiB with the broker in process (139 MiB as a client). MaxInFlightWeight bounds
// the weight of the messages held: these tests hold messages in a handler that blocks and
// count what the subscriber pulled.

const weightHeader = "Test-Weight"

// publishWeighted publishes one message per weight, with ids w000, w001, … and the weight in a
// header that testWeight reads.
func publishWeighted(t *testing.T, js jetstream.JetStream, weights ...int) {
	t.Helper()
	msgs := make([]*nats.Msg, len(weights))
	for i, w := range weights {
		msgs[i] = chunkMsg(fmt.Sprintf("w%03d", i))
		msgs[i].Header.Set(weightHeader, strconv.Itoa(w))
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 100)
		if err := sjs.PublishAtomic(context.Background(), js, msgs[:n]); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

func testWeight(m jetstream.Msg) int {
	w, _ := strconv.Atoi(m.Headers().Get(weightHeader))
	return w
}

// gate holds handlers until it is opened; open may be called more than once.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) wait() { <-g.ch }
func (g *gate) isOpen() bool {
	select {
	case <-g.ch:
		return true
	default:
		return false
	}
}

// holder is a batch handler that counts the messages and weight it holds, waits for its gate
// and then for hold, and acks. Weights are read from the header, as the subscriber reads them.
type holder struct {
	gate               *gate
	hold               time.Duration
	msgs, weight, most atomic.Int64
	mu                 sync.Mutex // guards seen
	seen               map[string]int
}

func newHolder() *holder { return &holder{gate: newGate(), seen: map[string]int{}} }

func (h *holder) handle(_ context.Context, batch []*sjs.Delivery) {
	var w int64
	for _, d := range batch {
		w += int64(max(1, testWeight(d.Msg())))
		h.mu.Lock()
		h.seen[chunkID(d)]++
		h.mu.Unlock()
	}
	h.msgs.Add(int64(len(batch)))
	raise(&h.most, h.weight.Add(w))
	h.gate.wait()
	time.Sleep(h.hold)
	h.weight.Add(-w)
	h.msgs.Add(-int64(len(batch)))
	for _, d := range batch {
		d.Ack()
	}
}

// steady waits until the number of messages held has stayed the same, and above 0, for
// 300 ms, and returns it.
func steady(t *testing.T, held func() int64) int64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last, since := int64(-1), time.Now()
	for time.Now().Before(deadline) {
		n := held()
		if n != last {
			last, since = n, time.Now()
		} else if n > 0 && time.Since(since) >= 300*time.Millisecond {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the messages held never settled (last %d)", last)
	return 0
}

func repeat(w, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = w
	}
	return out
}

// With MaxInFlightWeight, a handler that blocks holds no more weight than the bound (exactly,
// for messages of one weight), the consumer has handed out nothing more, and once the handler
// lets go every message is handled once, within the bound throughout. A message heavier than
// the whole bound is still delivered, alone.
func TestConsumeBatchesBoundsWeightInFlight(t *testing.T) {
	tests := []struct {
		name     string
		weights  []int
		bound    int64
		weigh    func(jetstream.Msg) int
		wantHeld int64 // messages held while the handler blocks
		wantMost int64 // most weight held at once
	}{
		// 4 × 10 fits in 45, a fifth does not; MaxInFlight (1000) alone would hold all 60.
		{name: "one weight", weights: repeat(10, 60), bound: 45, weigh: testWeight, wantHeld: 4, wantMost: 40},
		// Each weighs more than the bound: one at a time, never stuck.
		{name: "heavier than the bound", weights: repeat(50, 5), bound: 10, weigh: testWeight, wantHeld: 1, wantMost: 50},
		// Weights below 1 count 1.
		{name: "weights below one", weights: repeat(0, 20), bound: 7, weigh: testWeight, wantHeld: 7, wantMost: 7},
		// Without Weight each message weighs 1.
		{name: "no weight func", weights: repeat(10, 20), bound: 7, wantHeld: 7, wantMost: 70},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, p := setup(t, sjs.ProvisionConfig{})
			publishWeighted(t, js, tt.weights...)
			sub := newSubscriber(t, sjs.SubscriberConfig{
				Consumer: p.ChunkConsumer, MaxInFlight: 1000, MaxInFlightWeight: tt.bound, Weight: tt.weigh,
				FetchMaxWait: 100 * time.Millisecond,
			})
			h := newHolder()
			defer h.gate.open() // before the cleanups drain the subscriber
			cancel, done := consumeBatches(t, sub, sjs.BatchConfig{MaxBatch: 1, Workers: 1000}, h.handle)

			held := steady(t, h.msgs.Load)
			if held != tt.wantHeld {
				t.Fatalf("a blocked handler holds %d messages, want %d (bound %d)", held, tt.wantHeld, tt.bound)
			}
			if info := consumerInfo(t, p.ChunkConsumer); int64(info.NumAckPending) != held {
				t.Fatalf("the consumer has %d messages out, the handler holds %d: the rest wait unseen", info.NumAckPending, held)
			}
			h.gate.open()
			stopWhenSettled(t, p.ChunkConsumer, uint64(len(tt.weights)), cancel, done)
			if got := h.most.Load(); got != tt.wantMost {
				t.Fatalf("at most %d weight held at once, want %d (bound %d)", got, tt.wantMost, tt.bound)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.seen) != len(tt.weights) {
				t.Fatalf("%d distinct messages handled, want %d", len(h.seen), len(tt.weights))
			}
			for id, n := range h.seen {
				if n != 1 {
					t.Fatalf("%s handled %d times, want once", id, n)
				}
			}
		})
	}
}

// With mixed weights a pull is sized by the mean weight, so it may bring heavier messages than
// estimated; the documented worst case is MaxInFlightWeight − 1 + FetchBatch × the heaviest
// weight, and every message still gets through once. Light messages come in runs between
// heavy ones, so the mean swings.
func TestConsumeBatchesMixedWeightsStayWithinOnePull(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	var weights []int
	for i := range 300 {
		switch {
		case i%20 >= 15: // a run of heavy messages
			weights = append(weights, 20)
		default:
			weights = append(weights, 1+i%3)
		}
	}
	publishWeighted(t, js, weights...)
	const bound, fetch, heaviest = 30, 4, 20
	sub := newSubscriber(t, sjs.SubscriberConfig{
		Consumer: p.ChunkConsumer, MaxInFlight: 1000, MaxInFlightWeight: bound, Weight: testWeight,
		FetchBatch: fetch, FetchMaxWait: 100 * time.Millisecond,
	})
	h := newHolder()
	h.hold = 3 * time.Millisecond
	h.gate.open()
	cancel, done := consumeBatches(t, sub, sjs.BatchConfig{MaxBatch: 1, Workers: 1000}, h.handle)
	stopWhenSettled(t, p.ChunkConsumer, uint64(len(weights)), cancel, done)
	if got := h.most.Load(); got > bound-1+fetch*heaviest || got < bound/2 {
		t.Fatalf("at most %d weight held at once; want at most %d (bound %d + one pull of the heaviest) and the bound used",
			got, bound-1+fetch*heaviest, bound)
	}
	t.Logf("most weight held: %d (bound %d)", h.most.Load(), bound)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.seen) != len(weights) {
		t.Fatalf("%d distinct messages handled, want %d", len(h.seen), len(weights))
	}
}

// Subscribe (the router's path) honours MaxInFlightWeight too: messages not yet acked hold
// their weight, and once acked the rest arrive.
func TestSubscribeBoundsWeightInFlight(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	const n = 30
	publishWeighted(t, js, repeat(10, n)...)
	sub := newSubscriber(t, sjs.SubscriberConfig{
		Consumer: p.ChunkConsumer, MaxInFlight: 1000, MaxInFlightWeight: 45, Weight: testWeight,
		FetchMaxWait: 100 * time.Millisecond,
	})
	msgs, err := sub.Subscribe(context.Background(), "chunks")
	if err != nil {
		t.Fatal(err)
	}
	var first []*message.Message
	for len(first) < 4 {
		select {
		case m := <-msgs:
			first = append(first, m)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d messages arrived", len(first))
		}
	}
	select {
	case m := <-msgs:
		t.Fatalf("message %s arrived while 4 of weight 10 were held under a bound of 45", m.UUID)
	case <-time.After(300 * time.Millisecond):
	}
	if info := consumerInfo(t, p.ChunkConsumer); info.NumAckPending != 4 {
		t.Fatalf("the consumer has %d messages out, want 4", info.NumAckPending)
	}
	// Each ack makes room for the next.
	for _, m := range first {
		m.Ack()
	}
	for got := len(first); got < n; got++ {
		select {
		case m := <-msgs:
			m.Ack()
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d messages arrived", got, n)
		}
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitSettled(t, p.ChunkConsumer, n)
}

// A drain under MaxInFlightWeight finishes the batches held, hands nothing else out, and
// returns without error; what was never pulled stays for the next consumer.
func TestConsumeBatchesDrainWithWeightBound(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	const n = 40
	publishWeighted(t, js, repeat(10, n)...)
	sub := newSubscriber(t, sjs.SubscriberConfig{
		Consumer: p.ChunkConsumer, MaxInFlight: 1000, MaxInFlightWeight: 45, Weight: testWeight,
		FetchMaxWait: 100 * time.Millisecond,
	})
	h := newHolder()
	defer h.gate.open()
	cancel, done := consumeBatches(t, sub, sjs.BatchConfig{MaxBatch: 1, Workers: 1000}, h.handle)
	held := steady(t, h.msgs.Load)
	cancel()
	time.AfterFunc(100*time.Millisecond, h.gate.open)
	if err := waitReturn(t, done); err != nil {
		t.Fatalf("ConsumeBatches: %v", err)
	}
	if !h.gate.isOpen() {
		t.Fatal("ConsumeBatches returned before its held batches were finished")
	}
	// Acks are fire-and-forget: the server counts them shortly after.
	waitSettled(t, p.ChunkConsumer, uint64(held))
	if info := consumerInfo(t, p.ChunkConsumer); info.NumPending != uint64(n)-uint64(held) || info.Delivered.Stream != uint64(held) {
		t.Fatalf("after the drain: delivered up to %d, %d not pulled; want %d, %d", info.Delivered.Stream, info.NumPending, held, n-held)
	}
}
