package main

// The ops listener of serve, worker and api (issue 15): /healthz, /readyz and /metrics on an
// address of its own, without a token, so that every process — a worker too, which has no
// API — can be probed and scraped.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/httpapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// opsOff turns the ops listener off (--ops-addr off; an empty value does too, but an empty
// SLUICE_OPS_ADDR is ignored like every empty variable).
const opsOff = "off"

// newRegistry is the process's one metrics registry: Go and process collectors, then every
// sluice_* metric the process's parts register (chunk, sink, breaker, graph pool, HTTP). The
// API's /metrics and the ops listener's serve it.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg)
	return reg
}

// bindOpsPort binds the ops listener before anything opens, like bindAPIPort, so probes answer
// during start-up: /healthz 200, /readyz 503 naming what start-up waits for. It returns nil
// when the listener is off. An address given (flag or SLUICE_OPS_ADDR) that is in use is an
// error naming it; the default address in use (another sluice process on the host) falls
// back to an ephemeral loopback port, with a warning naming it, so that several workers can
// run on one host without each being given an address. The caller closes the listener.
func bindOpsPort(addr string, explicit bool, reg prometheus.Gatherer, log *slog.Logger) (*httpapi.Ops, error) {
	if addr == "" || strings.EqualFold(addr, opsOff) {
		log.Info("ops listener off (--ops-addr off): no /healthz, /readyz or /metrics without a token")
		return nil, nil
	}
	ln, err := httpapi.ListenOps(addr)
	if err != nil && !explicit && errors.Is(err, syscall.EADDRINUSE) {
		if ln, err = httpapi.ListenOps("127.0.0.1:0"); err == nil {
			log.Warn("default ops address in use (another sluice process?); ops listener on an ephemeral loopback port instead: set --ops-addr / SLUICE_OPS_ADDR to choose one",
				"default", addr, "addr", ln.Addr().String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w (set --ops-addr / SLUICE_OPS_ADDR to another address, or off)", err)
	}
	ops, err := httpapi.NewOps(httpapi.OpsConfig{Listener: ln, Gatherer: reg, Logger: log})
	if err != nil {
		return nil, err
	}
	log.Info("ops listener bound: /healthz, /readyz, /metrics", "addr", "http://"+ops.Addr())
	return ops, nil
}

// opsChecks are the ops listener's /readyz checks: the API's (broker, document store, graph
// store, dead-lettering) and, in a process that runs workers, the durable consumers it pulls.
func (d *deps) opsChecks(worker *pipeline.Worker) []httpapi.Check {
	checks := d.readyChecks(worker)
	if worker != nil {
		checks = append(checks, httpapi.Check{Name: "consumers", Check: d.consumersReady})
	}
	return checks
}

// consumersReady returns nil when every durable consumer this process's workers pull from
// exists on the broker: the chunk, job and graph consumers and the command partitions. A
// missing one (deleted by an operator, or not provisioned) is named with its stream.
func (d *deps) consumersReady(ctx context.Context) error {
	if !d.b.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	type named struct {
		stream, name string
		c            jetstream.Consumer
	}
	list := []named{
		{schemas.StreamChunks, sjs.ConsumerChunks, d.b.streams.ChunkConsumer},
		{schemas.StreamJobs, sjs.ConsumerJobs, d.b.streams.JobConsumer},
		{sjs.StreamGraph, sjs.ConsumerGraph, d.b.streams.GraphConsumer},
	}
	for i, c := range d.rq.streams.Consumers {
		list = append(list, named{sjs.StreamCommands, sjs.CommandConsumerName(i), c})
	}
	var missing []string
	for _, n := range list {
		if _, err := n.c.Info(ctx); errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			missing = append(missing, n.name+" (stream "+n.stream+")")
		} else if err != nil {
			return fmt.Errorf("consumer %s (stream %s): %w", n.name, n.stream, err)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing on the broker: %s; create them with sluice provision, or restart this process", strings.Join(missing, ", "))
	}
	return nil
}
