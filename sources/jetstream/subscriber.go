package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SubscriberConfig configures a Subscriber.
type SubscriberConfig struct {
	// Consumer is the durable pull consumer to drain. Required.
	Consumer jetstream.Consumer
	// MaxInFlight bounds messages pulled but not yet acked, nacked or terminated. The subscriber
	// pulls only for free slots, so nothing waits in a buffer while its AckWait runs. Default 1024.
	MaxInFlight int
	// MaxInFlightBytes bounds the bytes (payload and headers) of the messages pulled but not
	// yet settled, beside MaxInFlight; 0 means no byte bound. A pull asks for at most as many
	// messages as largest messages (MinPullBytes) fit in what is left, and none is made while
	// less than one largest message is left, so a message never waits for room it cannot get.
	// It sends no byte limit (FetchMaxBytes): a replicated consumer's answer to one could
	// lose the messages it delivered (issue 15). With messages much smaller than MinPullBytes
	// a pull asks for fewer than it could; the bound holds as long as no message is larger
	// than MinPullBytes.
	MaxInFlightBytes int64
	// MaxInFlightWeight bounds the weight (Weight) of the messages pulled but not yet settled,
	// beside MaxInFlight and MaxInFlightBytes; 0 means no weight bound. The chunk worker
	// weighs a message by the chunks it carries: a message bound alone let 2,200 bundles of
	// 100 chunks — 220,000 chunks — be held at once, and a 1,000,000-chunk backlog drain
	// peaked at 213 MiB with the broker in process (139 MiB as a client).
	//
	// A weight is known only once its message has arrived, so the subscriber pulls only while
	// the room left is at least the mean weight of the messages pulled lately (an exponential
	// mean over about the last eight; at most the whole bound), and asks each pull for the
	// room divided by that mean (at least one message, at most FetchBatch and the free
	// slots). With messages of one weight the bound therefore holds exactly. With mixed
	// weights one pull may bring heavier messages than the mean: the worst case is one pull
	// of FetchBatch messages of the heaviest weight, so the weight in flight stays below
	// MaxInFlightWeight + FetchBatch × the heaviest message's weight, and the next pull waits
	// until the weight is back under the bound. The first pull, before any weight is known,
	// asks for one message. A message heavier than the whole bound is still delivered: once
	// the mean exceeds the bound, each pull waits until nothing is held and asks for one
	// message.
	MaxInFlightWeight int64
	// Weight weighs a message for MaxInFlightWeight. It runs on the pulling goroutine, once
	// per message, and must not block. Optional: nil weighs each message 1; a weight below 1
	// counts as 1.
	Weight func(jetstream.Msg) int
	// MinPullBytes is the least room a pull is made for: the largest message the server
	// accepts (its max_payload) plus subject and headers. Default 1 MiB + 64 KiB (the NATS
	// default max_payload); at most MaxInFlightBytes.
	MinPullBytes int64
	// FetchBatch is the most messages asked for in one pull request. Default 256.
	FetchBatch int
	// FetchMaxWait is how long one pull request waits for messages. Default 500 ms.
	FetchMaxWait time.Duration
	// InProgressEvery is how often a message still being handled gets its AckWait extended
	// (InProgress). Default a third of the consumer's AckWait.
	InProgressEvery time.Duration
	// DrainTimeout bounds how long Close waits for in-flight messages to finish; what is still
	// running after it is nacked for redelivery and Close returns an error. Default 30 s.
	DrainTimeout time.Duration
	// Logger, nil discards.
	Logger *slog.Logger
}

// Subscriber is a Watermill message.Subscriber over one durable JetStream pull consumer.
//
// Handler outcomes map to JetStream as follows. A message the handler acks is acked, unless the
// handler called SetRetry (NakWithDelay) or SetTerm (TermWithReason) on it first: Sluice's
// handlers settle every message themselves and then ack it to the router, so a retry never
// holds a processing slot (watermill#271) and the router never logs an expected retry as a
// failure. A message the handler nacks (an unexpected error, a panic) is retried with
// NakWithDelay and the retry delay set on it, or one second.
//
// Subscribe may be called once. Close stops pulling and drains. Safe for concurrent use.
type Subscriber struct {
	cfg     SubscriberConfig
	log     *slog.Logger
	slots   chan struct{}
	closing chan struct{}
	done    chan struct{}

	mu         sync.Mutex // guards subscribed, closed and inflight
	subscribed bool
	closed     bool
	inflight   map[*Delivery]struct{}
	bytes      atomic.Int64   // of the in-flight messages (msgSize), with MaxInFlightBytes
	weight     atomic.Int64   // of the in-flight messages (Weight), with MaxInFlightWeight
	freed      chan struct{}  // signalled when bytes or weight fall
	meanWeight float64        // exponential mean of pulled messages' weights; 0 before the first (pullLoop only)
	drainLeft  int            // messages ConsumeBatches nacked when its drain timed out
	wg         sync.WaitGroup // one per in-flight message
}

