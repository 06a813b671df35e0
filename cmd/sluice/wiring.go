package main

// Wiring: what serve, worker, api and load build from the configuration (config.go) — the
// broker connection, the document, graph and requirements stores, the workers, and the API
// services with the adapters that give the API the pipeline's and stores' errors as its own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/files"
	"github.com/sluice-dev/sluice/sources/httpapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// deps is what serve, worker and api open before they build their workers and API: the
// broker, the document, graph and requirements stores, the dead-letter store, the metrics
// registry and the command key. close releases them in reverse.
type deps struct {
	b    *broker
	sk   *sinks
	dead *dlq.Store
	reg  *prometheus.Registry
	g    graph.Store
	key  *sign.Key
	rq   *requirementsParts
	// closers run in reverse order by close.
	closers []func()
}

// depsOptions says what openDeps builds the requirements parts for.
type depsOptions struct {
	workers, api bool
	drain        time.Duration
	log          *slog.Logger
	startup      startup
	// reg is the process's metrics registry; nil makes one (newRegistry).
	reg *prometheus.Registry
}

// openDeps opens everything a serve process needs, reporting each step to o.startup. On error
// what was opened is closed; else the caller calls close once nothing uses them any more.
func openDeps(ctx context.Context, c config, o depsOptions) (_ *deps, err error) {
	d := &deps{}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	o.startup.step("opening the broker")
	if d.b, err = openBroker(ctx, c, o.log, true); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.b.close)
	o.startup.step("opening the document store")
	if d.sk, err = openSinks(ctx, c, o.log); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.sk.close)
	if d.reg = o.reg; d.reg == nil {
		d.reg = newRegistry()
	}
	if d.sk.client != nil {
		d.reg.MustRegister(astraClientCollectors("documents", d.sk.client)...)
	}
	if d.dead, err = dlq.New(dlq.Config{JS: d.b.js, Stream: d.b.streams.DLQ, Provision: d.b.prov, Logger: o.log, Registerer: d.reg}); err != nil {
		return nil, err
	}
	o.startup.step("opening the graph store")
	if d.g, err = openGraph(ctx, c, d.reg); err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { _ = d.g.Close() })
	if d.key, err = commandKey(c, o.log); err != nil {
		return nil, err
	}
	d.rq, err = startRequirements(ctx, c, requirementsOptions{JS: d.b.js, JobsKV: d.b.streams.JobsKV, Provision: d.b.prov, Graph: d.g,
		Workers: o.workers, API: o.api, Key: d.key, Drain: o.drain, Logger: o.log, Registerer: d.reg, Startup: o.startup})
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, d.rq.close)
	return d, nil
}

// close releases what openDeps opened, last first.
func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// broker is a connection to JetStream with Sluice's streams provisioned, and the embedded
// server behind it when this process runs one.
type broker struct {
	srv     *embedded.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *sjs.Provisioned
	jobs    *jobs.Store
	// remote is true when the broker belongs to another process (NATS_URL, or a running
	// sluice serve on the same data directory).
	remote bool
	// prov is how this process provisions (--provision, --stream-*): the command streams and
	// the advisory stream are provisioned with it too.
	prov sjs.ProvisionConfig
}

