package pipeline

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/settle"
)

// Pinger is a store that can tell cheaply whether it answers. A sink that implements it gets
// the worker's circuit breaker: while the sink is down, messages are held and the sink probed,
// instead of each message going back to the broker and spending its deliveries.
type Pinger interface {
	// Ping returns nil when the store answers. It may block; it honours ctx.
	Ping(ctx context.Context) error
}

// BreakerConfig configures the circuit breaker in front of a sink.
type BreakerConfig struct {
	// ProbeBase is the wait before the first probe of a sink that failed; it doubles after
	// every failed probe up to ProbeMax. Defaults 250 ms and 5 s: recovery is seen within 5 s
	// of the sink's return, and a down sink gets one cheap call per 5 s from each worker.
	ProbeBase, ProbeMax time.Duration
	// ProbeTimeout bounds one probe. Default 5 s.
	ProbeTimeout time.Duration
	// Disabled turns the breaker off: every failure goes back to the broker with its retry
	// delay (the behaviour of sinks without Ping).
	Disabled bool
}

func (c *BreakerConfig) setDefaults() {
	if c.ProbeBase <= 0 {
		c.ProbeBase = 250 * time.Millisecond
	}
	if c.ProbeMax <= 0 {
		c.ProbeMax = 5 * time.Second
	}
	c.ProbeMax = max(c.ProbeMax, c.ProbeBase)
	if c.ProbeTimeout <= 0 {
		c.ProbeTimeout = 5 * time.Second
	}
}

// probeLogEvery is how often a failed probe is logged: an hour's outage is 120 lines, not 720.
const probeLogEvery = 30 * time.Second

// breaker is a circuit breaker for one sink. A write in which every document failed
// transiently opens it (the sink is down, not the documents); while it is open, writers wait
// in await — their messages held and kept alive with InProgress, so no delivery is spent and
// the consumer stops pulling once MaxInFlight is held — and one prober pings the sink with
// backoff. The first successful ping closes it and every waiter writes again at once.
//
// Without it a 20 s outage cost 5–6 deliveries of every message in flight and recovered only
// when the last backoff ran out (≈32 s after the sink came back); an outage longer than the
// whole backoff schedule (≈3–4 min with MaxDeliver 10) dead-lettered every message in flight.
//
// A breaker is safe for concurrent use.
type breaker struct {
	cfg  BreakerConfig
	ping func(context.Context) error
	log  *slog.Logger
	name string

	mu     sync.Mutex
	open   bool
	gen    uint64        // incremented when the breaker closes; a failure of an older generation does not reopen it
	closed chan struct{} // closed when the breaker closes; replaced when it opens
	since  time.Time     // when it opened
	cause  error         // the failure that opened it

	tripped chan struct{} // buffered 1: wakes the prober
	stopped chan struct{} // closed when the prober returns

	m *breakerMetrics
}

// breakerMetrics are a breaker's metrics; they outlive the breaker (one per Worker.Run).
type breakerMetrics struct {
	openGauge prometheus.Gauge
	opens     prometheus.Counter
	probes    *prometheus.CounterVec
}

// newBreakerMetrics makes the breaker metrics of sink name and registers them with reg, if
// not nil.
func newBreakerMetrics(name string, reg prometheus.Registerer) *breakerMetrics {
	m := &breakerMetrics{
		openGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "sluice_sink_breaker_open",
			Help:        "1 while the sink's circuit breaker is open (sink down: messages held, sink probed).",
			ConstLabels: prometheus.Labels{"sink": name},
		}),
		opens: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "sluice_sink_breaker_opens_total",
			Help:        "Times the sink's circuit breaker opened.",
			ConstLabels: prometheus.Labels{"sink": name},
		}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "sluice_sink_breaker_probes_total",
			Help:        "Probes of a down sink, by result (ok, failed).",
			ConstLabels: prometheus.Labels{"sink": name},
		}, []string{"result"}),
	}
	m.probes.WithLabelValues("ok")
	m.probes.WithLabelValues("failed")
	if reg != nil {
		reg.MustRegister(m.openGauge, m.opens, m.probes)
	}
	return m
}