var _ message.Subscriber = (*Subscriber)(nil)

// NewSubscriber returns a Subscriber. The caller must Close it.
func NewSubscriber(cfg SubscriberConfig) (*Subscriber, error) {
	if cfg.Consumer == nil {
		return nil, errors.New("subscriber: Consumer is required")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.FetchBatch <= 0 {
		cfg.FetchBatch = 256
	}
	if cfg.MinPullBytes <= 0 {
		cfg.MinPullBytes = 1<<20 + 64<<10
	}
	if cfg.MaxInFlightBytes > 0 {
		cfg.MinPullBytes = min(cfg.MinPullBytes, cfg.MaxInFlightBytes)
	}
	if cfg.MaxInFlightWeight < 0 {
		cfg.MaxInFlightWeight = 0
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 500 * time.Millisecond
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.InProgressEvery <= 0 {
		ackWait := 10 * time.Second // Provision's default
		if ci := cfg.Consumer.CachedInfo(); ci != nil && ci.Config.AckWait > 0 {
			ackWait = ci.Config.AckWait
		}
		cfg.InProgressEvery = ackWait / 3
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Subscriber{
		cfg:      cfg,
		log:      log,
		slots:    make(chan struct{}, cfg.MaxInFlight),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		inflight: make(map[*Delivery]struct{}),
		freed:    make(chan struct{}, 1),
	}, nil
}

type ctxKey struct{}

// Delivery is one pulled message being handled: behind a Watermill message (Subscribe) or
// handed to a BatchHandler (ConsumeBatches), which settles it with Ack, Retry or Term.
type Delivery struct {
	js      jetstream.Msg
	meta    *jetstream.MsgMetadata // parsed once, when pulled
	size    int64                  // counted against MaxInFlightBytes
	weight  int64                  // counted against MaxInFlightWeight
	wm      *message.Message
	started time.Time

	mu     sync.Mutex // guards kind, delay, reason
	kind   disposition
	delay  time.Duration
	reason string

	// settled is set once a batch handler's message has been settled (ConsumeBatches only).
	settled atomic.Bool
	sub     *Subscriber

	// sendMu orders what is sent about the message: once its ack, nak or term is sent (gone),
	// no InProgress follows it. An InProgress sent after a NakWithDelay made the server wait
	// out the whole AckWait before redelivering (issue 11).
	sendMu sync.Mutex
	gone   bool
}

// send sends the message's final disposition with fn, once; later InProgress calls skip it.
func (d *Delivery) send(fn func() error) error {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	if d.gone {
		return nil
	}
	d.gone = true
	return fn()
}

// extend sends InProgress unless the message's disposition was sent already.
func (d *Delivery) extend() {
	d.sendMu.Lock()
	defer d.sendMu.Unlock()
	if !d.gone {
		_ = d.js.InProgress()
	}
}

type disposition int

const (
	dispAck disposition = iota
	dispRetry
	dispTerm
)

func deliveryOf(m *message.Message) *Delivery {
	d, _ := m.Context().Value(ctxKey{}).(*Delivery)
	return d
}

// SetRetry makes the message be redelivered after delay instead of acked when the handler
// settles it. It reports false when m did not come from a Subscriber.
func SetRetry(m *message.Message, delay time.Duration) bool {
	d := deliveryOf(m)
	if d == nil {
		return false
	}
	d.mu.Lock()
	d.kind, d.delay = dispRetry, delay
	d.mu.Unlock()
	return true
}

// SetTerm makes the message be terminated (never redelivered) with reason instead of acked
// when the handler settles it. Dead-letter it first. It reports false when m did not come from
// a Subscriber.
func SetTerm(m *message.Message, reason string) bool {
	d := deliveryOf(m)
	if d == nil {
		return false
	}
	d.mu.Lock()
	d.kind, d.reason = dispTerm, reason
	d.mu.Unlock()
	return true
}

// Native returns the JetStream message behind m, for its headers and metadata.
func Native(m *message.Message) (jetstream.Msg, bool) {
	d := deliveryOf(m)
	if d == nil {
		return nil, false
	}
	return d.js, true
}

// Metadata returns the JetStream metadata of the message behind m (stream, sequences,
// deliveries), parsed once when the message was pulled; false when m did not come from a
// Subscriber or its metadata could not be parsed.
func Metadata(m *message.Message) (*jetstream.MsgMetadata, bool) {
	d := deliveryOf(m)
	if d == nil || d.meta == nil {
		return nil, false
	}
	return d.meta, true
}

// Subscribe starts pulling and returns the channel of messages. topic is informational: the
// consumer's filter decides what arrives. The channel is closed after Close, or when ctx ends
// and in-flight messages are drained.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("subscriber: closed")
	}
	if s.subscribed {
		return nil, errors.New("subscriber: Subscribe may be called once")
	}
	s.subscribed = true
	out := make(chan *message.Message)
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.closing:
		}
	}()
	go s.run(out)
	return out, nil
}

