// Package instrument holds the metric families that several workers of one process share:
// the chunk worker (chunks, job events, graph batches) and the command worker both settle
// messages (Messages: sluice_messages_total, sluice_messages_in_flight) and write to sinks
// (Sinks: sluice_sink_write_seconds, sluice_sink_write_failures_total,
// sluice_sink_writes_in_flight, sluice_sink_batch_documents). Each constructor registers its
// families with a registry, or reuses the ones already registered there, so two workers of a
// process count into the same series. docs/operations.md ("## Watching") lists every metric.
//
// Label values are bounded: streams are Sluice's JetStream streams, sinks and commands the
// constants below, outcomes and statuses likewise.
package instrument

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes of a settled message (the outcome label of sluice_messages_total).
const (
	// OutcomeWritten: a chunk stored (a bundle's chunks count one by one).
	OutcomeWritten = "written"
	// OutcomeApplied: a job event, graph batch or command applied.
	OutcomeApplied = "applied"
	// OutcomeRefused: a command refused by the store (an outcome, acked).
	OutcomeRefused = "refused"
	// OutcomeRequeued: a graph batch published again at the end of its stream.
	OutcomeRequeued = "requeued"
	// OutcomeRetried: a message sent back to the broker with a delay.
	OutcomeRetried = "retried"
	// OutcomeDeadLettered: a message (or a bundle's chunk) dead-lettered and terminated.
	OutcomeDeadLettered = "dead_lettered"
)

// Sink calls (the command label of the sluice_sink_* families).
const (
	// CommandInsertDocs: one group-commit write of chunk documents (Data API insertMany, one
	// SQLite transaction).
	CommandInsertDocs = "insert_docs"
	// CommandApplyGraph: one graph batch of the graph stream applied in one transaction.
	CommandApplyGraph = "apply_graph"
	// CommandApplyCommands: the requirement-store transaction of the commands handed over at
	// once.
	CommandApplyCommands = "apply_commands"
	// CommandProjectGraph: the graph transaction of those commands' projections.
	CommandProjectGraph = "project_graph"
)

// Sink names besides the document sink's own (docstore, astra).
const (
	SinkGraph        = "graph"
	SinkRequirements = "requirements"
)

// Statuses of a sink call (the status label of sluice_sink_write_seconds).
const (
	// StatusOK: every item written.
	StatusOK = "ok"
	// StatusPartial: the call returned, some of its items failed.
	StatusPartial = "partial"
	// StatusError: the call failed as a whole.
	StatusError = "error"
)

// Messages counts messages settled, by stream and outcome, and reports the messages in
// flight. A nil *Messages counts nothing. Safe for concurrent use.
type Messages struct {
	settled  *prometheus.CounterVec
	inFlight *inFlightCollector
}

// NewMessages returns the message families registered with reg, or those already registered
// there; a nil reg keeps them unregistered. It fails only when reg holds a different family of
// the same name.
func NewMessages(reg prometheus.Registerer) (*Messages, error) {
	m := &Messages{
		settled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_messages_total",
			Help: "Messages settled by this process, by stream and outcome (written, applied, refused, requeued, retried, dead_lettered). On SLUICE_CHUNKS, written and dead_lettered count chunks (a bundle's one by one) and retried counts messages.",
		}, []string{"stream", "outcome"}),
		inFlight: &inFlightCollector{
			desc: prometheus.NewDesc("sluice_messages_in_flight",
				"Messages pulled by this process and not yet settled, by stream.", []string{"stream"}, nil),
			funcs: map[string]func() float64{},
		},
	}
	var err error
	if m.settled, err = Register(reg, m.settled); err != nil {
		return nil, err
	}
	if m.inFlight, err = Register(reg, m.inFlight); err != nil {
		return nil, err
	}
	return m, nil
}

// Init creates the series of stream's outcomes at 0, so that they show before the first
// message does (a rate over a series that appears late misses its first increase).
func (m *Messages) Init(stream string, outcomes ...string) {
	if m == nil {
		return
	}
	for _, o := range outcomes {
		m.settled.WithLabelValues(stream, o)
	}
}

// Add counts n messages of stream settled with outcome.
func (m *Messages) Add(stream, outcome string, n int) {
	if m == nil || n <= 0 {
		return
	}
	m.settled.WithLabelValues(stream, outcome).Add(float64(n))
}

