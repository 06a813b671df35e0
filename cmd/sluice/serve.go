package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sourcegraph/conc/pool"
	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/httpapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// serveExamples are the examples of serve, worker and api; the docs test runs them.
var serveExamples = map[string]string{
	"serve": `  sluice serve                                   # embedded broker and stores under ./.sluice
  sluice serve --http-addr 0.0.0.0:8080 --tokens-file tokens.json
  NATS_URL=nats://nats:4222 sluice serve         # an external JetStream cluster`,
	"worker": `  sluice worker --nats-url nats://nats:4222      # one more worker on the shared consumers
  sluice worker --drain-timeout 1m
  sluice worker --ops-addr 0.0.0.0:9090          # /healthz, /readyz, /metrics for probes and Prometheus`,
	"api": `  sluice api --http-addr 0.0.0.0:8080 --tokens-file tokens.json`,
}

var serveShort = map[string]string{
	"serve":  "Run the HTTP API and the workers (embedded broker unless NATS_URL)",
	"worker": "Run the workers only",
	"api":    "Run the HTTP API only",
}

// newServeCmd is serve (workers and API), worker or api.
func newServeCmd(cl *cli, name string, workers, api bool) *cobra.Command {
	var (
		c   config
		lim *apiLimitFlags
	)
	cmd := &cobra.Command{
		Use:   name + " [flags]",
		Short: serveShort[name],
		Long: serveShort[name] + `, until SIGINT or SIGTERM; then in-flight work drains (up to
--drain-timeout) and the process exits 0.`,
		Example: serveExamples[name],
		Args:    noArgs(name + " takes no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			limits, err := lim.parse()
			if err != nil {
				return usageError{err.Error()}
			}
			if _, err := c.Provision.config(); err != nil {
				return err // before the API's port is bound
			}
			return cmdServe(cl.ctx, cl.log, c, serveMode{name: name, workers: workers, api: api, drain: c.DrainTimeout, limits: limits,
				opsExplicit: cmd.Flags().Changed("ops-addr")})
		},
	}
	lim = bindServe(cmd.Flags(), &c)
	return cmd
}

// serveMode is what one serve process runs: serve both, worker only the workers, api only the
// HTTP API.
type serveMode struct {
	name         string
	workers, api bool
	drain        time.Duration
	limits       httpapi.Config
	// opsExplicit is true when --ops-addr or SLUICE_OPS_ADDR was given: that address in use
	// is an error, where the default in use falls back to an ephemeral port (bindOpsPort).
	opsExplicit bool
}