func (s *Subscriber) run(out chan<- *message.Message) {
	defer close(s.done)
	stopTicker := make(chan struct{})
	tickerDone := make(chan struct{})
	go s.extendLoop(stopTicker, tickerDone)
	s.pullLoop(func(m jetstream.Msg, h held) { s.deliver(out, m, h) })
	s.waitInflight()
	close(stopTicker)
	<-tickerDone
	close(out)
}

// held is what one in-flight message counts against MaxInFlightBytes and MaxInFlightWeight
// (0 without them).
type held struct {
	size, weight int64
}

// pullLoop pulls for free slots (and room in MaxInFlightBytes and MaxInFlightWeight) until
// Close and passes each message, with what it counts against those bounds, to deliver.
func (s *Subscriber) pullLoop(deliver func(m jetstream.Msg, h held)) {
	// A pull request under way when Close starts is let run out (at most FetchMaxWait) rather
	// than cancelled: the server may already have sent messages to it, and a cancelled
	// request would strand them until their AckWait ran out. What it brings is handled or
	// handed back.
	errDelay := 50 * time.Millisecond
	for {
		// Closing wins over a free slot: no new pull once a drain has started.
		select {
		case <-s.closing:
			return
		default:
		}
		// Wait for room for at least one largest message and one message of the mean
		// weight, then take at least one free slot, then as many more as are free now and
		// the weight left allows.
		if !s.waitForRoom() {
			return
		}
		select {
		case s.slots <- struct{}{}:
		case <-s.closing:
			return
		}
		want := min(s.cfg.FetchBatch, s.weightRoom(), s.bytesRoom())
		n := 1
	more:
		for n < want {
			select {
			case s.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		// FetchMaxWait, not a context deadline: with it the client listens a second past the
		// server's expiry for the server's own end of the request, so no message the server
		// sent is dropped. A deadline ends the client's side only 10% after the server's, and
		// on a busy machine messages sent in between were stranded until their AckWait ran out.
		// No FetchMaxBytes: bytesRoom bounds the bytes by the count. A replicated consumer
		// answers a pull with a byte limit whose count is reached with a "409 Batch Completed"
		// that can overtake the messages, and nats.go ends the fetch on it: the messages count
		// as delivered and never arrive (issue 15, the three-node proof).
		batch, err := s.cfg.Consumer.Fetch(n, jetstream.FetchMaxWait(s.cfg.FetchMaxWait))
		got := 0
		if err == nil {
			for m := range batch.Messages() {
				got++
				var h held
				if s.cfg.MaxInFlightBytes > 0 {
					h.size = msgSize(m)
					s.bytes.Add(h.size)
				}
				if s.cfg.MaxInFlightWeight > 0 {
					h.weight = s.weigh(m)
					s.weight.Add(h.weight)
				}
				deliver(m, h)
			}
			if err = batch.Error(); errors.Is(err, jetstream.ErrMaxBytesExceeded) {
				err = nil // the pull used up its room
			}
		}
		for i := got; i < n; i++ {
			<-s.slots
		}
		if err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			s.log.Warn("pull from consumer failed", "err", err)
			select {
			case <-time.After(errDelay):
			case <-s.closing:
				return
			}
			errDelay = min(errDelay*2, 2*time.Second)
			continue
		}
		errDelay = 50 * time.Millisecond
	}
}

// weigh returns m's weight for MaxInFlightWeight (at least 1) and folds it into the mean the
// next pulls are sized by.
func (s *Subscriber) weigh(m jetstream.Msg) int64 {
	w := int64(1)
	if s.cfg.Weight != nil {
		w = max(1, int64(s.cfg.Weight(m)))
	}
	if s.meanWeight == 0 {
		s.meanWeight = float64(w)
	} else {
		// About the last eight messages: a stream that turns from single chunks to bundles
		// is re-estimated within one pull.
		s.meanWeight += (float64(w) - s.meanWeight) / 8
	}
	return w
}

// pullWeight is the least room in MaxInFlightWeight a pull is made for: one message of the
// mean weight (1 before any is known), at most the whole bound, so that a message heavier than
// the bound is pulled once nothing else is held.
func (s *Subscriber) pullWeight() int64 {
	return min(max(1, int64(math.Ceil(s.meanWeight))), s.cfg.MaxInFlightWeight)
}

// weightRoom is how many messages the next pull may ask for under MaxInFlightWeight: the room
// left divided by the mean weight, at least one; one before any weight is known (it may be
// anything); unbounded without MaxInFlightWeight.
func (s *Subscriber) weightRoom() int {
	if s.cfg.MaxInFlightWeight <= 0 {
		return math.MaxInt
	}
	if s.meanWeight == 0 {
		return 1
	}
	room := float64(s.cfg.MaxInFlightWeight - s.weight.Load())
	return int(max(1, min(room/s.meanWeight, math.MaxInt32)))
}

// bytesRoom is how many messages the next pull may ask for under MaxInFlightBytes: the room
// left divided by MinPullBytes (the largest message), at least one (waitForRoom waited for
// one's room); unbounded without MaxInFlightBytes.
func (s *Subscriber) bytesRoom() int {
	if s.cfg.MaxInFlightBytes <= 0 {
		return math.MaxInt
	}
	return int(max(1, min((s.cfg.MaxInFlightBytes-s.bytes.Load())/s.cfg.MinPullBytes, math.MaxInt32)))
}

// messageUUID is the Watermill UUID of m: the one the Publisher sent (HeaderUUID), else its
// Nats-Msg-Id (a chunk's id, for one), else "<stream>:<seq>" (the subject when m has no
// metadata).
func messageUUID(m jetstream.Msg, meta *jetstream.MsgMetadata) string {
	if id := m.Headers().Get(HeaderUUID); id != "" {
		return id
	}
	if id := m.Headers().Get(nats.MsgIdHdr); id != "" {
		return id
	}
	if meta != nil {
		return meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
	}
	return m.Subject()
}

// deliver hands one message to the router and settles it in its own goroutine once the
// handler is done. Its slot is released then.
func (s *Subscriber) deliver(out chan<- *message.Message, m jetstream.Msg, h held) {
	meta, _ := m.Metadata()
	wm := message.NewMessage(messageUUID(m, meta), m.Data())
	for k, v := range m.Headers() {
		if len(v) > 0 {
			wm.Metadata.Set(k, v[0])
		}
	}
	wm.Metadata.Set("subject", m.Subject())
	d := &Delivery{js: m, meta: meta, wm: wm, size: h.size, weight: h.weight, started: time.Now()}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, d))
	wm.SetContext(ctx)

	s.mu.Lock()
	s.inflight[d] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()

	// Prefer handing the message over: a message already pulled is better finished than
	// handed back, even during a drain.
	sent := false
	select {
	case out <- wm:
		sent = true
	default:
	}
	if !sent {
		select {
		case out <- wm:
		case <-s.closing:
			// The router stopped taking messages: hand it back at once.
			_ = d.send(m.Nak)
			cancel()
			s.finish(d)
			return
		}
	}
	go func() {
		defer cancel()
		defer s.finish(d)
		select {
		case <-wm.Acked():
			s.settle(d)
		case <-wm.Nacked():
			d.mu.Lock()
			if d.kind != dispTerm {
				d.kind = dispRetry
				if d.delay <= 0 {
					d.delay = time.Second
				}
			}
			d.mu.Unlock()
			s.settle(d)
		case <-s.done:
			// Close gave up waiting: let another worker have it now.
			_ = d.send(m.Nak)
		}
	}()
}

