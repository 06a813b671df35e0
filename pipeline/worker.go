package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
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
	*settle.Settler

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
	w := &Worker{
		cfg:         cfg,
		log:         log,
		jobs:        cfg.Jobs,
		dlq:         dl,
		validator:   v,
		metrics:     newWorkerMetrics(cfg.Registerer, func() float64 { return float64(dl.Unresolved()) }),
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
	w.Settler = &settle.Settler{
		DLQ: w.dlq, Retry: cfg.Retry, MaxDeliver: maxDeliver, Log: log, Kind: "message",
		// A dead-lettered item of a job counts towards it, so the job can complete.
		OnDead: func(ctx context.Context, env schemas.DeadLetterEnvelope) error {
			if env.JobID == "" || env.Item == nil || !schemas.ValidKey(env.JobID) {
				return nil
			}
			return w.progress.Record(ctx, jobs.Mark{Job: env.JobID, Item: int64(*env.Item), Outcome: jobs.DeadLettered})
		},
		Retried: func() { w.metrics.outcome("retried", 0) },
		Dead:    func() { w.metrics.outcome("dead_lettered", 0) },
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
	batchCfg.Sink = instrumentedSink{w.cfg.Sink, w.metrics}
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

// chunkItem is one chunk of a batch, a single-chunk message or one item of a bundle, and what
// became of it.
type chunkItem struct {
	d    *sjs.Delivery
	meta *jetstream.MsgMetadata
	job  string
	item int64
	// docs[first:last] of its collection's write are this chunk's documents.
	coll        string
	first, last int
	permanent   error
	transient   error
	// For an item of a bundle: its position, the item as a single-chunk message (its dead
	// letter), and whether it was settled on an earlier delivery (nothing to do).
	pos     int
	bundled *bundleItemMsg
	skip    bool
}

// chunkMsg is one message of a batch: items[lo:hi] are its chunks.
type chunkMsg struct {
	lo, hi int
	bundle bool
}

// handleChunks writes a batch of chunk messages (sjs.BatchHandler): each chunk — a message, or
// an item of a bundle message — is checked and built into documents, each collection's
// documents go to the batcher in one call, the job progress of the written ones is recorded in
// one call, and then each message is settled on its own — acked once its documents and its
// progress are durable, retried with a delay after a transient failure, dead-lettered after a
// permanent one. A bundle's items are dead-lettered one by one and the bundle is acked once all
// of them are settled (settleBundle).
func (w *Worker) handleChunks(ctx context.Context, batch []*sjs.Delivery) {
	w.metrics.batchMsgs.Observe(float64(len(batch)))
	cb := w.collect(ctx, batch)
	for coll, docs := range cb.docs {
		// Collections are written one after another; a batch spans several only when chunks
		// of different environments arrive together.
		cb.noteResults(coll, w.write(ctx, coll, docs))
	}
	var progressErr error
	if marks := cb.written(); len(marks) > 0 {
		if err := w.progress.RecordAll(ctx, marks); err != nil {
			progressErr = fmt.Errorf("record progress: %w", err)
		}
	}
	for _, cm := range cb.msgs {
		if cm.bundle {
			w.settleBundle(ctx, cb.items[cm.lo:cm.hi], progressErr)
			continue
		}
		w.settleChunk(ctx, cb.items[cm.lo], progressErr)
	}
}

// chunkBatch is a batch of chunk messages being handled: its chunks, the messages they came
// from, and their documents by collection (a batch usually has one).
type chunkBatch struct {
	items []chunkItem
	msgs  []chunkMsg
	docs  map[string][]document.Doc
}

// add appends chunk it with its documents docs.
func (cb *chunkBatch) add(it chunkItem, docs []document.Doc) {
	it.first = len(cb.docs[it.coll])
	cb.docs[it.coll] = append(cb.docs[it.coll], docs...)
	it.last = len(cb.docs[it.coll])
	cb.items = append(cb.items, it)
}

// noteResults maps the per-document results of coll's write back to the chunks: the worst
// permanent and transient error of each chunk's documents.
func (cb *chunkBatch) noteResults(coll string, results []error) {
	for i := range cb.items {
		it := &cb.items[i]
		if it.coll != coll {
			continue
		}
		for _, e := range results[it.first:it.last] {
			switch {
			case e == nil:
			case fault.IsPermanent(e):
				it.permanent = cmpErr(it.permanent, e)
			default:
				it.transient = cmpErr(it.transient, e)
			}
		}
	}
}

// written returns the progress marks of the chunks of a job whose documents are all stored.
func (cb *chunkBatch) written() []jobs.Mark {
	var marks []jobs.Mark
	for _, it := range cb.items {
		if it.job != "" && !it.skip && it.permanent == nil && it.transient == nil {
			marks = append(marks, jobs.Mark{Job: it.job, Item: it.item, Outcome: jobs.Written})
		}
	}
	return marks
}

// collect checks each message of batch and builds its chunks' documents; a bundle expands
// into its items (those settled on an earlier delivery are skipped). A message that cannot be
// a chunk is dead-lettered at once and left out.
func (w *Worker) collect(ctx context.Context, batch []*sjs.Delivery) *chunkBatch {
	cb := &chunkBatch{items: make([]chunkItem, 0, len(batch)), msgs: make([]chunkMsg, 0, len(batch)),
		docs: map[string][]document.Doc{}}
	for _, d := range batch {
		m, meta := d.Msg(), d.Meta()
		if meta == nil {
			var err error
			if meta, err = m.Metadata(); err != nil {
				w.log.Error("chunk without JetStream metadata; retrying", "subject", m.Subject(), "err", err)
				d.Retry(time.Second)
				continue
			}
		}
		if m.Headers().Get(schemas.HeaderSchema) != string(schemas.ChunkBundle) {
			it, docs, err := w.checkChunk(m, meta)
			if err != nil {
				_ = w.DeadLetter(ctx, d, m, meta, err, "")
				continue
			}
			it.d = d
			cb.add(it, docs)
			cb.msgs = append(cb.msgs, chunkMsg{lo: len(cb.items) - 1, hi: len(cb.items)})
			continue
		}
		env, ok := schemas.EnvFromSubject(m.Subject())
		if !ok {
			_ = w.DeadLetter(ctx, d, m, meta, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject()), "")
			continue
		}
		var done []bool
		if meta.NumDelivered > 1 {
			done = w.bundles.get(meta)
		}
		its, docs, err := w.expandBundle(m, meta, env, done)
		if err != nil {
			_ = w.DeadLetter(ctx, d, m, meta, err, "")
			continue
		}
		lo := len(cb.items)
		for i, it := range its {
			it.d = d
			cb.add(it, docs[i])
		}
		cb.msgs = append(cb.msgs, chunkMsg{lo: lo, hi: len(cb.items), bundle: true})
	}
	return cb
}

// settleChunk settles a single-chunk message: acked once its documents and its progress are
// durable, retried with a delay after a transient failure, dead-lettered after a permanent one.
func (w *Worker) settleChunk(ctx context.Context, it chunkItem, progressErr error) {
	m := it.d.Msg()
	switch {
	case it.permanent != nil:
		_ = w.DeadLetter(ctx, it.d, m, it.meta, it.permanent, w.cfg.SinkName)
	case it.transient != nil:
		_ = w.Fail(ctx, it.d, m, it.meta, fmt.Errorf("write chunk: %w", it.transient), w.cfg.SinkName)
	case progressErr != nil && it.job != "":
		_ = w.Fail(ctx, it.d, m, it.meta, progressErr, "")
	default:
		if it.meta.NumDelivered > 1 {
			w.dlq.Forget(it.meta)
		}
		it.d.Ack()
		w.metrics.outcome("written", time.Since(it.d.Received()))
	}
}

// chunkWeight weighs a chunk message for the handler batches by the chunks it holds: one for
// a single chunk, a bundle's Sluice-Items header, or — for a bundle without it — an estimate
// from its size (one chunk per 512 bytes), at most schemas.MaxBundleItems. A handler batch so
// builds about Batch.MaxBatch chunks' documents at once, however they are packed, and the
// subscriber holds about MaxInFlightChunks chunks. It does not block.
func chunkWeight(m jetstream.Msg) int {
	h := m.Headers()
	if h.Get(schemas.HeaderSchema) != string(schemas.ChunkBundle) {
		return 1
	}
	if n, err := strconv.Atoi(h.Get(schemas.HeaderItems)); err == nil && n > 0 {
		return min(n, schemas.MaxBundleItems)
	}
	return min(len(m.Data())/512+1, schemas.MaxBundleItems)
}

// write writes docs through the batcher, held through a sink outage by the circuit breaker
// (breaker.hold): a write in which every document failed transiently is made again once the
// sink answers. It returns one outcome per document; the caller settles the messages.
func (w *Worker) write(ctx context.Context, coll string, docs []document.Doc) []error {
	var results []error
	if err := w.breaker.hold(ctx, func() error {
		results = w.batcher.Write(ctx, coll, docs)
		return sinkDown(results)
	}); err != nil {
		return fill(len(docs), fault.Retry(fault.Transient, fmt.Errorf("held while the sink was down: %w", err)))
	}
	return results
}

// sinkDown returns the first error if every outcome is a transient failure (the sink, not
// the documents, failed), else nil.
func sinkDown(results []error) error {
	for _, e := range results {
		if e == nil || fault.IsPermanent(e) {
			return nil
		}
	}
	if len(results) == 0 {
		return nil
	}
	return results[0]
}

func fill(n int, err error) []error {
	out := make([]error, n)
	for i := range out {
		out[i] = err
	}
	return out
}

// checkChunk checks a chunk message's subject and headers and builds its documents. Its
// errors are permanent.
func (w *Worker) checkChunk(m jetstream.Msg, meta *jetstream.MsgMetadata) (chunkItem, []document.Doc, error) {
	env, ok := schemas.EnvFromSubject(m.Subject())
	if !ok {
		return chunkItem{}, nil, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject())
	}
	h := m.Headers()
	if sch := h.Get(schemas.HeaderSchema); sch != "" && sch != string(schemas.Chunk) {
		return chunkItem{}, nil, fault.Permanentf(fault.Validation,
			"header %s is %q; a chunk subject carries %q or %q", schemas.HeaderSchema, sch, schemas.Chunk, schemas.ChunkBundle)
	}
	it := chunkItem{meta: meta, item: -1, coll: w.CollectionFor(env)}
	if it.job = h.Get(schemas.HeaderJob); it.job != "" {
		n, err := strconv.ParseInt(h.Get(schemas.HeaderItem), 10, 64)
		if err != nil || n < 0 || !schemas.ValidKey(it.job) {
			return chunkItem{}, nil, fault.Permanentf(fault.Validation,
				"a chunk with %s must carry a valid job id and a %s index (got %q, %q)",
				schemas.HeaderJob, schemas.HeaderItem, it.job, h.Get(schemas.HeaderItem))
		}
		it.item = n
	}
	docs, err := w.builder(env).Build(m.Data(), document.Meta{Version: docVersion(meta.Sequence.Stream, 0), Job: it.job})
	if err != nil {
		return chunkItem{}, nil, err
	}
	return it, docs, nil
}

