package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// JS is the JetStream context. Required.
	JS jetstream.JetStream
	// Streams is what sources/jetstream.Provision returned. Required.
	Streams *sjs.Provisioned
	// Jobs is the job store the worker records progress and job events in. Optional: default
	// a store over Streams.JobsKV. In a process that also serves the API, pass the API's store,
	// so that both share its cache (jobs.Store.RunCache) and a progress write reads its record
	// from memory.
	Jobs *jobs.Store
	// Sink is the document store chunks go to. Required.
	Sink DocSink
	// Graph is the graph store graph batches go to. Optional: without it the worker does not
	// consume graph batches.
	Graph GraphStore
	// Key verifies the signature of job rollback events: a rollback deletes documents, so only
	// one the API signed (its requester set from the caller's token) is carried out; any other
	// is dead-lettered with class auth. Optional: nil refuses every rollback the same way.
	Key *sign.Key
	// SinkName names the sink in dead letters and metrics ("docstore", "astra").
	SinkName string
	// Collection is the collection name template; "{env}" is replaced by the message's env.
	// Default "ttrpg_chunks_{env}", as the Python system.
	Collection string
	// Document configures document building (split rule, limits); Env is set per message.
	Document document.Config
	// MaxInFlight bounds chunk messages pulled and not yet settled. Default enough for every
	// handler to hold a full batch and the next two to gather: (Handlers+2) × Batch.MaxBatch
	// (4,200 for Astra's pool of 20, 2,200 otherwise). Fewer starve the writers: the next
	// batch can only be pulled once a whole write has been acked.
	MaxInFlight int
	// MaxInFlightChunks bounds the chunks in the chunk messages pulled and not yet settled: a
	// bundle counts its Sluice-Items (chunkWeight), a single chunk one. Default 4 ×
	// (Handlers+2) × Batch.MaxBatch (8,800 on the embedded store, 16,800 on Astra): handler
	// batches are weighed in chunks, so that is a full batch for every handler and enough
	// gathered to cover a pull's round trip. With (Handlers+2) × Batch.MaxBatch chunks — two
	// batches gathering — the handlers waited for bundles ≈15% of a backlog drain from a
	// broker in another process on a busy machine; at 4× they never did, for ≈3 MiB more.
	// With MaxInFlight alone, 2,200 bundles of 100 chunks — 220,000 chunks — were held at
	// once (a 1,000,000-chunk backlog drain peaked at 213 MiB with the broker in process,
	// 139 MiB as a client). A message's chunks are known only once it has arrived: with
	// bundles of one size the bound holds exactly, with mixed sizes one pull may bring more
	// than estimated (sjs.SubscriberConfig.MaxInFlightWeight gives the worst case), and a
	// bundle larger than the bound is still handled, alone.
	MaxInFlightChunks int
	// MaxInFlightBytes bounds the bytes of the chunk messages pulled and not yet settled, so
	// that large chunks (up to 1 MiB each) cannot multiply memory by MaxInFlight. Default
	// 128 MiB: MaxInFlight of typical chunks (a few to 30 KiB, embeddings included).
	MaxInFlightBytes int64
	// Batch configures the batcher that runs the document writes (Sink is set from Sink).
	// Chunk messages are handled in batches of its MaxBatch messages.
	Batch BatcherConfig
	// Linger is how long a partial batch of chunk messages waits for more before it is
	// handled. Default 5 ms; under load batches fill long before it runs out.
	Linger time.Duration
	// Handlers is how many chunk batches are handled at once. Default twice the batcher's
	// write concurrency, so batches are built and their progress recorded while others write.
	Handlers int
	// Retry is the broker-level retry policy for transient failures.
	Retry settle.RetryPolicy
	// Breaker configures the circuit breaker in front of the document sink, used when the
	// sink implements Pinger (both built-in sinks do): a write in which every document
	// failed transiently holds the messages while the sink is probed, instead of spending
	// their deliveries (see breaker).
	Breaker BreakerConfig
	// DrainTimeout bounds a graceful stop: in-flight messages get this long to finish.
	// Default 30 s.
	DrainTimeout time.Duration
	// Registerer receives the worker's metrics. Optional.
	Registerer prometheus.Registerer
	// Logger, nil discards.
	Logger *slog.Logger
}