// ensureDataDir creates dir (owner-only) when it is missing and checks that this process can
// write in it, so that a data directory owned by another user — a Docker volume created by
// root for an image that runs as uid 65532 — fails at once, naming the path, the user and the
// permission, instead of later as SQLite's "unable to open database file (14)" (issue 15).
func ensureDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return dataDirError(dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return dataDirError(dir, err)
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// dataDirError says why dir cannot be used and what to do about it.
func dataDirError(dir string, err error) error {
	perm := "missing"
	if fi, serr := os.Stat(dir); serr == nil {
		perm = fmt.Sprintf("mode %#o", fi.Mode().Perm())
	} else if fi, serr := os.Stat(filepath.Dir(dir)); serr == nil {
		perm = fmt.Sprintf("missing; %s has mode %#o", filepath.Dir(dir), fi.Mode().Perm())
	}
	return fmt.Errorf("data directory %s (%s) is not writable by this process (uid %d, gid %d): %w; "+
		"give it a directory this user owns: chown the directory or the volume, or set --data-dir / SLUICE_DATA_DIR",
		dir, perm, os.Getuid(), os.Getgid(), err)
}

// openBroker connects (dialBroker) and provisions as --provision says: with off it creates
// nothing and fails naming everything missing; by default it creates only what is missing.
// Conflicting settings are logged (fatal ones fail).
func openBroker(ctx context.Context, c config, log *slog.Logger, allowEmbedded bool) (*broker, error) {
	pc, err := c.Provision.config()
	if err != nil {
		return nil, err
	}
	b, err := dialBroker(ctx, c, log, allowEmbedded)
	if err != nil {
		return nil, err
	}
	b.prov = pc
	if pc.Mode == sjs.ModeOff {
		// Name everything missing at once, the command streams and advisories too.
		if _, err := sjs.ProvisionAll(ctx, b.js, pc); err != nil {
			b.close()
			return nil, err
		}
	}
	if b.streams, err = sjs.Provision(ctx, b.js, pc); err != nil {
		b.close()
		return nil, err
	}
	logReport(log, b.streams.Report)
	b.jobs = jobs.NewStore(b.streams.JobsKV)
	return b, nil
}

// dialBroker connects to NATS_URL, else to the embedded server another sluice process runs on
// the data directory, else starts one in this process (when allowEmbedded). It provisions nothing.
func dialBroker(ctx context.Context, c config, log *slog.Logger, allowEmbedded bool) (*broker, error) {
	if err := refuseExamples(c); err != nil {
		return nil, err
	}
	if err := ensureDataDir(c.DataDir); err != nil {
		return nil, err
	}
	b := &broker{}
	nc := c.NATS
	if nc.URL != "" {
		b.remote = true
	} else {
		// The embedded broker admits only its credential (owner-only in the data directory):
		// whoever can read the data directory may connect, other local users may not.
		ep, err := embedded.Discover(c.DataDir)
		switch {
		case err != nil:
			return nil, fmt.Errorf("connect to the embedded broker on %s: %w", c.DataDir, err)
		case ep.URL != "":
			b.remote = true
		case allowEmbedded:
			srv, err := embedded.Start(embedded.Config{DataDir: c.DataDir, LazySync: c.LazySync, Logger: log})
			if err != nil {
				return nil, fmt.Errorf("start embedded broker: %w", err)
			}
			b.srv = srv
			ep = srv.Endpoint()
		default:
			return nil, errors.New("no broker: set NATS_URL or start sluice serve on this data directory")
		}
		nc.URL, nc.User, nc.Password = ep.URL, ep.User, ep.Password
	}
	nc.Logger = log
	conn, err := sjs.Connect(ctx, nc)
	if err != nil {
		b.close()
		return nil, err
	}
	b.nc = conn
	if b.js, err = jetstream.New(conn); err != nil {
		b.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return b, nil
}

// examplePrefix starts every placeholder of deployments/compose.env.example (and of the
// example tokens file, which the API refuses on its own).
const examplePrefix = "change-me"

// refuseExamples fails when a secret of c is still an example placeholder: a deployment
// started from the example settings unchanged would run with passwords and keys anyone can
// read in this repository. It names the variable, never the value.
func refuseExamples(c config) error {
	var errs []error
	for _, s := range []struct {
		env string
		v   secret.String
	}{
		{"NATS_PASSWORD", c.NATS.Password},
		{"SLUICE_COMMAND_KEY", c.CommandKey},
		{"ASTRA_DB_APPLICATION_TOKEN", c.Astra.Token},
	} {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(string(s.v))), examplePrefix) {
			errs = append(errs, fmt.Errorf("%s is the example placeholder (%s…): set a secret of your own, e.g. openssl rand -base64 32", s.env, examplePrefix))
		}
	}
	return errors.Join(errs...)
}

func (b *broker) close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
	}
}

func (b *broker) ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	_, err := b.js.AccountInfo(ctx)
	return err
}