func cmpErr(have, e error) error {
	if have != nil {
		return have
	}
	return e
}

// handleJobEvent applies a job's open or seal event to the job store.
func (w *Worker) handleJobEvent(msg *message.Message) error {
	m, meta, err := settle.Native(msg)
	if err != nil {
		return fmt.Errorf("job handler: %w", err)
	}
	ctx := msg.Context()
	if err := w.validator.Validate(schemas.JobEvent, m.Data()); err != nil {
		return w.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, err), "")
	}
	var ev schemas.JobEventEnvelope
	if err := ev.UnmarshalJSON(m.Data()); err != nil {
		return w.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, err), "")
	}
	switch {
	case ev.Open != nil:
		_, err = w.jobs.Open(ctx, *ev.Open)
	case ev.Seal != nil:
		if cerr := ev.Seal.Check(); cerr != nil {
			return w.DeadLetter(ctx, settle.Watermill(msg), m, meta, fault.Permanent(fault.Validation, cerr), "")
		}
		_, err = w.jobs.Seal(ctx, *ev.Seal)
	case ev.Rollback != nil:
		if verr := w.verifyRollback(m); verr != nil {
			return w.DeadLetter(ctx, settle.Watermill(msg), m, meta, verr, "")
		}
		err = w.rollback(ctx, *ev.Rollback)
	}
	if err != nil {
		return w.Fail(ctx, settle.Watermill(msg), m, meta, err, "")
	}
	return nil
}

