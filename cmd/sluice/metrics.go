package main

// The process-level metrics of serve, worker and api (issue 16): the build, the cached broker
// statistics (streams, consumers, account storage, dead letters stored) and the job states the
// reaper's scan counts. The pipeline's own are registered by its parts; docs/operations.md
// ("## Watching") lists them all.

import (
	"fmt"
	"log/slog"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// registerBuildInfo registers sluice_build_info.
func registerBuildInfo(reg prometheus.Registerer) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_build_info",
		Help: "Always 1; the labels name the build (version, Go version).",
	}, []string{"version", "goversion"})
	g.WithLabelValues(version(), runtime.Version()).Set(1)
	reg.MustRegister(g)
}

// newBrokerStats registers the cached broker statistics (sjs.BrokerStats) with d's registry;
// the caller runs them (Run) until the process stops.
func newBrokerStats(d *deps, log *slog.Logger) (*sjs.BrokerStats, error) {
	stats, err := sjs.NewBrokerStats(sjs.BrokerStatsConfig{JS: d.b.js, Consumers: sjs.StatsConsumers(d.rq.streams.Partitions), Logger: log})
	if err != nil {
		return nil, err
	}
	if err := d.reg.Register(stats); err != nil {
		return nil, fmt.Errorf("register broker statistics: %w", err)
	}
	return stats, nil
}

// jobMetrics are sluice_jobs (absent before the first scan) and sluice_job_stalled_seconds,
// set from the reaper's scans (jobs.ReaperConfig.Census).
type jobMetrics struct {
	byState *prometheus.GaugeVec
	stalled prometheus.Gauge
}

func newJobMetrics(reg prometheus.Registerer) *jobMetrics {
	m := &jobMetrics{
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_jobs",
			Help: "Jobs in the jobs bucket by state, at the last scan (once a minute).",
		}, []string{"state"}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_job_stalled_seconds",
			Help: "Longest time an unfinished job (pending or running) had gone without an update, at the last scan; 0 without one.",
		}),
	}
	reg.MustRegister(m.byState, m.stalled)
	return m
}

// census sets the metrics from one scan.
func (m *jobMetrics) census(c jobs.Census) {
	for _, s := range jobStates() {
		m.byState.WithLabelValues(s).Set(float64(c.ByState[jobs.State(s)]))
	}
	m.stalled.Set(c.Stalled.Seconds())
}

// astraClientCollectors are sluice_astra_requests_in_flight and sluice_astra_requests_max of
// the Data API client c, labelled with what it serves (documents, requirements).
func astraClientCollectors(serves string, c *dataapi.Client) []prometheus.Collector {
	labels := prometheus.Labels{"client": serves}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sluice_astra_requests_in_flight",
			Help:        "Data API requests in flight, by client (documents, requirements); at sluice_astra_requests_max, requests wait for a connection.",
			ConstLabels: labels,
		}, func() float64 { return float64(c.InFlight()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "sluice_astra_requests_max",
			Help:        "The bound on Data API requests in flight (ASTRA connection pool size), by client.",
			ConstLabels: labels,
		}, func() float64 { return float64(c.MaxConns()) }),
	}
}