// commandKey returns the key commands and rollbacks are signed and verified with:
// SLUICE_COMMAND_KEY, else the file SLUICE_COMMAND_KEY_FILE (owner-only), else command.key in
// the data directory, generated on first use. Every API and worker process of one deployment
// must hold the same key; the log line names its fingerprint so they can be compared.
func commandKey(c config, log *slog.Logger) (*sign.Key, error) {
	src, raw := "SLUICE_COMMAND_KEY", string(c.CommandKey)
	if raw == "" {
		var err error
		if c.CommandKeyFile != "" {
			src = c.CommandKeyFile
			raw, err = secret.Read(c.CommandKeyFile)
		} else {
			src = filepath.Join(c.DataDir, sign.KeyFile)
			if err = os.MkdirAll(c.DataDir, 0o700); err == nil {
				raw, err = secret.ReadOrCreate(src)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("command signing key: %w", err)
		}
	}
	k, err := sign.NewKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	log.Info("command signing key", "source", src, "key_id", k.ID())
	return k, nil
}

// openGraph opens the graph store; with reg set, its connection pool's statistics are
// exported (SQLite's writer and reader pools together, or PostgreSQL's pool).
func openGraph(ctx context.Context, c config, reg prometheus.Registerer) (graph.Store, error) {
	dsn := string(c.GraphDSN)
	if dsn == "" {
		dsn = filepath.Join(c.DataDir, "graph.db")
	}
	g, err := graph.Open(ctx, dsn, graph.Options{})
	if err != nil {
		return nil, fmt.Errorf("open graph store: %w", err)
	}
	if pool, ok := g.(interface{ PoolStats() graph.PoolStats }); ok && reg != nil {
		reg.MustRegister(graphPoolCollectors(pool.PoolStats)...)
	}
	return g, nil
}

// graphPoolCollectors are the sluice_graph_pool_* metrics of a pool whose statistics stats
// returns; the acquire waits are counters (monotonic), the connections gauges.
func graphPoolCollectors(stats func() graph.PoolStats) []prometheus.Collector {
	gauge := func(name, help string, f func(graph.PoolStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_graph_pool_" + name, Help: help},
			func() float64 { return f(stats()) })
	}
	counter := func(name, help string, f func(graph.PoolStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sluice_graph_pool_" + name, Help: help},
			func() float64 { return f(stats()) })
	}
	return []prometheus.Collector{
		gauge("conns_open", "Graph store connections open (SQLite: writer and readers together).", func(s graph.PoolStats) float64 { return float64(s.TotalConns) }),
		gauge("conns_idle", "Graph store connections idle.", func(s graph.PoolStats) float64 { return float64(s.IdleConns) }),
		gauge("conns_acquired", "Graph store connections in use.", func(s graph.PoolStats) float64 { return float64(s.AcquiredConns) }),
		gauge("conns_max", "Graph store pool size limit.", func(s graph.PoolStats) float64 { return float64(s.MaxConns) }),
		counter("acquire_wait_seconds_total", "Time spent waiting for a graph store connection.", func(s graph.PoolStats) float64 { return s.EmptyAcquireWaitTime.Seconds() }),
		counter("acquires_waited_total", "Connection acquires that had to wait for a graph store connection.", func(s graph.PoolStats) float64 { return float64(s.EmptyAcquireCount) }),
	}
}

// docSink is the document store chunks go to and are read from.
type docSink interface {
	pipeline.DocSink
	GetDoc(ctx context.Context, collection, id string) (json.RawMessage, error)
}

// sinks is the document store this process writes to: AstraDB when an endpoint is
// configured, else the embedded SQLite store.
type sinks struct {
	docs     docSink
	name     string
	notFound error
	ping     func(context.Context) error
	close    func()
	// client is the Data API client of an AstraDB sink, nil for the embedded store.
	client *dataapi.Client
}

func openSinks(ctx context.Context, c config, log *slog.Logger) (*sinks, error) {
	if c.Astra.Endpoint != "" {
		ac := c.Astra
		ac.Logger = log
		client, err := dataapi.NewClient(ac)
		if err != nil {
			return nil, fmt.Errorf("astra: %w", err)
		}
		sink, err := astra.NewSink(astra.SinkConfig{Client: client, Vector: c.AstraVector, Logger: log})
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("astra: %w", err)
		}
		log.Info("writing chunks to AstraDB", "astra", ac) // Config logs the token redacted
		return &sinks{
			docs: sink, name: "astra", notFound: dataapi.ErrNotFound, close: client.Close, client: client,
			ping: func(ctx context.Context) error { _, err := client.FindCollections(ctx); return err },
		}, nil
	}
	store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(c.DataDir, "documents.db"), Logger: log})
	if err != nil {
		return nil, err
	}
	return &sinks{docs: store, name: "docstore", notFound: docstore.ErrNotFound, ping: store.Ping, close: func() { _ = store.Close() }}, nil
}

// requirementsParts is the requirements side of serve, worker and api: the SQLite requirements
// store in the data directory, the command streams, the command worker (workers) and the API
// services (api).
type requirementsParts struct {
	store   reqStore
	streams *sjs.CommandStreams
	js      jetstream.JetStream
	jobsKV  jetstream.KeyValue
	log     *slog.Logger
	// worker is nil unless workers run in this process.
	worker *commands.Worker
	// client and events are nil unless the API runs in this process.
	client *commands.Client
	events *jobs.EventFeed
}

