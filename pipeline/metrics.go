package pipeline

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/sinks/document"
)

type workerMetrics struct {
	messages   *prometheus.CounterVec
	latency    prometheus.Histogram
	batchMsgs  prometheus.Histogram
	batchDocs  prometheus.Histogram
	writeSecs  prometheus.Histogram
	writeFails prometheus.Counter
	// dlqFails counts dead letters that could not be stored; unresolved (a gauge read at
	// scrape time) is how many messages are in that state now (deadLetterer.unresolvedCount).
	dlqFails   prometheus.Counter
	unresolved prometheus.GaugeFunc
}

// newWorkerMetrics makes the worker's metrics and registers them with reg, if not nil.
// unresolved reports the messages that could neither be applied nor dead-lettered.
func newWorkerMetrics(reg prometheus.Registerer, unresolved func() float64) *workerMetrics {
	m := &workerMetrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_chunk_messages_total",
			Help: "Chunks handled, by outcome: written and dead_lettered count chunks (a bundle's items one by one), retried counts messages sent back to the broker.",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_chunk_handle_seconds",
			Help:    "Time from pulling a chunk message to its durable write and recorded progress.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		batchMsgs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_chunk_batch_messages",
			Help:    "Chunk messages per batch handed to the chunk handler.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
		batchDocs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_sink_batch_documents",
			Help:    "Documents per sink write call (group commit size).",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}),
		writeSecs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_sink_write_seconds",
			Help:    "Duration of one sink write call.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		writeFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_sink_write_failures_total",
			Help: "Sink write calls that failed as a whole.",
		}),
		dlqFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_dead_letter_failures_total",
			Help: "Dead letters that could not be stored (the message was kept in its stream and retried, never dropped).",
		}),
		unresolved: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_dead_letter_unresolved",
			Help: "Messages that could neither be applied nor dead-lettered in the last 10 minutes; above 0, the worker is unhealthy.",
		}, unresolved),
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.latency, m.batchMsgs, m.batchDocs, m.writeSecs, m.writeFails, m.dlqFails, m.unresolved)
	}
	return m
}

func (m *workerMetrics) outcome(o string, d time.Duration) {
	m.messages.WithLabelValues(o).Inc()
	if d > 0 {
		m.latency.Observe(d.Seconds())
	}
}

// instrumentedSink measures every write call of the sink it wraps.
type instrumentedSink struct {
	DocSink
	m *workerMetrics
}

func (s instrumentedSink) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	start := time.Now()
	out, err := s.DocSink.WriteDocs(ctx, collection, docs)
	s.m.writeSecs.Observe(time.Since(start).Seconds())
	s.m.batchDocs.Observe(float64(len(docs)))
	if err != nil {
		s.m.writeFails.Inc()
	}
	return out, err
}
