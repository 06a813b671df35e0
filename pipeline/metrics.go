package pipeline

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

type workerMetrics struct {
	messages  *instrument.Messages // sluice_messages_total, sluice_messages_in_flight
	sinks     *instrument.Sinks    // sluice_sink_write_seconds and the rest
	latency   prometheus.Histogram
	batchMsgs prometheus.Histogram
	// dlqFails counts dead letters that could not be stored; unresolved (a gauge read at
	// scrape time) is how many messages are in that state now (deadLetterer.unresolvedCount).
	dlqFails   prometheus.Counter
	unresolved prometheus.GaugeFunc
}

// newWorkerMetrics makes the worker's metrics and registers them with reg, if not nil.
// unresolved reports the messages that could neither be applied nor dead-lettered. The
// message and sink families are shared with the command worker (pipeline/instrument).
func newWorkerMetrics(reg prometheus.Registerer, unresolved func() float64) (*workerMetrics, error) {
	m := &workerMetrics{
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
		dlqFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_dead_letter_failures_total",
			Help: "Dead letters that could not be stored (the message was kept in its stream and retried, never dropped).",
		}),
		unresolved: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_dead_letter_unresolved",
			Help: "Messages that could neither be applied nor dead-lettered in the last 10 minutes; above 0, the worker is unhealthy.",
		}, unresolved),
	}
	var err error
	if m.messages, err = instrument.NewMessages(reg); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if m.sinks, err = instrument.NewSinks(reg); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.latency, m.batchMsgs, m.dlqFails, m.unresolved} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("worker: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// initSeries creates the worker's counter series at 0: the outcomes of each stream it
// consumes, and its sink calls.
func (m *workerMetrics) initSeries(sink string, graph bool) {
	m.messages.Init(schemas.StreamChunks, instrument.OutcomeWritten, instrument.OutcomeRetried, instrument.OutcomeDeadLettered)
	m.messages.Init(schemas.StreamJobs, instrument.OutcomeApplied, instrument.OutcomeRetried, instrument.OutcomeDeadLettered)
	m.sinks.Init(sink, instrument.CommandInsertDocs)
	if graph {
		m.messages.Init(sjs.StreamGraph, instrument.OutcomeApplied, instrument.OutcomeRequeued, instrument.OutcomeRetried, instrument.OutcomeDeadLettered)
		m.sinks.Init(instrument.SinkGraph, instrument.CommandApplyGraph)
	}
}

// chunkWritten counts a chunk written, d after its message was pulled.
func (m *workerMetrics) chunkWritten(d time.Duration) {
	m.messages.Add(schemas.StreamChunks, instrument.OutcomeWritten, 1)
	if d > 0 {
		m.latency.Observe(d.Seconds())
	}
}

// instrumentedSink measures every write call of the sink it wraps.
type instrumentedSink struct {
	DocSink
	name string
	m    *workerMetrics
}

func (s instrumentedSink) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	end := s.m.sinks.Begin(s.name, instrument.CommandInsertDocs)
	out, err := s.DocSink.WriteDocs(ctx, collection, docs)
	end(instrument.Status(err, out))
	s.m.sinks.Documents(s.name, len(docs))
	return out, err
}
