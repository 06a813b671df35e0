package commands

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// metrics are the command worker's: commands settled and in flight and the store and graph
// writes (shared with the chunk worker, pipeline/instrument), and commands per store
// transaction.
type metrics struct {
	messages *instrument.Messages
	sinks    *instrument.Sinks
	batch    prometheus.Histogram
}

// newMetrics makes the worker's metrics, registered with reg if not nil, with the series of
// its outcomes and writes at 0 (graph: it projects into the graph).
func newMetrics(reg prometheus.Registerer, graph bool) (*metrics, error) {
	m := &metrics{batch: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sluice_command_batch_commands",
		Help:    "Commands per grouped requirement-store transaction.",
		Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000},
	})}
	var err error
	if m.messages, err = instrument.NewMessages(reg); err != nil {
		return nil, fmt.Errorf("command worker: %w", err)
	}
	if m.sinks, err = instrument.NewSinks(reg); err != nil {
		return nil, fmt.Errorf("command worker: %w", err)
	}
	if m.batch, err = instrument.Register(reg, m.batch); err != nil {
		return nil, fmt.Errorf("command worker: %w", err)
	}
	m.messages.Init(sjs.StreamCommands, instrument.OutcomeApplied, instrument.OutcomeRefused,
		instrument.OutcomeRetried, instrument.OutcomeDeadLettered)
	m.sinks.Init(instrument.SinkRequirements, instrument.CommandApplyCommands)
	if graph {
		m.sinks.Init(instrument.SinkGraph, instrument.CommandProjectGraph)
	}
	return m, nil
}

// measureApply measures the store transactions run: their duration and status, and the
// commands in each.
func (m *metrics) measureApply(run func(context.Context, []requirements.PendingCommand) []requirements.BatchResult) func(context.Context, []requirements.PendingCommand) []requirements.BatchResult {
	return func(ctx context.Context, cmds []requirements.PendingCommand) []requirements.BatchResult {
		m.batch.Observe(float64(len(cmds)))
		end := m.sinks.Begin(instrument.SinkRequirements, instrument.CommandApplyCommands)
		res := run(ctx, cmds)
		end(itemsStatus(res, func(r requirements.BatchResult) error { return r.Err }))
		return res
	}
}

// measureProject measures the graph transactions of projections run.
func (m *metrics) measureProject(run func(context.Context, []graph.MarkedBatch) []graph.BatchResult) func(context.Context, []graph.MarkedBatch) []graph.BatchResult {
	return func(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult {
		end := m.sinks.Begin(instrument.SinkGraph, instrument.CommandProjectGraph)
		res := run(ctx, bs)
		end(itemsStatus(res, func(r graph.BatchResult) error { return r.Err }))
		return res
	}
}

// itemsStatus is the status of a grouped write whose items have their own results: error when
// every item failed, partial when some did.
func itemsStatus[R any](res []R, errOf func(R) error) string {
	failed := 0
	for _, r := range res {
		if errOf(r) != nil {
			failed++
		}
	}
	switch {
	case failed == 0:
		return instrument.StatusOK
	case failed == len(res):
		return instrument.StatusError
	}
	return instrument.StatusPartial
}
