package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/fault"
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
	// Sink is the document store chunks go to. Required.
	Sink DocSink
	// Graph is the graph store graph batches go to. Optional: without it the worker does not
	// consume graph batches.
	Graph GraphStore
	// SinkName names the sink in dead letters and metrics ("docstore", "astra").
	SinkName string
	// Collection is the collection name template; "{env}" is replaced by the message's env.
	// Default "ttrpg_chunks_{env}", as the Python system.
	Collection string
	// Document configures document building (split rule, limits); Env is set per message.
	Document document.Config
	// MaxInFlight bounds chunk messages being handled at once. Default 1024: group commit
	// needs hundreds waiting on one flush (DESIGN.md, "Keep many messages in flight").
	MaxInFlight int
	// Batch configures the group-commit batcher (Sink is set from Sink).
	Batch BatcherConfig
	// Retry is the broker-level retry policy for transient failures.
	Retry RetryPolicy
	// DrainTimeout bounds a graceful stop: in-flight messages get this long to finish.
	// Default 30 s.
	DrainTimeout time.Duration
	// Registerer receives the worker's metrics. Optional.
	Registerer prometheus.Registerer
	// Logger, nil discards.
	Logger *slog.Logger
}

// RetryPolicy spaces broker redeliveries of transiently failed messages: exponential from
// Base, doubling, capped at Max, with jitter on the upper half. The last allowed delivery
// (the consumer's MaxDeliver) is dead-lettered instead of retried.
type RetryPolicy struct {
	// Base delay after the first failure. Default 1 s.
	Base time.Duration
	// Max delay. Default 60 s.
	Max time.Duration
}

