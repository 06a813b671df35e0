package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/schemas"
)

// StatsStreams are the streams whose storage BrokerStats reports by default: Sluice's streams,
// the jobs bucket's and the dead-letter payload bucket's.
func StatsStreams() []string {
	return []string{schemas.StreamChunks, schemas.StreamJobs, StreamGraph, StreamCommands, StreamEvents,
		schemas.StreamDLQ, StreamAdvisories, "KV_" + BucketJobs, "OBJ_" + schemas.BucketDLQPayloads}
}

// ConsumerRef names a durable consumer.
type ConsumerRef struct {
	Stream, Name string
}

// StatsConsumers are the durable consumers whose lag BrokerStats reports by default: the
// chunk, job, graph and advisory consumers and those of the command stream's partitions.
func StatsConsumers(partitions int) []ConsumerRef {
	refs := []ConsumerRef{{schemas.StreamChunks, ConsumerChunks}, {schemas.StreamJobs, ConsumerJobs},
		{StreamGraph, ConsumerGraph}, {StreamAdvisories, ConsumerAdvisories}}
	for p := range partitions {
		refs = append(refs, ConsumerRef{StreamCommands, CommandConsumerName(p)})
	}
	return refs
}

// BrokerStatsConfig configures BrokerStats.
type BrokerStatsConfig struct {
	// JS is the JetStream context the statistics are read with. Required.
	JS jetstream.JetStream
	// Streams names the streams reported. Optional; nil means StatsStreams. Streams missing
	// on the broker are left out. The list bounds the stream label.
	Streams []string
	// Consumers names the durable consumers reported. Optional; nil means
	// StatsConsumers(CommandPartitions). Consumers missing on the broker are left out. Only
	// named durables are reported, never the ephemeral consumers of watches, whose names are
	// random: the list bounds the consumer label.
	Consumers []ConsumerRef
	// DLQStream is the stream whose message count is sluice_dead_letter_messages. Optional;
	// "" means schemas.StreamDLQ.
	DLQStream string
	// Every is how often the statistics are read. Optional; 0 means 10 s: a scrape reads what
	// the last refresh cached, so a scrape storm costs the broker nothing.
	Every time.Duration
	// Timeout bounds one refresh. Optional; 0 means 5 s.
	Timeout time.Duration
	// Logger receives a warning when a refresh fails (at most one a minute). Optional; nil
	// discards.
	Logger *slog.Logger
}

// BrokerStats is a Prometheus collector of cluster facts read from the broker: per stream its
// messages, bytes and byte limit; per consumer its pending, ack-pending and redelivered
// messages; the account's JetStream storage and limits; the dead letters stored. Run refreshes
// them in the background; Collect reports the last refresh and never does I/O. Every process
// reports the same values: aggregate them with max, not sum. Safe for concurrent use.
type BrokerStats struct {
	cfg BrokerStatsConfig

	streamMsgs, streamBytes, streamMax *prometheus.Desc
	pending, ackPending, redelivered   *prometheus.Desc
	storage, storageLimit, deadLetters *prometheus.Desc
	age                                *prometheus.Desc
	failures                           prometheus.Counter
	mu                                 sync.Mutex // guards snap
	snap                               brokerSnapshot
	lastWarn                           time.Time // refresh only
	now                                func() time.Time
}

// brokerSnapshot is one refresh's reading.
type brokerSnapshot struct {
	at        time.Time // zero before the first successful refresh
	streams   []StreamStats
	consumers []ConsumerStats
	account   *jetstream.AccountInfo
	dlq       float64
	dlqOK     bool
}

// BrokerSnapshot is a copy of the last refresh's reading, as Snapshot returns it. It holds the
// reported streams and consumers only, in the order of BrokerStatsConfig.Streams and
// Consumers; those missing on the broker are left out.
type BrokerSnapshot struct {
	// At is when the reading was taken; zero before the first successful refresh, and then
	// Streams and Consumers are empty.
	At        time.Time
	Streams   []StreamStats
	Consumers []ConsumerStats
}