// Worker drains the chunk and job consumers into the sinks: a Watermill router with one
// handler per consumer, a group-commit batcher in front of the document sink, and a batched
// job-progress recorder. Every message is acked only after its write (and its progress) is
// durable; transient failures go back to the broker with a delay; permanent ones are
// dead-lettered and terminated.
type Worker struct {
	cfg       WorkerConfig
	log       *slog.Logger
	jobs      *jobs.Store
	progress  *jobs.Progress
	batcher   *Batcher
	dlq       *dlq.Sender
	validator *schemas.Validator
	metrics   *workerMetrics
	// breakerMetrics is nil when the sink has no circuit breaker; breaker is made by Run.
	// The graph store has its own (graphBreaker*).
	breakerMetrics, graphBreakerMetrics *breakerMetrics
	breaker, graphBreaker               *breaker
	settler                             *settle.Settler // retries, dead letters

	bundles     bundleMemory                 // settled items of bundles being retried
	builders    map[string]*document.Builder // one per env, built in NewWorker, read-only after
	collections map[string]string            // collection per env, likewise
}

// validate reports what cfg lacks.
func (cfg *WorkerConfig) validate() error {
	var errs []error
	if cfg.JS == nil {
		errs = append(errs, errors.New("worker: JS is required"))
	}
	if cfg.Streams == nil {
		errs = append(errs, errors.New("worker: Streams is required"))
	}
	if cfg.Sink == nil {
		errs = append(errs, errors.New("worker: Sink is required"))
	}
	return errors.Join(errs...)
}

