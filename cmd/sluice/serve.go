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

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sourcegraph/conc/pool"
	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
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
  sluice worker --drain-timeout 1m`,
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
		c     config
		drain time.Duration
		lim   *apiLimitFlags
	)
	cmd := &cobra.Command{
		Use:   name + " [flags]",
		Short: serveShort[name],
		Long: serveShort[name] + `, until SIGINT or SIGTERM; then in-flight work drains (up to
--drain-timeout) and the process exits 0.`,
		Example: serveExamples[name],
		Args:    noArgs(name + " takes no arguments"),
		RunE: func(*cobra.Command, []string) error {
			limits, err := lim.parse()
			if err != nil {
				return usageError{err.Error()}
			}
			return cmdServe(cl.ctx, cl.log, name, c, drain, limits, workers, api)
		},
	}
	fs := cmd.Flags()
	bindCommon(fs, &c)
	fs.StringVar(&c.HTTPAddr, "http-addr", "127.0.0.1:8080", "HTTP API address")
	bindEnv(fs, "http-addr", "SLUICE_HTTP_ADDR")
	fs.StringVar(&c.TokensFile, "tokens-file", "", "JSON list of API tokens; without it the API serves loopback only")
	bindEnv(fs, "tokens-file", "SLUICE_API_TOKENS_FILE")
	fs.DurationVar(&drain, "drain-timeout", 30*time.Second, "how long in-flight work may take to finish on shutdown")
	bindEnv(fs, "drain-timeout", "SLUICE_DRAIN_TIMEOUT")
	lim = bindAPILimits(fs)
	return cmd
}

// cmdServe runs the workers, the HTTP API, or both, until ctx ends (SIGINT/SIGTERM), then
// drains and exits.
func cmdServe(ctx context.Context, log *slog.Logger, name string, c config, drainTimeout time.Duration, limits httpapi.Config, workers, api bool) error {
	drain := &drainTimeout
	var err error
	if c.NATS.URL == "" && name == "serve" {
		if ep, _ := embedded.Discover(c.DataDir); ep.URL != "" {
			return fmt.Errorf("another sluice process already runs the embedded broker on %s (%s)", c.DataDir, ep.URL)
		}
	}
	// The API's port is bound before anything opens: a port in use fails at once, and while the
	// broker and stores open (AstraDB may answer 503 for a while) a starting server answers
	// /healthz and says in /readyz what start-up waits for. The same listener then goes to the
	// API, with no gap.
	su := startup{log: log}
	var tokens []httpapi.Token
	if api {
		if c.TokensFile != "" {
			if tokens, err = httpapi.LoadTokens(c.TokensFile); err != nil {
				return err
			}
		}
		ln, err := httpapi.Listen(c.HTTPAddr, len(tokens) > 0)
		if err != nil {
			return err
		}
		if su.api, err = httpapi.NewStarting(httpapi.StartingConfig{Listener: ln, MaxConns: limits.MaxConns, Logger: log}); err != nil {
			ln.Close()
			return err
		}
		defer su.api.Close() // a start-up that fails; nothing after the handover
		log.Info("HTTP API port bound; answering 503 until start-up ends", "addr", "http://"+su.api.Addr())
	}
	su.step("opening the broker")
	b, err := openBroker(ctx, c, log, true)
	if err != nil {
		return err
	}
	defer b.close()
	su.step("opening the document store")
	sk, err := openSinks(ctx, c, log)
	if err != nil {
		return err
	}
	defer sk.close()
	dead, err := dlq.New(dlq.Config{JS: b.js, Stream: b.streams.DLQ, Logger: log})
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	su.step("opening the graph store")
	g, err := openGraph(ctx, c, reg)
	if err != nil {
		return err
	}
	defer g.Close()
	key, err := commandKey(c, log)
	if err != nil {
		return err
	}
	rq, err := startRequirements(ctx, c, requirementsOptions{JS: b.js, JobsKV: b.streams.JobsKV, Graph: g, Workers: workers, API: api, Key: key, Drain: *drain, Logger: log, Startup: su})
	if err != nil {
		return err
	}
	defer rq.close()
	var worker *pipeline.Worker
	if workers {
		worker, err = pipeline.NewWorker(pipeline.WorkerConfig{
			JS: b.js, Streams: b.streams, Jobs: b.jobs, Sink: sk.docs, SinkName: sk.name, Graph: g, Key: key, DrainTimeout: *drain, Registerer: reg, Logger: log,
		})
		if err != nil {
			return err
		}
	}
	var srv *httpapi.Server
	if api {
		// One publish scheduler for every upload of this process (issue 12).
		// AstraDB keeps no previous versions of a document: a rollback asked to restore them
		// is refused at once (400) instead of failing in the workers.
		loader, err := pipeline.NewLoader(pipeline.LoaderConfig{JS: b.js, Jobs: b.jobs, SpoolDir: c.DataDir + "/spool", Key: key,
			Batch:              sjs.BatchWriterConfig{Admission: sjs.NewAdmission(sjs.AdmissionConfig{})},
			NoPreviousVersions: c.Astra.Endpoint != ""})
		if err != nil {
			return err
		}
		ln, err := su.api.Handover(ctx)
		if err != nil {
			return err
		}
		srv, err = httpapi.New(httpapi.Config{
			Addr:         c.HTTPAddr,
			Listener:     ln,
			Tokens:       tokens,
			Jobs:         jobService{loader: loader, jobs: b.jobs},
			Chunks:       chunkReader{sinks: sk, collection: "ttrpg_chunks_{env}"},
			DeadLetters:  dead,
			Graph:        graphReader{g},
			Requirements: rq.requirementsService(),
			Events:       rq.eventSource(),
			Registry:     reg,
			Ready: []httpapi.Check{
				{Name: "nats", Check: b.ping},
				{Name: "store", Check: sk.ping},
				{Name: "graph", Check: g.Ping},
				// Messages that could neither be applied nor dead-lettered (kept and retried).
				{Name: "dead-letters", Check: func(context.Context) error {
					var errs []error
					if worker != nil {
						errs = append(errs, worker.Health())
					}
					if rq.worker != nil {
						errs = append(errs, rq.worker.Health())
					}
					return errors.Join(errs...)
				}},
			},
			ShutdownTimeout:  *drain,
			Logger:           log,
			BodyIdleTimeout:  limits.BodyIdleTimeout,
			MaxConns:         limits.MaxConns,
			MaxSpoolBytes:    limits.MaxSpoolBytes,
			RateLimits:       limits.RateLimits,
			MaxFeedsPerToken: limits.MaxFeedsPerToken,
			GraphTimeout:     limits.GraphTimeout,
			BrokerConnected:  func() bool { return b.nc.Status() == nats.CONNECTED },
		})
		if err != nil {
			return err
		}
		if len(tokens) == 0 {
			log.Warn("no API tokens configured (SLUICE_API_TOKENS_FILE): the API serves loopback only, without authentication", "addr", srv.Addr())
		}
		log.Info("HTTP API listening", "addr", "http://"+srv.Addr())
	}
	p := pool.New().WithContext(ctx).WithCancelOnError()
	rq.run(p)
	if worker != nil {
		p.Go(func(ctx context.Context) error { return worker.Run(ctx) })
		p.Go(func(ctx context.Context) error {
			return sjs.RunReclaimer(ctx, b.js, b.streams.Chunks, sjs.ConsumerChunks, 30*time.Second,
				func(err error) { log.Warn("reclaim chunk stream", "err", err) })
		})
		// Graph batches' apply markers are needed only while their message can come back.
		p.Go(func(ctx context.Context) error {
			return graph.RunMarkerPruner(ctx, g, sjs.StreamGraph+":", 0, 0,
				func(err error) { log.Warn("prune graph apply markers", "err", err) })
		})
		// Jobs left open by a publisher that vanished (an API process killed mid-upload) are
		// failed after 10 minutes without an update, so none stays pending for ever.
		p.Go(func(ctx context.Context) error {
			return pipeline.RunJobReaper(ctx, b.jobs, pipeline.ReaperConfig{},
				func(err error) { log.Warn("reap abandoned jobs", "err", err) })
		})
		// Messages that exhaust their deliveries without reaching the worker's own
		// dead-lettering (a worker crashing on them) are captured from the server's advisories
		// and counted against their job.
		p.Go(func(ctx context.Context) error {
			return dead.CaptureAdvisories(ctx, func(ctx context.Context, cp dlq.CaptureParams) error {
				env := cp.Envelope
				if env.JobID == "" || env.Item == nil {
					return nil
				}
				_, err := b.jobs.Mark(ctx, env.JobID, pipeline.Mark{Job: env.JobID, Item: int64(*env.Item), Outcome: pipeline.DeadLettered})
				return err
			})
		})
	}
	if srv != nil {
		// Job reads (GET /v1/jobs/{id}, what pollers call most) are served from memory, kept
		// current by a watch on the jobs bucket (issue 12).
		p.Go(func(ctx context.Context) error {
			return b.jobs.RunCache(ctx, pipeline.JobCacheConfig{},
				func(err error) {
					log.Warn("job cache: watch failed; reading jobs from the broker until it restarts", "err", err)
				})
		})
		p.Go(srv.Run)
		if c.TokensFile != "" {
			// SIGHUP reloads the tokens file at once.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			p.Go(func(ctx context.Context) error { return srv.WatchTokens(ctx, c.TokensFile, hup) })
		}
	}
	log.Info("sluice running", "mode", name, "data_dir", c.DataDir, "embedded_broker", b.srv != nil)
	err = p.Wait()
	log.Info("sluice stopped", "mode", name)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