// InFlight makes f report stream's messages in flight, read at scrape time (f must be cheap,
// must not block and must be safe for concurrent use). A nil f removes the stream's series.
func (m *Messages) InFlight(stream string, f func() float64) {
	if m == nil {
		return
	}
	m.inFlight.mu.Lock()
	defer m.inFlight.mu.Unlock()
	if f == nil {
		delete(m.inFlight.funcs, stream)
		return
	}
	m.inFlight.funcs[stream] = f
}

// inFlightCollector reports a function's value per stream.
type inFlightCollector struct {
	desc  *prometheus.Desc
	mu    sync.Mutex // guards funcs
	funcs map[string]func() float64
}

func (c *inFlightCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *inFlightCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	streams := make([]string, 0, len(c.funcs))
	for s := range c.funcs {
		streams = append(streams, s)
	}
	sort.Strings(streams)
	funcs := make([]func() float64, len(streams))
	for i, s := range streams {
		funcs[i] = c.funcs[s]
	}
	c.mu.Unlock()
	for i, s := range streams {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, funcs[i](), s)
	}
}

// Sinks measures sink calls by sink, command and status. A nil *Sinks measures nothing. Safe
// for concurrent use.
type Sinks struct {
	seconds   *prometheus.HistogramVec // sink, command, status
	failures  *prometheus.CounterVec   // sink, command
	inFlight  *prometheus.GaugeVec     // sink, command
	batchDocs *prometheus.HistogramVec // sink
}

// NewSinks returns the sink families registered with reg, or those already registered there;
// a nil reg keeps them unregistered. It fails only when reg holds a different family of the
// same name.
func NewSinks(reg prometheus.Registerer) (*Sinks, error) {
	s := &Sinks{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_sink_write_seconds",
			Help:    "Duration of one sink write call, by sink, command (insert_docs, apply_graph, apply_commands, project_graph) and status (ok, partial: some items failed, error: the call failed).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"sink", "command", "status"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_sink_write_failures_total",
			Help: "Sink write calls that failed as a whole, by sink and command.",
		}, []string{"sink", "command"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_sink_writes_in_flight",
			Help: "Sink write calls under way, by sink and command.",
		}, []string{"sink", "command"}),
		batchDocs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_sink_batch_documents",
			Help:    "Documents per document-sink write call (group commit size), by sink.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
		}, []string{"sink"}),
	}
	var err error
	if s.seconds, err = Register(reg, s.seconds); err != nil {
		return nil, err
	}
	if s.failures, err = Register(reg, s.failures); err != nil {
		return nil, err
	}
	if s.inFlight, err = Register(reg, s.inFlight); err != nil {
		return nil, err
	}
	if s.batchDocs, err = Register(reg, s.batchDocs); err != nil {
		return nil, err
	}
	return s, nil
}

// Init creates the counter and gauge series of sink's command at 0.
func (s *Sinks) Init(sink, command string) {
	if s == nil {
		return
	}
	s.failures.WithLabelValues(sink, command)
	s.inFlight.WithLabelValues(sink, command)
}

// Begin counts a call of command on sink as in flight and returns the function that ends it
// with its status, observing its duration. Call the returned function exactly once.
func (s *Sinks) Begin(sink, command string) (end func(status string)) {
	if s == nil {
		return func(string) {}
	}
	g := s.inFlight.WithLabelValues(sink, command)
	g.Inc()
	start := time.Now()
	return func(status string) {
		g.Dec()
		s.seconds.WithLabelValues(sink, command, status).Observe(time.Since(start).Seconds())
		if status == StatusError {
			s.failures.WithLabelValues(sink, command).Inc()
		}
	}
}

// Documents observes the documents of one document-sink write call.
func (s *Sinks) Documents(sink string, n int) {
	if s == nil {
		return
	}
	s.batchDocs.WithLabelValues(sink).Observe(float64(n))
}

// Status is the status of a call that returned err and, per item, errs.
func Status(err error, errs []error) string {
	if err != nil {
		return StatusError
	}
	for _, e := range errs {
		if e != nil {
			return StatusPartial
		}
	}
	return StatusOK
}

// Register registers c with reg and returns it, or returns the equal collector already
// registered there (two workers of a process share one registry); with a nil reg it returns c
// unregistered.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("register metrics: %w", err)
}