// requirementsOptions says what startRequirements builds.
type requirementsOptions struct {
	// JS is the broker connection; JobsKV the jobs bucket (job progress goes to the change feed).
	JS     jetstream.JetStream
	JobsKV jetstream.KeyValue
	// Provision is how the command streams are provisioned (broker.prov).
	Provision sjs.ProvisionConfig
	// Graph receives the projection of applied commands and imports. Optional.
	Graph commands.GraphApplier
	// Workers builds the command worker; API builds the API services.
	Workers, API bool
	// Key signs commands (API) and verifies them (workers). Required.
	Key    *sign.Key
	Drain  time.Duration
	Logger *slog.Logger
	// Registerer receives the command worker's metrics. Optional.
	Registerer prometheus.Registerer
	// Startup reports start-up waits (log, /readyz). Optional: the zero value reports nothing.
	Startup startup
}

// startRequirements opens the requirements store (requirements.db in the data directory),
// provisions the command streams, and builds the command worker and the API services. Nothing
// runs until run; the caller must call close after the pool it ran in has returned.
func startRequirements(ctx context.Context, c config, o requirementsOptions) (*requirementsParts, error) {
	streams, err := sjs.ProvisionCommands(ctx, o.JS, o.Provision)
	if err != nil {
		return nil, err
	}
	logReport(o.Logger, streams.Report)
	v, err := requirements.NewValidator()
	if err != nil {
		return nil, err
	}
	var store reqStore
	if c.Astra.Endpoint != "" {
		// With AstraDB configured, requirement versions, feature requests, the audit trail and
		// the apply markers are documents of one collection (the database allows 5 to 10).
		ac := c.Astra
		ac.Logger = o.Logger
		client, cerr := dataapi.NewClient(ac)
		if cerr != nil {
			return nil, fmt.Errorf("astra: %w", cerr)
		}
		var as *reqstore.AstraStore
		cerr = o.Startup.retry(ctx, "AstraDB (requirements store)", func(ctx context.Context) error {
			var err error
			as, err = reqstore.OpenAstra(ctx, reqstore.AstraConfig{Client: client, Validator: v})
			return err
		})
		if cerr != nil {
			client.Close()
			return nil, fmt.Errorf("open requirements store: %w", cerr)
		}
		if o.Registerer != nil {
			o.Registerer.MustRegister(astraClientCollectors("requirements", client)...)
		}
		store = closeBoth{as, client.Close}
	} else {
		sq, cerr := reqstore.OpenSQLite(ctx, reqstore.SQLiteConfig{Path: filepath.Join(c.DataDir, "requirements.db"), Validator: v})
		if cerr != nil {
			return nil, fmt.Errorf("open requirements store: %w", cerr)
		}
		store = sq
	}
	rp := &requirementsParts{store: store, streams: streams, js: o.JS, jobsKV: o.JobsKV, log: o.Logger}
	if o.Workers {
		rp.worker, err = commands.NewWorker(commands.WorkerConfig{
			JS: o.JS, Streams: streams, Store: store, Key: o.Key, Graph: o.Graph, Validator: v, DrainTimeout: o.Drain,
			Registerer: o.Registerer, Logger: o.Logger,
		})
		if err != nil {
			rp.close()
			return nil, err
		}
	}
	if o.API {
		rp.client, err = commands.NewClient(commands.ClientConfig{JS: o.JS, Streams: streams, Store: store, Key: o.Key, Graph: o.Graph, Validator: v})
		if err != nil {
			rp.close()
			return nil, err
		}
		rp.events = jobs.NewEventFeed(o.JS)
	}
	return rp, nil
}

// requirementsService is the API's requirements service, nil (no routes) without the API.
func (rp *requirementsParts) requirementsService() httpapi.RequirementsService {
	if rp.client == nil {
		return nil
	}
	return rp.client
}

// eventSource is the API's change feed, nil (no routes) without the API.
func (rp *requirementsParts) eventSource() httpapi.EventSource {
	if rp.events == nil {
		return nil
	}
	return rp.events
}

