package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sourcegraph/conc/pool"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/files"
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

// apiLimitFlags are the API's abuse limits as given (flags, defaulting to their env vars);
// parse checks them. Zero values mean httpapi's defaults.
type apiLimitFlags struct {
	bodyTimeout, graphTimeout *time.Duration
	maxConns, feedsPerToken   *int
	spoolBytes                *int64
	rateLimits                *string
}

func bindAPILimits(fs *pflag.FlagSet) *apiLimitFlags {
	f := &apiLimitFlags{
		bodyTimeout:   fs.Duration("api-body-timeout", 0, "longest wait for a request body's next bytes, before authentication too; 0 means 1m"),
		graphTimeout:  fs.Duration("api-graph-timeout", 0, "deadline of each graph read, 503 past it; 0 means 10s"),
		maxConns:      fs.Int("api-max-conns", 0, "open client connections at most, 503 past it; 0 means 1024"),
		feedsPerToken: fs.Int("api-feeds-per-token", 0, "open change feeds per token at most, 429 past it; 0 means 16"),
		spoolBytes:    fs.Int64("api-spool-bytes", 0, "upload bytes received at once over all uploads, 503 past it; 0 means 4 GiB"),
		rateLimits:    fs.String("api-rate-limits", "", "per-token rates, class=rate[:burst] for uploads, graph, replay, feeds, or class=off; default uploads=2:10,graph=20:40,replay=1:5,feeds=5:20"),
	}
	for flag, env := range map[string]string{
		"api-body-timeout": "SLUICE_API_BODY_TIMEOUT", "api-graph-timeout": "SLUICE_API_GRAPH_TIMEOUT",
		"api-max-conns": "SLUICE_API_MAX_CONNS", "api-feeds-per-token": "SLUICE_API_FEEDS_PER_TOKEN",
		"api-spool-bytes": "SLUICE_API_SPOOL_BYTES", "api-rate-limits": "SLUICE_API_RATE_LIMITS",
	} {
		bindEnv(fs, flag, env)
	}
	return f
}

func (f *apiLimitFlags) parse() (httpapi.Config, error) {
	var errs []error
	for name, d := range map[string]time.Duration{"--api-body-timeout": *f.bodyTimeout, "--api-graph-timeout": *f.graphTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	for name, n := range map[string]int64{"--api-max-conns": int64(*f.maxConns), "--api-feeds-per-token": int64(*f.feedsPerToken), "--api-spool-bytes": *f.spoolBytes} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", name, n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return httpapi.Config{}, err
	}
	rl, err := httpapi.ParseRateLimits(*f.rateLimits)
	if err != nil {
		return httpapi.Config{}, err
	}
	return httpapi.Config{
		BodyIdleTimeout: *f.bodyTimeout, GraphTimeout: *f.graphTimeout, MaxConns: *f.maxConns,
		MaxFeedsPerToken: *f.feedsPerToken, MaxSpoolBytes: *f.spoolBytes, RateLimits: rl,
	}, nil
}

// jobService adapts the loader and job store to the API.
type jobService struct {
	loader *pipeline.Loader
	jobs   *pipeline.JobStore
}

func (s jobService) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	res, err := s.loader.Load(ctx, pipeline.LoadRequest{
		Env: req.Env, Body: req.Body, File: req.File, Format: files.Format(req.Format), Force: req.Force,
		IdempotencyKey: req.IdempotencyKey,
	})
	if err != nil {
		if errors.Is(err, pipeline.ErrBadInput) {
			return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
		}
		if errors.Is(err, pipeline.ErrBusy) {
			return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBusy, err)
		}
		return httpapi.SubmitResult{}, err
	}
	return httpapi.SubmitResult{
		JobID: res.JobID, Env: res.Env, State: res.State, Total: res.Total, Published: res.Published,
		Rejected: res.Rejected, Rejections: res.Rejections, Existing: res.Existing,
	}, nil
}

func (s jobService) GetJob(ctx context.Context, id string) (pipeline.Job, error) {
	j, err := s.jobs.Get(ctx, id)
	if errors.Is(err, pipeline.ErrJobNotFound) {
		return j, fmt.Errorf("%w: job %s", httpapi.ErrNotFound, id)
	}
	return j, err
}

func (s jobService) ListJobs(ctx context.Context, f httpapi.JobFilter, cursor string, limit int) ([]pipeline.Job, string, error) {
	jobs, next, err := s.jobs.List(ctx, pipeline.JobFilter{State: f.State, Env: f.Env}, cursor, limit)
	if errors.Is(err, pipeline.ErrBadCursor) {
		return nil, "", fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
	}
	return jobs, next, err
}

func (s jobService) WatchJob(ctx context.Context, id string, fn func(pipeline.Job) bool) error {
	return s.jobs.Watch(ctx, id, fn)
}

func (s jobService) RollbackJob(ctx context.Context, id, by string) (pipeline.Job, error) {
	return s.RollbackJobWith(ctx, id, by, pipeline.RollbackOptions{})
}

// RollbackJobWith rolls a job back with options (restore_previous); the API answers 400 for
// pipeline.ErrRestoreUnsupported.
func (s jobService) RollbackJobWith(ctx context.Context, id, by string, opts pipeline.RollbackOptions) (pipeline.Job, error) {
	job, err := s.loader.RollbackWith(ctx, id, by, opts)
	switch {
	case errors.Is(err, pipeline.ErrJobNotFound):
		return job, fmt.Errorf("%w: job %s", httpapi.ErrNotFound, id)
	case errors.Is(err, pipeline.ErrJobRunning):
		return job, fmt.Errorf("%w: %w", httpapi.ErrConflict, err)
	}
	return job, err
}

// chunkReader reads chunks from the document store.
type chunkReader struct {
	sinks      *sinks
	collection string
}

func (r chunkReader) GetChunk(ctx context.Context, env, id string) (json.RawMessage, error) {
	doc, err := r.sinks.docs.GetDoc(ctx, strings.ReplaceAll(r.collection, "{env}", env), id)
	if errors.Is(err, r.sinks.notFound) {
		return nil, fmt.Errorf("%w: chunk %s", httpapi.ErrNotFound, id)
	}
	return doc, err
}

// graphReader adapts the graph store to the API.
type graphReader struct{ graph.Store }

func (r graphReader) GetNode(ctx context.Context, env, id string) (graph.Node, error) {
	n, err := r.Store.GetNode(ctx, env, id)
	if errors.Is(err, graph.ErrNotFound) {
		return n, fmt.Errorf("%w: node %s", httpapi.ErrNotFound, id)
	}
	return n, err
}