// verifyRollback checks that the API signed rollback m (issue 11: a forged rollback deleted
// 50,000 documents with no requester recorded).
func (w *Worker) verifyRollback(m jetstream.Msg) error {
	if w.cfg.Key == nil {
		return fault.Permanentf(fault.Auth, "rollback refused: this worker has no command key to verify it (set SLUICE_COMMAND_KEY)")
	}
	if err := w.cfg.Key.VerifyMsg(sign.Rollback, m.Headers(), m.Data()); err != nil {
		return fmt.Errorf("rollback refused: %w", err)
	}
	return nil
}

// rollback undoes what a job wrote last and records the outcome: in the job record (what was
// deleted or restored, and the earlier jobs whose documents went with it) and in each of those
// earlier jobs (state superseded). The superseded jobs are marked before the rollback is
// recorded done, and a sink that records its outcome (JobRollbacker on the embedded store)
// reports it again when the event is redelivered, so a crash in between loses no mark.
// Transient failures are returned (the event is retried); a permanent one is recorded as
// failed.
func (w *Worker) rollback(ctx context.Context, ev schemas.JobRollback) error {
	id := jobs.RollbackID(ev)
	coll := w.CollectionFor(ev.Env)
	mark := func(ctx context.Context, superseded map[string]int64) error {
		return w.jobs.MarkSuperseded(ctx, ev.JobID, id, superseded)
	}
	var res document.JobRollbackResult
	var err error
	switch s := w.cfg.Sink.(type) {
	case JobRollbacker:
		res, err = s.RollbackJobDocs(ctx, coll, document.JobRollback{
			Job: ev.JobID, ID: id, RestorePrevious: ev.RestorePrevious, BeforeDelete: mark,
		})
	case JobDocDeleter:
		if ev.RestorePrevious {
			err = fault.Permanentf(fault.Validation, "the %s store keeps no previous versions to restore; roll back without restoring to delete the job's documents", w.cfg.SinkName)
			break
		}
		res.Deleted, err = s.DeleteJobDocs(ctx, coll, ev.JobID)
	default:
		err = fault.Permanentf(fault.Validation, "the %s store cannot delete documents by job", w.cfg.SinkName)
	}
	if err != nil && !fault.IsPermanent(err) {
		return err
	}
	if err == nil {
		// Marked already by BeforeDelete on a sink that calls it; marking again is harmless.
		if merr := mark(ctx, res.Superseded); merr != nil {
			return merr
		}
	}
	w.log.Info("rolled back job", "job", ev.JobID, "deleted", res.Deleted, "restored", res.Restored,
		"superseded_jobs", len(res.Superseded), "err", err)
	_, ferr := w.jobs.FinishRollback(ctx, ev.JobID, id, res, err)
	return ferr
}