// run starts the command worker and the job-progress forwarder in p (workers only).
func (rp *requirementsParts) run(p *pool.ContextPool) {
	if rp.worker == nil {
		return
	}
	p.Go(func(ctx context.Context) error { return rp.worker.Run(ctx) })
	p.Go(func(ctx context.Context) error {
		err := jobs.ForwardJobEvents(ctx, rp.js, rp.jobsKV, func(err error) { rp.log.Warn("job progress to the change feed", "err", err) })
		if err != nil && !errors.Is(err, context.Canceled) {
			rp.log.Warn("job progress is not forwarded to the change feed", "err", err)
		}
		return nil // the change feed is best effort; it never stops the workers
	})
}

// close releases the API client and the store.
func (rp *requirementsParts) close() {
	if rp.client != nil {
		_ = rp.client.Close()
	}
	_ = rp.store.Close()
}

// reqStore is a requirements store this process owns and closes.
type reqStore interface {
	requirements.Store
	Close() error
}

// closeBoth closes the store, then the client it does not own.
type closeBoth struct {
	*reqstore.AstraStore
	closeClient func()
}

func (c closeBoth) Close() error {
	err := c.AstraStore.Close()
	c.closeClient()
	return err
}

// newChunkWorker builds the chunk and graph worker on d's streams and stores.
func (d *deps) newChunkWorker(drain time.Duration, log *slog.Logger) (*pipeline.Worker, error) {
	return pipeline.NewWorker(pipeline.WorkerConfig{
		JS: d.b.js, Streams: d.b.streams, Jobs: d.b.jobs, Sink: d.sk.docs, SinkName: d.sk.name, Graph: d.g, Key: d.key,
		DrainTimeout: drain, Registerer: d.reg, Logger: log,
	})
}

// apiOptions is what newAPIServer needs besides deps.
type apiOptions struct {
	tokens []httpapi.Token
	limits httpapi.Config
	drain  time.Duration
	// worker, when this process runs one, reports its dead-lettering health in /readyz.
	worker *pipeline.Worker
	// broker is the cached broker statistics GET /v1/consumers serves; nil answers 501.
	broker *sjs.BrokerStats
	log    *slog.Logger
}

// newAPIServer builds the HTTP API on d and takes over the port su holds.
func (d *deps) newAPIServer(ctx context.Context, c config, su startup, o apiOptions) (*httpapi.Server, error) {
	// One publish scheduler for every upload of this process (issue 12).
	// AstraDB keeps no previous versions of a document: a rollback asked to restore them
	// is refused at once (400) instead of failing in the workers.
	loader, err := intake.NewLoader(intake.LoaderConfig{JS: d.b.js, Jobs: d.b.jobs, SpoolDir: c.DataDir + "/spool", Key: d.key,
		Batch:              sjs.BatchWriterConfig{Admission: sjs.NewAdmission(sjs.AdmissionConfig{})},
		NoPreviousVersions: c.Astra.Endpoint != ""})
	if err != nil {
		return nil, err
	}
	ln, err := su.api.Handover(ctx)
	if err != nil {
		return nil, err
	}
	l := o.limits
	srv, err := httpapi.New(httpapi.Config{
		Addr: c.HTTPAddr, Listener: ln, Tokens: o.tokens,
		Jobs: jobService{loader: loader, jobs: d.b.jobs, docs: d.sk.docs, collection: chunkCollection,
			restoreSupported: c.Astra.Endpoint == ""},
		Chunks:          chunkReader{sinks: d.sk, collection: chunkCollection},
		DeadLetters:     d.dead,
		Graph:           graphReader{d.g},
		Broker:          httpapi.BrokerStatsReader(o.broker),
		TrustedOrigins:  l.TrustedOrigins,
		Requirements:    d.rq.requirementsService(),
		Events:          d.rq.eventSource(),
		Registry:        d.reg,
		Ready:           d.readyChecks(o.worker),
		ShutdownTimeout: o.drain, Logger: o.log,
		BodyIdleTimeout: l.BodyIdleTimeout, MaxConns: l.MaxConns, MaxSpoolBytes: l.MaxSpoolBytes, RateLimits: l.RateLimits,
		MaxFeedsPerToken: l.MaxFeedsPerToken, GraphTimeout: l.GraphTimeout,
		BrokerConnected: func() bool { return d.b.nc.Status() == nats.CONNECTED },
	})
	if err != nil {
		return nil, err
	}
	if len(o.tokens) == 0 {
		o.log.Warn("no API tokens configured (SLUICE_API_TOKENS_FILE): the API serves loopback only, without authentication", "addr", srv.Addr())
	}
	return srv, nil
}