// Delay returns the delay before delivery attempt+1.
func (p RetryPolicy) Delay(attempt uint64) time.Duration {
	base, maxD := p.Base, p.Max
	if base <= 0 {
		base = time.Second
	}
	if maxD <= 0 {
		maxD = time.Minute
	}
	d := base
	for i := uint64(1); i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// Worker drains the chunk and job consumers into the sinks: a Watermill router with one
// handler per consumer, a group-commit batcher in front of the document sink, and a batched
// job-progress recorder. Every message is acked only after its write (and its progress) is
// durable; transient failures go back to the broker with a delay; permanent ones are
// dead-lettered and terminated.
type Worker struct {
	cfg       WorkerConfig
	log       *slog.Logger
	jobs      *JobStore
	progress  *Progress
	batcher   *Batcher
	dlq       *deadLetterer
	validator *schemas.Validator
	metrics   *workerMetrics
	*settler

	builders map[string]*document.Builder // one per env, built in NewWorker, read-only after
}

// NewWorker checks cfg and returns a Worker; nothing runs until Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
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
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Collection == "" {
		cfg.Collection = "ttrpg_chunks_{env}"
	}
	if cfg.SinkName == "" {
		cfg.SinkName = "docstore"
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 1024
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	builders := map[string]*document.Builder{}
	for _, env := range []string{schemas.Dev, schemas.Test, schemas.Prod} {
		c := cfg.Document
		c.Env = env
		b, err := document.NewBuilder(c)
		if err != nil {
			return nil, fmt.Errorf("worker: document config: %w", err)
		}
		builders[env] = b
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v, err := schemas.NewValidator()
	if err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	maxDeliver := uint64(10)
	if ci := cfg.Streams.ChunkConsumer.CachedInfo(); ci != nil && ci.Config.MaxDeliver > 0 {
		maxDeliver = uint64(ci.Config.MaxDeliver)
	}
	w := &Worker{
		cfg:       cfg,
		log:       log,
		jobs:      NewJobStore(cfg.Streams.JobsKV),
		dlq:       newDeadLetterer(cfg.JS),
		validator: v,
		metrics:   newWorkerMetrics(cfg.Registerer),
		builders:  builders,
	}
	w.settler = &settler{
		dlq: w.dlq, retry: cfg.Retry, maxDeliver: maxDeliver, log: log, kind: "message",
		// A dead-lettered item of a job counts towards it, so the job can complete.
		onDead: func(ctx context.Context, env schemas.DeadLetterEnvelope) error {
			if env.JobID == "" || env.Item == nil || !schemas.ValidKey(env.JobID) {
				return nil
			}
			return w.progress.Record(ctx, Mark{Job: env.JobID, Item: int64(*env.Item), Outcome: DeadLettered})
		},
		retried: func() { w.metrics.outcome("retried", 0) },
		dead:    func() { w.metrics.outcome("dead_lettered", 0) },
	}
	return w, nil
}

// Jobs returns the worker's job store.
func (w *Worker) Jobs() *JobStore { return w.jobs }

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
	p, err := NewProgress(ProgressConfig{Store: w.jobs})
	if err != nil {
		_ = b.Close()
		return err
	}
	w.progress = p

	chunkSub, err := sjs.NewSubscriber(sjs.SubscriberConfig{
		Consumer: w.cfg.Streams.ChunkConsumer, MaxInFlight: w.cfg.MaxInFlight,
		DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
	})
	if err != nil {
		return err
	}
	jobSub, err := sjs.NewSubscriber(sjs.SubscriberConfig{
		Consumer: w.cfg.Streams.JobConsumer, MaxInFlight: 64,
		DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
	})
	if err != nil {
		return err
	}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: w.cfg.DrainTimeout},
		routerLogger(w.log))
	if err != nil {
		return err
	}
	router.AddConsumerHandler("chunks", sjs.ConsumerChunks, chunkSub, w.handleChunk)
	router.AddConsumerHandler("jobs", sjs.ConsumerJobs, jobSub, w.handleJobEvent)
	var graphSub *sjs.Subscriber
	if w.cfg.Graph != nil {
		graphSub, err = sjs.NewSubscriber(sjs.SubscriberConfig{
			Consumer: w.cfg.Streams.GraphConsumer, MaxInFlight: 1, FetchBatch: 1,
			DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
		})
		if err != nil {
			return err
		}
		router.AddConsumerHandler("graph", sjs.ConsumerGraph, graphSub, w.handleGraph)
	}

	runErr := router.Run(ctx)
	// The router closed the subscribers, which waited for in-flight handlers.
	cerr := errors.Join(chunkSub.Close(), jobSub.Close())
	if graphSub != nil {
		cerr = errors.Join(cerr, graphSub.Close())
	}
	_ = b.Close()
	_ = p.Close()
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("worker: router: %w", runErr)
	}
	return cerr
}

func (w *Worker) builder(env string) *document.Builder { return w.builders[env] }

// CollectionFor returns the collection chunks of env are written to.
func (w *Worker) CollectionFor(env string) string {
	return strings.ReplaceAll(w.cfg.Collection, "{env}", env)
}