// setDefaults fills in the zero fields of a valid cfg.
func (cfg *WorkerConfig) setDefaults() {
	if cfg.Collection == "" {
		cfg.Collection = "ttrpg_chunks_{env}"
	}
	if cfg.SinkName == "" {
		cfg.SinkName = "docstore"
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.MaxInFlightBytes <= 0 {
		cfg.MaxInFlightBytes = 128 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Jobs == nil {
		cfg.Jobs = jobs.NewStore(cfg.Streams.JobsKV)
	}
}

// envTargets returns, per env, the document builder and the collection of cfg.
func envTargets(cfg WorkerConfig) (map[string]*document.Builder, map[string]string, error) {
	builders := map[string]*document.Builder{}
	collections := map[string]string{}
	for _, env := range []string{schemas.Dev, schemas.Test, schemas.Prod} {
		collections[env] = strings.ReplaceAll(cfg.Collection, "{env}", env)
		c := cfg.Document
		c.Env = env
		b, err := document.NewBuilder(c)
		if err != nil {
			return nil, nil, fmt.Errorf("worker: document config: %w", err)
		}
		builders[env] = b
	}
	return builders, collections, nil
}

// NewWorker checks cfg and returns a Worker; nothing runs until Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	builders, collections, err := envTargets(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	v, err := schemas.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	maxDeliver := uint64(10)
	if ci := cfg.Streams.ChunkConsumer.CachedInfo(); ci != nil && ci.Config.MaxDeliver > 0 {
		maxDeliver = uint64(ci.Config.MaxDeliver)
	}
	dl := dlq.NewSender(cfg.JS)
	metrics, err := newWorkerMetrics(cfg.Registerer, func() float64 { return float64(dl.Unresolved()) })
	if err != nil {
		return nil, err
	}
	metrics.initSeries(cfg.SinkName, cfg.Graph != nil)
	w := &Worker{
		cfg:         cfg,
		log:         log,
		jobs:        cfg.Jobs,
		dlq:         dl,
		validator:   v,
		metrics:     metrics,
		builders:    builders,
		collections: collections,
	}
	dl.Failures = w.metrics.dlqFails.Inc
	if _, ok := cfg.Sink.(Pinger); ok && !cfg.Breaker.Disabled {
		w.breakerMetrics = newBreakerMetrics(cfg.SinkName, cfg.Registerer)
	}
	if _, ok := cfg.Graph.(Pinger); ok && !cfg.Breaker.Disabled {
		w.graphBreakerMetrics = newBreakerMetrics("graph", cfg.Registerer)
	}
	w.settler = &settle.Settler{
		DLQ: w.dlq, Retry: cfg.Retry, MaxDeliver: maxDeliver, Log: log, Kind: "message",
		// A dead-lettered item of a job counts towards it, so the job can complete.
		OnDead: func(ctx context.Context, env schemas.DeadLetterEnvelope) error {
			if env.JobID == "" || env.Item == nil || !schemas.ValidKey(env.JobID) {
				return nil
			}
			return w.progress.Record(ctx, jobs.Mark{Job: env.JobID, Item: int64(*env.Item), Outcome: jobs.DeadLettered})
		},
		Retried: func(stream string) { w.metrics.messages.Add(stream, instrument.OutcomeRetried, 1) },
		Dead:    func(stream string) { w.metrics.messages.Add(stream, instrument.OutcomeDeadLettered, 1) },
	}
	return w, nil
}

// Health returns nil, or an error saying that messages could neither be applied nor
// dead-lettered in the last 10 minutes (the dead-letter publish failed: DLQ stream full or
// unavailable, payload bucket missing). Such messages are kept in their streams and retried,
// never dropped; the error clears when each is applied or dead-lettered, or 10 minutes after
// its last failure. It does no I/O and is safe for concurrent use (a /readyz check).
func (w *Worker) Health() error { return w.dlq.Health() }

// Jobs returns the worker's job store.
func (w *Worker) Jobs() *jobs.Store { return w.jobs }

// Run processes messages until ctx ends, then drains: it stops pulling, lets in-flight
// messages finish (up to DrainTimeout), flushes the batcher and the progress recorder, and
// returns. It returns nil after a clean drain.
func (w *Worker) Run(ctx context.Context) error {
	batchCfg := w.cfg.Batch
	batchCfg.Sink = instrumentedSink{w.cfg.Sink, w.cfg.SinkName, w.metrics}
	if wc, ok := w.cfg.Sink.(WriteConcurrencer); ok && batchCfg.Concurrency <= 0 {
		batchCfg.Concurrency = wc.WriteConcurrency()
	}
	b, err := NewBatcher(batchCfg)
	if err != nil {
		return err
	}
	w.batcher = b
	if w.breakerMetrics != nil {
		w.breaker = newBreaker(w.cfg.Breaker, w.cfg.SinkName, w.cfg.Sink.(Pinger).Ping, w.log, w.breakerMetrics)
	}
	if w.graphBreakerMetrics != nil {
		w.graphBreaker = newBreaker(w.cfg.Breaker, "graph", w.cfg.Graph.(Pinger).Ping, w.log, w.graphBreakerMetrics)
	}
	p, err := jobs.NewProgress(jobs.ProgressConfig{Store: w.jobs, Conn: w.cfg.JS.Conn()})
	if err != nil {
		_ = b.Close()
		return err
	}
	w.progress = p

	subs, err := w.subscribe(b)
	if err != nil {
		_ = b.Close()
		_ = p.Close()
		return err
	}
	defer w.watchDrain(ctx, b)()
	// Chunks are handled in batches, beside the router (docs/architecture.md, "Chunks in
	// batches"); job events and graph batches go through it one at a time.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	// The probers stop with ctx: held messages then go back to the broker, and the drain does
	// not wait for a store that is down.
	for _, br := range []*breaker{w.breaker, w.graphBreaker} {
		if br == nil {
			continue
		}
		probed := make(chan struct{})
		defer func() { stop(); <-probed }()
		go func() { defer close(probed); br.run(ctx) }()
	}
	chunksDone := make(chan error, 1)
	go func() {
		chunksDone <- subs.chunks.ConsumeBatches(ctx, sjs.BatchConfig{
			MaxBatch: b.cfg.MaxBatch, Linger: w.cfg.Linger, Workers: subs.handlers,
			Weight: func(d *sjs.Delivery) int { return chunkWeight(d.Msg()) },
		}, w.handleChunks)
		stop() // it returns early only on failure: stop the router too
	}()
	runErr := subs.router.Run(ctx)
	stop() // the router may stop on its own (an error): stop the chunks too
	// The router closed its subscribers, which waited for in-flight handlers.
	chunkErr := <-chunksDone
	cerr := errors.Join(chunkErr, subs.jobs.Close())
	if subs.graph != nil {
		cerr = errors.Join(cerr, subs.graph.Close())
	}
	_ = b.Close()
	_ = p.Close()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("worker: router: %w", runErr)
	}
	return cerr
}