func (s *Subscriber) settle(d *Delivery) {
	d.mu.Lock()
	kind, delay, reason := d.kind, d.delay, d.reason
	d.mu.Unlock()
	var err error
	switch kind {
	case dispAck:
		err = d.send(d.js.Ack)
	case dispRetry:
		err = d.send(func() error { return d.js.NakWithDelay(delay) })
	case dispTerm:
		err = d.send(func() error { return d.js.TermWithReason(reason) })
	}
	if err != nil {
		// The message will be redelivered after AckWait; handlers are idempotent.
		s.log.Warn("settle message failed", "subject", d.js.Subject(), "err", err)
	}
}

// waitForRoom waits until a pull has room for one largest message under MaxInFlightBytes and
// for one message of the mean weight under MaxInFlightWeight (at once without them); false
// when the subscriber is closing first.
func (s *Subscriber) waitForRoom() bool {
	for (s.cfg.MaxInFlightBytes > 0 && s.bytes.Load() > s.cfg.MaxInFlightBytes-s.cfg.MinPullBytes) ||
		(s.cfg.MaxInFlightWeight > 0 && s.weight.Load() > s.cfg.MaxInFlightWeight-s.pullWeight()) {
		select {
		case <-s.freed:
		case <-s.closing:
			return false
		}
	}
	return true
}