// newBreaker returns a closed breaker for the sink name, probed with ping. Its prober is run,
// once, by run.
func newBreaker(cfg BreakerConfig, name string, ping func(context.Context) error, log *slog.Logger, m *breakerMetrics) *breaker {
	cfg.setDefaults()
	b := &breaker{
		cfg: cfg, ping: ping, log: log, name: name, m: m,
		closed:  make(chan struct{}),
		tripped: make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	close(b.closed)
	return b
}

// generation returns the breaker's current generation, to pass to trip after a write.
func (b *breaker) generation() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.gen
}

// trip opens the breaker after a write of generation gen failed as a whole with cause. It
// does nothing if the breaker is open already or closed again since gen (the write started
// before the sink came back). It does not block.
func (b *breaker) trip(gen uint64, cause error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open || gen != b.gen {
		return
	}
	b.open, b.since, b.cause = true, time.Now(), cause
	b.closed = make(chan struct{})
	b.m.openGauge.Set(1)
	b.m.opens.Inc()
	b.log.Warn("sink unavailable: holding its messages and probing it", "sink", b.name, "err", cause)
	select {
	case b.tripped <- struct{}{}:
	default:
	}
}

// maxHeldRetries bounds how often one attempt is made again after the breaker closed: a sink
// that answers probes but keeps failing the same write as a whole is not down, so the message
// goes back to the broker with its retry delay (and its delivery limit).
const maxHeldRetries = 2

// hold runs attempt, holding it through a sink outage. attempt returns the cause when the sink
// failed as a whole (nil for success or for a failure of the data). While the breaker is open,
// hold waits before attempting; a whole failure opens it and, once the sink answers, the
// attempt is made again (at most maxHeldRetries more times). It returns nil once attempt has
// had its last run, or the error that stopped the wait (ctx ended, the worker stopping) before
// it. A nil breaker runs attempt once.
func (b *breaker) hold(ctx context.Context, attempt func() (down error)) error {
	for held := 0; ; held++ {
		if b == nil {
			attempt()
			return nil
		}
		if err := b.await(ctx); err != nil {
			return err
		}
		gen := b.generation()
		down := attempt()
		if down == nil || ctx.Err() != nil || held >= maxHeldRetries {
			return nil
		}
		b.trip(gen, down)
	}
}

// await returns nil at once while the breaker is closed; while it is open it blocks until it
// closes, ctx ends (ctx.Err()) or the prober stops (settle.ErrStopped).
func (b *breaker) await(ctx context.Context) error {
	b.mu.Lock()
	open, closed := b.open, b.closed
	b.mu.Unlock()
	if !open {
		return nil
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stopped:
		return settle.ErrStopped
	}
}

func (b *breaker) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log.Info("sink available again", "sink", b.name, "down_for", time.Since(b.since).Round(time.Millisecond))
	b.open, b.cause = false, nil
	b.gen++
	close(b.closed)
	b.m.openGauge.Set(0)
}

// run probes the sink whenever the breaker opens, until ctx ends; then await stops holding
// messages. It blocks; the worker runs it for its lifetime.
func (b *breaker) run(ctx context.Context) {
	defer close(b.stopped)
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.tripped:
		}
		var logged time.Time // the last "still unavailable" line: one per probeLogEvery
		suppressed := 0
		for delay := b.cfg.ProbeBase; ; delay = min(2*delay, b.cfg.ProbeMax) {
			t := time.NewTimer(delay/2 + rand.N(delay/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(ctx, b.cfg.ProbeTimeout)
			err := b.ping(pctx)
			cancel()
			if err == nil {
				b.m.probes.WithLabelValues("ok").Inc()
				b.close()
				break
			}
			b.m.probes.WithLabelValues("failed").Inc()
			if time.Since(logged) < probeLogEvery {
				suppressed++
				continue
			}
			b.log.Warn("sink still unavailable", "sink", b.name, "next_probe_within", min(2*delay, b.cfg.ProbeMax),
				"err", err, "suppressed", suppressed)
			logged, suppressed = time.Now(), 0
		}
	}
}