// handleChunk writes one chunk message. It settles the message itself (SetRetry, SetTerm or
// plain ack) and returns nil, except when it cannot even do that.
func (w *Worker) handleChunk(msg *message.Message) error {
	m, meta, err := native(msg)
	if err != nil {
		return fmt.Errorf("chunk handler: %w", err)
	}
	ctx := msg.Context()
	start := time.Now()
	env, ok := schemas.EnvFromSubject(m.Subject())
	if !ok {
		return w.deadLetter(ctx, msg, m, meta, fault.Permanentf(fault.Validation, "subject %q names no valid environment", m.Subject()), "")
	}
	if sch := m.Headers().Get(schemas.HeaderSchema); sch != "" && sch != string(schemas.Chunk) {
		return w.deadLetter(ctx, msg, m, meta, fault.Permanentf(fault.Validation,
			"header %s is %q; a chunk subject carries %q", schemas.HeaderSchema, sch, schemas.Chunk), "")
	}
	jobID := m.Headers().Get(schemas.HeaderJob)
	item := int64(-1)
	if jobID != "" {
		n, err := strconv.ParseInt(m.Headers().Get(schemas.HeaderItem), 10, 64)
		if err != nil || n < 0 || !schemas.ValidKey(jobID) {
			return w.deadLetter(ctx, msg, m, meta, fault.Permanentf(fault.Validation,
				"a chunk with %s must carry a valid job id and a %s index (got %q, %q)",
				schemas.HeaderJob, schemas.HeaderItem, jobID, m.Headers().Get(schemas.HeaderItem)), "")
		}
		item = n
	}
	docs, err := w.builder(env).Build(m.Data(), document.Meta{Version: meta.Sequence.Stream, Job: jobID})
	if err != nil {
		return w.deadLetter(ctx, msg, m, meta, err, "")
	}
	var permanent, transient error
	for _, e := range w.batcher.Write(ctx, w.CollectionFor(env), docs) {
		switch {
		case e == nil:
		case fault.IsPermanent(e):
			permanent = cmpErr(permanent, e)
		default:
			transient = cmpErr(transient, e)
		}
	}
	switch {
	case permanent != nil:
		return w.deadLetter(ctx, msg, m, meta, permanent, w.cfg.SinkName)
	case transient != nil:
		return w.fail(ctx, msg, m, meta, fmt.Errorf("write chunk: %w", transient), w.cfg.SinkName)
	}
	if jobID != "" {
		if err := w.progress.Record(ctx, Mark{Job: jobID, Item: item, Outcome: Written}); err != nil {
			return w.fail(ctx, msg, m, meta, fmt.Errorf("record progress: %w", err), "")
		}
	}
	w.dlq.forget(meta)
	w.metrics.outcome("written", time.Since(start))
	return nil
}

func cmpErr(have, e error) error {
	if have != nil {
		return have
	}
	return e
}

// handleJobEvent applies a job's open or seal event to the job store.
func (w *Worker) handleJobEvent(msg *message.Message) error {
	m, meta, err := native(msg)
	if err != nil {
		return fmt.Errorf("job handler: %w", err)
	}
	ctx := msg.Context()
	if err := w.validator.Validate(schemas.JobEvent, m.Data()); err != nil {
		return w.deadLetter(ctx, msg, m, meta, fault.Permanent(fault.Validation, err), "")
	}
	var ev schemas.JobEventEnvelope
	if err := ev.UnmarshalJSON(m.Data()); err != nil {
		return w.deadLetter(ctx, msg, m, meta, fault.Permanent(fault.Validation, err), "")
	}
	switch {
	case ev.Open != nil:
		_, err = w.jobs.Open(ctx, *ev.Open)
	case ev.Seal != nil:
		if cerr := ev.Seal.Check(); cerr != nil {
			return w.deadLetter(ctx, msg, m, meta, fault.Permanent(fault.Validation, cerr), "")
		}
		_, err = w.jobs.Seal(ctx, *ev.Seal)
	case ev.Rollback != nil:
		err = w.rollback(ctx, *ev.Rollback)
	}
	if err != nil {
		return w.fail(ctx, msg, m, meta, err, "")
	}
	return nil
}

// rollback deletes what a job wrote and records the outcome in the job record. Transient
// failures are returned (the event is retried); a permanent one is recorded as failed.
func (w *Worker) rollback(ctx context.Context, ev schemas.JobRollback) error {
	d, ok := w.cfg.Sink.(JobDocDeleter)
	if !ok {
		_, err := w.jobs.finishRollback(ctx, ev.JobID, 0, fmt.Errorf("the %s store cannot delete documents by job", w.cfg.SinkName))
		return err
	}
	n, err := d.DeleteJobDocs(ctx, w.CollectionFor(ev.Env), ev.JobID)
	if err != nil && !fault.IsPermanent(err) {
		return err
	}
	w.log.Info("rolled back job", "job", ev.JobID, "deleted", n, "err", err)
	_, ferr := w.jobs.finishRollback(ctx, ev.JobID, n, err)
	return ferr
}