// StreamStats is one stream's storage as read from the broker.
type StreamStats struct {
	Stream   string
	Messages uint64
	Bytes    uint64
	// MaxBytes is the stream's byte limit; -1 (or 0) means none.
	MaxBytes int64
}

// ConsumerStats is one durable consumer's lag as read from the broker.
type ConsumerStats struct {
	Stream, Consumer string
	// Pending counts messages in the stream not yet delivered to the consumer (num_pending).
	Pending uint64
	// AckPending counts messages delivered and not yet acknowledged (num_ack_pending).
	AckPending uint64
	// Redelivered counts messages delivered more than once and not yet acknowledged
	// (num_redelivered).
	Redelivered uint64
}

// NewBrokerStats checks cfg and returns a BrokerStats; nothing is read until Run. Register it
// with a registry; it also registers nothing by itself.
func NewBrokerStats(cfg BrokerStatsConfig) (*BrokerStats, error) {
	if cfg.JS == nil {
		return nil, errors.New("broker stats: JS is required")
	}
	if cfg.Streams == nil {
		cfg.Streams = StatsStreams()
	}
	if cfg.Consumers == nil {
		cfg.Consumers = StatsConsumers(CommandPartitions)
	}
	if cfg.DLQStream == "" {
		cfg.DLQStream = schemas.StreamDLQ
	}
	if cfg.Every <= 0 {
		cfg.Every = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	stream := []string{"stream"}
	consumer := []string{"stream", "consumer"}
	return &BrokerStats{
		cfg:         cfg,
		now:         time.Now,
		streamMsgs:  prometheus.NewDesc("sluice_stream_messages", "Messages stored in the stream (cached broker read).", stream, nil),
		streamBytes: prometheus.NewDesc("sluice_stream_bytes", "Bytes stored in the stream (cached broker read).", stream, nil),
		streamMax: prometheus.NewDesc("sluice_stream_max_bytes",
			"The stream's max_bytes limit; absent for a stream without one (cached broker read).", stream, nil),
		pending: prometheus.NewDesc("sluice_consumer_pending_messages",
			"Messages in the stream not yet delivered to the consumer (num_pending; cached broker read).", consumer, nil),
		ackPending: prometheus.NewDesc("sluice_consumer_ack_pending_messages",
			"Messages delivered to the consumer and not yet acknowledged (num_ack_pending; cached broker read).", consumer, nil),
		redelivered: prometheus.NewDesc("sluice_consumer_redelivered_messages",
			"Messages delivered to the consumer more than once and not yet acknowledged (num_redelivered; cached broker read).", consumer, nil),
		storage: prometheus.NewDesc("sluice_jetstream_storage_bytes",
			"Bytes the account stores in JetStream, by storage (file, memory; cached broker read).", []string{"storage"}, nil),
		storageLimit: prometheus.NewDesc("sluice_jetstream_storage_limit_bytes",
			"The account's JetStream storage limit, by storage (file, memory); absent when unlimited (cached broker read).", []string{"storage"}, nil),
		deadLetters: prometheus.NewDesc("sluice_dead_letter_messages",
			"Dead letters stored in the DLQ stream, not yet replayed or deleted (cached broker read).", nil, nil),
		age: prometheus.NewDesc("sluice_broker_stats_age_seconds",
			"Seconds since the cached broker statistics were last refreshed successfully; absent before the first refresh.", nil, nil),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_broker_stats_refresh_failures_total",
			Help: "Refreshes of the cached broker statistics that failed.",
		}),
	}, nil
}