// readyChecks are the API's /readyz checks; worker may be nil.
func (d *deps) readyChecks(worker *pipeline.Worker) []httpapi.Check {
	return []httpapi.Check{
		{Name: "nats", Check: d.b.ping},
		{Name: "store", Check: d.sk.ping},
		{Name: "graph", Check: d.g.Ping},
		// Messages that could neither be applied nor dead-lettered (kept and retried).
		{Name: "dead-letters", Check: func(context.Context) error {
			var errs []error
			if worker != nil {
				errs = append(errs, worker.Health())
			}
			if d.rq.worker != nil {
				errs = append(errs, d.rq.worker.Health())
			}
			return errors.Join(errs...)
		}},
	}
}

// chunkCollection is the collection template the chunk worker writes (pipeline.WorkerConfig's
// default), read by the API's chunk reads and rollback previews.
const chunkCollection = "ttrpg_chunks_{env}"

// jobService adapts the loader, job store and document store to the API.
type jobService struct {
	loader *intake.Loader
	jobs   *jobs.Store
	// docs previews rollbacks in collection (a template on "{env}"); restoreSupported is
	// false on AstraDB, which keeps no previous versions.
	docs             docSink
	collection       string
	restoreSupported bool
}

// rollbackPreviewer is a document store that can preview a job's rollback (both stores).
type rollbackPreviewer interface {
	PreviewJobRollback(ctx context.Context, collection, job string, restorePrevious bool) (document.JobRollbackPreview, error)
}

// PreviewJobRollback says what rolling job id of env back would do now, from the document
// store the workers write (GET /v1/jobs/{id}/rollback).
func (s jobService) PreviewJobRollback(ctx context.Context, env, id string, restore bool) (document.JobRollbackPreview, bool, error) {
	p, ok := s.docs.(rollbackPreviewer)
	if !ok {
		return document.JobRollbackPreview{}, false, fmt.Errorf("preview rollback of job %s: the document store cannot preview rollbacks", id)
	}
	res, err := p.PreviewJobRollback(ctx, strings.ReplaceAll(s.collection, "{env}", env), id, restore && s.restoreSupported)
	return res, s.restoreSupported, err
}

func (s jobService) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	res, err := s.loader.Load(ctx, intake.LoadRequest{
		Env: req.Env, Body: req.Body, File: req.File, Format: files.Format(req.Format), Force: req.Force,
		IdempotencyKey: req.IdempotencyKey,
	})
	if err != nil {
		if errors.Is(err, intake.ErrBadInput) {
			return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
		}
		if errors.Is(err, intake.ErrBusy) {
			return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBusy, err)
		}
		return httpapi.SubmitResult{}, err
	}
	return httpapi.SubmitResult{
		JobID: res.JobID, Env: res.Env, State: res.State, Total: res.Total, Published: res.Published,
		Rejected: res.Rejected, Rejections: res.Rejections, Existing: res.Existing,
	}, nil
}

func (s jobService) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	j, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrJobNotFound) {
		return j, fmt.Errorf("%w: job %s", httpapi.ErrNotFound, id)
	}
	return j, err
}

func (s jobService) ListJobs(ctx context.Context, f httpapi.JobFilter, cursor string, limit int) ([]jobs.Job, string, error) {
	list, next, err := s.jobs.List(ctx, jobs.Filter{State: f.State, Env: f.Env}, cursor, limit)
	if errors.Is(err, jobs.ErrBadCursor) {
		return nil, "", fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
	}
	return list, next, err
}

func (s jobService) WatchJob(ctx context.Context, id string, fn func(jobs.Job) bool) error {
	return s.jobs.Watch(ctx, id, fn)
}

func (s jobService) RollbackJob(ctx context.Context, id, by string) (jobs.Job, error) {
	return s.RollbackJobWith(ctx, id, by, intake.RollbackOptions{})
}

// RollbackJobWith rolls a job back with options (restore_previous); the API answers 400 for
// intake.ErrRestoreUnsupported.
func (s jobService) RollbackJobWith(ctx context.Context, id, by string, opts intake.RollbackOptions) (jobs.Job, error) {
	job, err := s.loader.RollbackWith(ctx, id, by, opts)
	switch {
	case errors.Is(err, jobs.ErrJobNotFound):
		return job, fmt.Errorf("%w: job %s", httpapi.ErrNotFound, id)
	case errors.Is(err, intake.ErrJobRunning):
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