// msgSize is what a message counts against MaxInFlightBytes: its payload and headers.
func msgSize(m jetstream.Msg) int64 {
	n := len(m.Data())
	for k, vs := range m.Headers() {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return int64(n)
}

// InFlight returns the messages delivered to the handler and not yet settled, for metrics.
// Safe for concurrent use; it does no I/O.
func (s *Subscriber) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inflight)
}

func (s *Subscriber) finish(d *Delivery) {
	s.mu.Lock()
	delete(s.inflight, d)
	s.mu.Unlock()
	if d.size > 0 || d.weight > 0 {
		s.bytes.Add(-d.size)
		s.weight.Add(-d.weight)
		select {
		case s.freed <- struct{}{}:
		default:
		}
	}
	<-s.slots
	s.wg.Done()
}

// extendLoop sends InProgress for messages held longer than InProgressEvery, so long writes
// are not redelivered to another worker mid-flight.
func (s *Subscriber) extendLoop(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(s.cfg.InProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			var late []*Delivery
			for d := range s.inflight {
				if now.Sub(d.started) >= s.cfg.InProgressEvery {
					late = append(late, d)
				}
			}
			s.mu.Unlock()
			for _, d := range late {
				d.extend()
			}
		}
	}
}

// ErrDrainTimeout is returned (wrapped) by Close and ConsumeBatches when in-flight messages were
// still unsettled after DrainTimeout; they were nacked for redelivery.
var ErrDrainTimeout = errors.New("subscriber: drain timed out; unfinished messages were nacked")

// waitInflight waits up to DrainTimeout for every in-flight message to be settled and reports
// whether they all were.
func (s *Subscriber) waitInflight() bool {
	idle := make(chan struct{})
	go func() { s.wg.Wait(); close(idle) }()
	select {
	case <-idle:
		return true
	case <-time.After(s.cfg.DrainTimeout):
		s.log.Warn("drain timed out", "timeout", s.cfg.DrainTimeout)
		return false
	}
}

// Close stops pulling, waits up to DrainTimeout for in-flight messages to be settled, nacks
// what is left, and closes the message channel. It is idempotent; it returns an error when the
// drain timed out.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	subscribed := s.subscribed
	s.mu.Unlock()
	close(s.closing)
	if !subscribed {
		close(s.done)
		return nil
	}
	<-s.done
	s.mu.Lock()
	left := len(s.inflight)
	if s.drainLeft > 0 {
		// ConsumeBatches nacked them already and returns the error too.
		s.mu.Unlock()
		return fmt.Errorf("%w (%d messages)", ErrDrainTimeout, s.drainLeft)
	}
	s.mu.Unlock()
	if left > 0 {
		// The settle goroutines nack on done; wait for them to let go of their slots.
		s.wg.Wait()
		return fmt.Errorf("%w (%d messages)", ErrDrainTimeout, left)
	}
	return nil
}