// subscriptions are a running worker's subscribers: chunks in batches beside the router, job
// events and graph batches through it.
type subscriptions struct {
	handlers            int             // chunk batches handled at once
	chunks, jobs, graph *sjs.Subscriber // graph is nil without a graph store
	router              *message.Router
}

// subscribe makes the worker's subscribers, sized from b, and the router that runs the job
// event and graph handlers.
func (w *Worker) subscribe(b *Batcher) (subscriptions, error) {
	var subs subscriptions
	handlers := w.cfg.Handlers
	if handlers <= 0 {
		handlers = 2 * b.cfg.Concurrency
	}
	subs.handlers = handlers
	inFlight := w.cfg.MaxInFlight
	if inFlight <= 0 {
		inFlight = (handlers + 2) * b.cfg.MaxBatch
	}
	inFlightChunks := w.cfg.MaxInFlightChunks
	if inFlightChunks <= 0 {
		inFlightChunks = 4 * (handlers + 2) * b.cfg.MaxBatch
	}
	chunks, err := sjs.NewSubscriber(sjs.SubscriberConfig{
		Consumer: w.cfg.Streams.ChunkConsumer, MaxInFlight: inFlight, MaxInFlightBytes: w.cfg.MaxInFlightBytes,
		MaxInFlightWeight: int64(inFlightChunks), Weight: chunkWeight,
		DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
	})
	if err != nil {
		return subs, err
	}
	jobs, err := sjs.NewSubscriber(sjs.SubscriberConfig{
		Consumer: w.cfg.Streams.JobConsumer, MaxInFlight: 64,
		DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
	})
	if err != nil {
		return subs, err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: w.cfg.DrainTimeout},
		settle.RouterLogger(w.log))
	if err != nil {
		return subs, err
	}
	router.AddConsumerHandler("jobs", sjs.ConsumerJobs, jobs, w.handleJobEvent)
	var graphSub *sjs.Subscriber
	if w.cfg.Graph != nil {
		graphSub, err = sjs.NewSubscriber(sjs.SubscriberConfig{
			Consumer: w.cfg.Streams.GraphConsumer, MaxInFlight: 1, FetchBatch: 1,
			DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
		})
		if err != nil {
			return subs, err
		}
		router.AddConsumerHandler("graph", sjs.ConsumerGraph, graphSub, w.handleGraph)
	}

	subs.chunks, subs.jobs, subs.graph, subs.router = chunks, jobs, graphSub, router
	for stream, sub := range map[string]*sjs.Subscriber{schemas.StreamChunks: chunks, schemas.StreamJobs: jobs, sjs.StreamGraph: graphSub} {
		if sub != nil {
			w.metrics.messages.InFlight(stream, func() float64 { return float64(sub.InFlight()) })
		}
	}
	return subs, nil
}

// watchDrain keeps the drain's word: DrainTimeout after ctx ends, the writes still under way
// in b are cancelled, so a hung sink cannot hold the process past it (SIGTERM took 58 s with
// a 30 s drain timeout, issue 11). The returned function stops the watch.
func (w *Worker) watchDrain(ctx context.Context, b *Batcher) (stop func()) {
	finished := make(chan struct{})
	shutdown := ctx.Done()
	go func() {
		select {
		case <-shutdown:
		case <-finished:
			return
		}
		t := time.NewTimer(w.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			w.log.Warn("drain timeout: cancelling the writes still under way", "drain_timeout", w.cfg.DrainTimeout)
			b.Abort()
		case <-finished:
		}
	}()
	return func() { close(finished) }
}

func (w *Worker) builder(env string) *document.Builder { return w.builders[env] }

// CollectionFor returns the collection chunks of env are written to.
func (w *Worker) CollectionFor(env string) string {
	if c, ok := w.collections[env]; ok {
		return c
	}
	return strings.ReplaceAll(w.cfg.Collection, "{env}", env)
}