// cmdServe runs the workers, the HTTP API, or both, until ctx ends (SIGINT/SIGTERM), then
// drains and exits.
func cmdServe(ctx context.Context, log *slog.Logger, c config, m serveMode) error {
	// The whole configuration at debug: its secrets are secret.Strings, logged redacted.
	log.Debug("configuration", "config", c)
	if c.NATS.URL == "" && m.name == "serve" {
		if ep, _ := embedded.Discover(c.DataDir); ep.URL != "" {
			return fmt.Errorf("another sluice process already runs the embedded broker on %s (%s)", c.DataDir, ep.URL)
		}
	}
	// One registry for the process: the API's /metrics and the ops listener serve it.
	reg := newRegistry()
	su, tokens, err := bindAPIPort(c, m, log)
	if err != nil {
		return err
	}
	if su.api != nil {
		defer su.api.Close() // a start-up that fails; nothing after the handover
	}
	// The ops listener after the API's port: its fallback to an ephemeral port must not take
	// the port the API was given (it did, in a test that had picked a free port for the API).
	ops, err := bindOpsPort(c.OpsAddr, m.opsExplicit, reg, log)
	if err != nil {
		return err
	}
	if ops != nil {
		// Closed last, after the drain and the stores: probes answer until the process ends.
		defer func() {
			if err := ops.Close(); err != nil {
				log.Warn("ops listener", "err", err)
			}
		}()
	}
	su.ops = ops
	// Stopped (SIGINT/SIGTERM) while starting: whatever the start-up's error, nothing ran and
	// nothing is left to drain, so the process exits 0 as after a drain.
	startErr := func(err error) error {
		if ctx.Err() != nil {
			log.Info("sluice stopped during start-up", "mode", m.name, "err", err)
			return nil
		}
		return err
	}
	d, err := openDeps(ctx, c, depsOptions{workers: m.workers, api: m.api, drain: m.drain, log: log, startup: su, reg: reg})
	if err != nil {
		return startErr(err)
	}
	defer d.close()
	var worker *pipeline.Worker
	if m.workers {
		if worker, err = d.newChunkWorker(m.drain, log); err != nil {
			return startErr(err)
		}
	}
	// Read by /metrics and by the API's GET /v1/consumers.
	stats, err := newBrokerStats(d, log)
	if err != nil {
		return startErr(err)
	}
	var srv *httpapi.Server
	if m.api {
		if srv, err = d.newAPIServer(ctx, c, su, apiOptions{tokens: tokens, limits: m.limits, drain: m.drain, worker: worker, broker: stats, log: log}); err != nil {
			return startErr(err)
		}
	}
	p := pool.New().WithContext(ctx).WithCancelOnError()
	p.Go(stats.Run)
	d.rq.run(p)
	if worker != nil {
		runWorkers(p, d, worker, log)
	}
	if srv != nil {
		stop := runAPI(p, d, srv, c.TokensFile, log)
		defer stop()
	}
	if ops != nil {
		ops.Ready(d.opsChecks(worker))
		// The pool's context ends on SIGINT/SIGTERM or on a part's failure: /readyz says the
		// process drains from then on, while /healthz and /metrics answer to the end.
		p.Go(func(ctx context.Context) error {
			<-ctx.Done()
			ops.Draining(fmt.Sprintf("draining: in-flight work finishing (up to %s)", m.drain))
			return nil
		})
	}
	log.Info("sluice running", "mode", m.name, "data_dir", c.DataDir, "embedded_broker", d.b.srv != nil)
	err = p.Wait()
	log.Info("sluice stopped", "mode", m.name)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// bindAPIPort binds the API's port before anything opens (api only): a port in use fails at
// once, and while the broker and stores open (AstraDB may answer 503 for a while) a starting
// server answers /healthz and says in /readyz what start-up waits for. The same listener then
// goes to the API, with no gap. The caller closes su.api when start-up fails.
func bindAPIPort(c config, m serveMode, log *slog.Logger) (su startup, tokens []httpapi.Token, err error) {
	su = startup{log: log}
	if !m.api {
		return su, nil, nil
	}
	if c.TokensFile != "" {
		if tokens, err = httpapi.LoadTokens(c.TokensFile); err != nil {
			return su, nil, err
		}
	}
	ln, err := httpapi.Listen(c.HTTPAddr, len(tokens) > 0)
	if err != nil {
		return su, nil, err
	}
	if su.api, err = httpapi.NewStarting(httpapi.StartingConfig{Listener: ln, MaxConns: m.limits.MaxConns, Logger: log}); err != nil {
		ln.Close()
		return su, nil, err
	}
	log.Info("HTTP API port bound; answering 503 until start-up ends", "addr", "http://"+su.api.Addr())
	return su, tokens, nil
}

// runWorkers starts the chunk worker and its companions in p.
func runWorkers(p *pool.ContextPool, d *deps, worker *pipeline.Worker, log *slog.Logger) {
	p.Go(func(ctx context.Context) error { return worker.Run(ctx) })
	p.Go(func(ctx context.Context) error {
		return sjs.RunReclaimer(ctx, d.b.js, d.b.streams.Chunks, sjs.ConsumerChunks, 30*time.Second,
			func(err error) { log.Warn("reclaim chunk stream", "err", err) })
	})
	// Graph batches' apply markers are needed only while their message can come back.
	p.Go(func(ctx context.Context) error {
		return graph.RunMarkerPruner(ctx, d.g, sjs.StreamGraph+":", 0, 0,
			func(err error) { log.Warn("prune graph apply markers", "err", err) })
	})
	// Jobs left open by a publisher that vanished (an API process killed mid-upload) are
	// failed after 10 minutes without an update, so none stays pending for ever.
	p.Go(func(ctx context.Context) error {
		return jobs.RunJobReaper(ctx, d.b.jobs, jobs.ReaperConfig{Census: newJobMetrics(d.reg).census},
			func(err error) { log.Warn("reap abandoned jobs", "err", err) })
	})
	// Messages that exhaust their deliveries without reaching the worker's own
	// dead-lettering (a worker crashing on them) are captured from the server's advisories
	// and counted against their job.
	p.Go(func(ctx context.Context) error {
		return d.dead.CaptureAdvisories(ctx, func(ctx context.Context, cp dlq.CaptureParams) error {
			env := cp.Envelope
			if env.JobID == "" || env.Item == nil {
				return nil
			}
			_, err := d.b.jobs.Mark(ctx, env.JobID, jobs.Mark{Job: env.JobID, Item: int64(*env.Item), Outcome: jobs.DeadLettered})
			return err
		})
	})
}

// runAPI starts the HTTP API, its job cache and (with a tokens file) the token reload in p.
// The caller calls stop once p has returned.
func runAPI(p *pool.ContextPool, d *deps, srv *httpapi.Server, tokensFile string, log *slog.Logger) (stop func()) {
	// Job reads (GET /v1/jobs/{id}, what pollers call most) are served from memory, kept
	// current by a watch on the jobs bucket (issue 12).
	p.Go(func(ctx context.Context) error {
		return d.b.jobs.RunCache(ctx, jobs.CacheConfig{},
			func(err error) {
				log.Warn("job cache: watch failed; reading jobs from the broker until it restarts", "err", err)
			})
	})
	p.Go(srv.Run)
	if tokensFile == "" {
		return func() {}
	}
	// SIGHUP reloads the tokens file at once.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	p.Go(func(ctx context.Context) error { return srv.WatchTokens(ctx, tokensFile, hup) })
	return func() { signal.Stop(hup) }
}