// Run refreshes the statistics at once and then every cfg.Every until ctx ends; it returns nil
// then. A failed refresh keeps the last reading (sluice_broker_stats_age_seconds grows) and
// counts in sluice_broker_stats_refresh_failures_total.
func (b *BrokerStats) Run(ctx context.Context) error {
	t := time.NewTicker(b.cfg.Every)
	defer t.Stop()
	for {
		if err := b.Refresh(ctx); err != nil && ctx.Err() == nil {
			b.failures.Inc()
			if now := b.now(); now.Sub(b.lastWarn) >= time.Minute {
				b.lastWarn = now
				b.cfg.Logger.Warn("broker statistics not refreshed; /metrics reports the last reading", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Refresh reads the statistics from the broker now: one stream info request per stream, one
// consumer info request per consumer and one account info request — only requests every
// Sluice role may make (deployments/nats/permissions.conf). Run calls it; it is exported for
// tests and is not safe to call concurrently with Run.
func (b *BrokerStats) Refresh(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	var snap brokerSnapshot
	for _, name := range b.cfg.Streams {
		st, err := b.cfg.JS.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		si := st.CachedInfo()
		snap.streams = append(snap.streams, StreamStats{Stream: name, Messages: si.State.Msgs, Bytes: si.State.Bytes, MaxBytes: si.Config.MaxBytes})
		if name == b.cfg.DLQStream {
			snap.dlq, snap.dlqOK = float64(si.State.Msgs), true
		}
	}
	for _, ref := range b.cfg.Consumers {
		c, err := b.cfg.JS.Consumer(ctx, ref.Stream, ref.Name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("consumer %s of %s: %w", ref.Name, ref.Stream, err)
		}
		ci := c.CachedInfo()
		snap.consumers = append(snap.consumers, ConsumerStats{Stream: ref.Stream, Consumer: ref.Name,
			Pending: ci.NumPending, AckPending: uint64(max(ci.NumAckPending, 0)), Redelivered: uint64(max(ci.NumRedelivered, 0))})
	}
	ai, err := b.cfg.JS.AccountInfo(ctx)
	if err != nil {
		return fmt.Errorf("account info: %w", err)
	}
	snap.account = ai
	snap.at = b.now()
	b.mu.Lock()
	b.snap = snap
	b.mu.Unlock()
	return nil
}

// Snapshot returns a copy of the last refresh's reading (At is zero before the first one), for
// readers other than Prometheus, such as the API's GET /v1/consumers. It does no I/O and never
// blocks beyond a short lock; it is safe for concurrent use with Run and Collect. The caller
// owns the returned slices.
func (b *BrokerStats) Snapshot() BrokerSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BrokerSnapshot{
		At:        b.snap.at,
		Streams:   append([]StreamStats(nil), b.snap.streams...),
		Consumers: append([]ConsumerStats(nil), b.snap.consumers...),
	}
}

// Describe implements prometheus.Collector.
func (b *BrokerStats) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{b.streamMsgs, b.streamBytes, b.streamMax, b.pending, b.ackPending,
		b.redelivered, b.storage, b.storageLimit, b.deadLetters, b.age} {
		ch <- d
	}
	b.failures.Describe(ch)
}

// Collect implements prometheus.Collector: the last refresh's reading, without I/O.
func (b *BrokerStats) Collect(ch chan<- prometheus.Metric) {
	b.failures.Collect(ch)
	b.mu.Lock()
	snap := b.snap
	b.mu.Unlock()
	if snap.at.IsZero() {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(b.age, b.now().Sub(snap.at).Seconds())
	for _, s := range snap.streams {
		gauge(b.streamMsgs, float64(s.Messages), s.Stream)
		gauge(b.streamBytes, float64(s.Bytes), s.Stream)
		if s.MaxBytes > 0 {
			gauge(b.streamMax, float64(s.MaxBytes), s.Stream)
		}
	}
	for _, c := range snap.consumers {
		gauge(b.pending, float64(c.Pending), c.Stream, c.Consumer)
		gauge(b.ackPending, float64(c.AckPending), c.Stream, c.Consumer)
		gauge(b.redelivered, float64(c.Redelivered), c.Stream, c.Consumer)
	}
	if snap.dlqOK {
		gauge(b.deadLetters, snap.dlq)
	}
	if a := snap.account; a != nil {
		gauge(b.storage, float64(a.Store), "file")
		gauge(b.storage, float64(a.Memory), "memory")
		if a.Limits.MaxStore > 0 {
			gauge(b.storageLimit, float64(a.Limits.MaxStore), "file")
		}
		if a.Limits.MaxMemory > 0 {
			gauge(b.storageLimit, float64(a.Limits.MaxMemory), "memory")
		}
	}
}
