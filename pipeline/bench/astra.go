// Package bench holds Sluice's load benchmarks as ordinary code, so that `sluice bench` and
// `go test -bench` measure one and the same scenario.
//
// The AstraDB scenario (NewAstra, RunAstra) loads one generated chunk file into the strict
// Data API double (sinks/astra/dataapitest), which answers every request after a fixed
// latency, in three ways:
//
//   - seed: the Python system's HEAD loader, one findOneAndReplace(upsert) per chunk, in
//     sequence;
//   - astrapy: a direct bulk loader as astrapy's insert_many does it (insertMany of 50, 20
//     requests at once), no broker, no durability;
//   - sluice: Sluice end to end: the file is published as a job (intake.Loader) to JetStream
//     on an embedded nats-server that fsyncs every write, a pipeline.Worker group-commits the
//     chunks into the astra sink and acks them, and the run ends when the job reports every
//     chunk written;
//   - sluice-single: the sluice mode with the loader publishing one chunk per message
//     (intake.LoaderConfig.SingleChunkMessages) instead of chunk bundles, for a side by side
//     of the two (not run unless asked for);
//   - jetstream: the floor under any durable path through the broker: the file's records
//     published raw to JetStream the way the loader publishes them (in bundles of
//     intake.DefaultBundleItems, atomic batches, one Nats-Msg-Id each, fsync on every
//     write) and nothing else — no validation, no job, no consumer, no Data API. With one
//     write round trip added it bounds what the sluice mode can reach on this machine
//     (AstraResult.SluiceVsAstrapyCeiling).
//
// Every mode starts from the chunk file on disk inside the timed region: seed and astrapy
// read it and build the documents as the Python loaders do before they write. It measures
// documents per second of wall-clock time. Everything runs in this one process: the Data API
// double, the broker, the loader and the worker share the CPU, so on a small machine the
// sluice mode pays for work (the broker's, the double's) that production runs elsewhere. The
// CPU split (cpuprofile.go) tells those parts apart: every mode reports the CPU per chunk of
// the broker, the client (Sluice, or the astrapy-style loader) and the double.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/files"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The modes of the AstraDB scenario.
const (
	// ModeSeed is (a): one findOneAndReplace(upsert) per chunk, in sequence.
	ModeSeed = "seed"
	// ModeAstrapy is (b): insertMany of AstrapyBatch documents, AstrapyConcurrency at once.
	ModeAstrapy = "astrapy"
	// ModeSluice is (c): loader -> JetStream (sync always) -> worker -> astra sink -> ack.
	ModeSluice = "sluice"
	// ModeSluiceSingle is ModeSluice with one chunk per message instead of chunk bundles.
	ModeSluiceSingle = "sluice-single"
	// ModeJetStream is the floor: the records published raw to JetStream, durably, no more.
	ModeJetStream = "jetstream"
)

// modes lists the modes RunAstra runs by default, in order.
var modes = []string{ModeSeed, ModeAstrapy, ModeSluice, ModeJetStream}

// allModes lists every mode.
var allModes = []string{ModeSeed, ModeAstrapy, ModeSluice, ModeSluiceSingle, ModeJetStream}

// Modes returns every mode's name, the default ones first.
func Modes() []string { return slices.Clone(allModes) }

// isSluice says whether mode runs Sluice's loader and worker.
func isSluice(mode string) bool { return mode == ModeSluice || mode == ModeSluiceSingle }

// The astrapy mode's request shape: astrapy's insert_many(chunk_size=50, concurrency=20).
const (
	AstrapyBatch       = 50
	AstrapyConcurrency = 20
)

// The goals of the comparison (docs/benchmarks.md): Sluice at least 100 times the seed's
// rate, and at least 0.8 of the direct bulk loader's.
const (
	GoalSluiceVsSeed    = 100.0
	GoalSluiceVsAstrapy = 0.8
)

const (
	env        = "dev"
	collection = "ttrpg_chunks_dev"
	keyspace   = "default_keyspace"
	// floorStream holds the jetstream mode's messages, apart from Sluice's streams so that
	// the worker does not consume them.
	floorStream  = "BENCH_FLOOR"
	floorSubject = "bench.floor.chunks"
)

// AstraConfig configures the AstraDB scenario.
type AstraConfig struct {
	// Chunks is the number of chunks in the generated file, one document each. Optional;
	// default 2000.
	Chunks int
	// Latency is how long the Data API double waits before answering each request.
	// Optional; default 20 ms; negative means no added latency.
	Latency time.Duration
	// Runs is the number of timed runs of each mode RunAstra makes. Optional; default 5.
	// NewAstra ignores it: Astra.Run takes the count.
	Runs int
	// Modes are the modes to set up (NewAstra) and run, in this order (RunAstra): ModeSeed,
	// ModeAstrapy, ModeSluice, ModeSluiceSingle, ModeJetStream. Optional; default all but
	// ModeSluiceSingle. The sluice modes and ModeJetStream start a broker; only the sluice
	// modes start a worker.
	Modes []string
	// Dir is where NewAstra creates its working directory (the chunk file, the broker's
	// data), which Close removes. Optional; default os.TempDir().
	Dir string
	// Logger receives the progress of RunAstra and the warnings of the broker, the Data API
	// client and the worker. Optional; nil discards them.
	Logger *slog.Logger
}

const (
	defaultChunks  = 2000
	defaultLatency = 20 * time.Millisecond
	defaultRuns    = 5
)

func (c *AstraConfig) setDefaults() {
	if c.Chunks == 0 {
		c.Chunks = defaultChunks
	}
	if c.Latency == 0 {
		c.Latency = defaultLatency
	}
	if c.Runs == 0 {
		c.Runs = defaultRuns
	}
	if len(c.Modes) == 0 {
		c.Modes = slices.Clone(modes)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with c at once, judging zero fields by their defaults.
func (c AstraConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Chunks < 1 {
		errs = append(errs, fmt.Errorf("bench astra: Chunks must be at least 1, got %d", c.Chunks))
	}
	if c.Runs < 1 {
		errs = append(errs, fmt.Errorf("bench astra: Runs must be at least 1, got %d", c.Runs))
	}
	seen := map[string]bool{}
	for _, m := range c.Modes {
		switch {
		case !slices.Contains(allModes, m):
			errs = append(errs, fmt.Errorf("bench astra: unknown mode %q (%s)", m, strings.Join(allModes, ", ")))
		case seen[m]:
			errs = append(errs, fmt.Errorf("bench astra: mode %q given twice", m))
		}
		seen[m] = true
	}
	return errors.Join(errs...)
}

// ModeResult is what the timed runs of one mode measured.
type ModeResult struct {
	Mode string `json:"mode"`
	// Runs is the number of timed runs.
	Runs int `json:"runs"`
	// Chunks is the number of chunks (and documents) each run loaded.
	Chunks int `json:"chunks"`
	// Elapsed is the time of all runs together, setup and checks between runs excluded.
	Elapsed time.Duration `json:"elapsed_ns"`
	// DocsPerSec is Chunks*Runs/Elapsed.
	DocsPerSec float64 `json:"docs_per_sec"`
	// CPUPerRun is the CPU time (user and system) the whole process — broker, double, loader
	// and worker alike — used during a timed run, on average; 0 where it cannot be read. Over
	// Elapsed/Runs it says how many cores a run kept busy.
	CPUPerRun time.Duration `json:"cpu_per_run_ns,omitempty"`
	// CPU is the CPU per chunk of each part of the process during the timed runs, sampled
	// (CPUSplit); nil when the process's CPU profiler was in use by someone else.
	CPU *PartsCPU `json:"cpu_per_chunk,omitempty"`
	// Stored is the number of documents the double held after each run (for ModeJetStream:
	// records in the messages the run added to the stream): always Chunks, since a run that
	// leaves any other count is an error.
	Stored int `json:"stored"`
}

// PartsCPU is a CPU split per chunk, in microseconds.
type PartsCPU struct {
	// Broker is the embedded nats-server's CPU per chunk.
	Broker float64 `json:"broker_us"`
	// Client is the code under test's: Sluice's loader, worker, nats.go client and sink (or
	// the astrapy-style loader, or the floor's publisher).
	Client float64 `json:"client_us"`
	// Double is the Data API double's (in production, the database's, elsewhere).
	Double float64 `json:"double_us"`
	// Unlabeled is the runtime's own: mostly GC background marking.
	Unlabeled float64 `json:"unlabeled_us"`
	// BrokerAndClient is Broker + Client + the share of Unlabeled in proportion to their
	// CPU against the double's: what the chunk path costs on a machine that runs the broker
	// and Sluice but not the database. Apportioning the GC by CPU is an estimate (the GC's
	// work follows allocation and live heap, not CPU); Unlabeled bounds the error.
	BrokerAndClient float64 `json:"broker_and_client_us"`
	// Samples is the number of profile samples behind the split (100 per CPU-second).
	Samples int `json:"samples"`
}

// PerChunk divides split over chunks: the CPU per chunk of each part.
func PerChunk(split CPUSplit, chunks int) PartsCPU {
	us := func(part string) float64 {
		return float64(split.ByPart[part].Nanoseconds()) / 1e3 / float64(max(chunks, 1))
	}
	p := PartsCPU{Broker: us(PartBroker), Client: us(PartClient), Double: us(PartDouble), Samples: split.Samples}
	for part := range split.ByPart {
		if part != PartBroker && part != PartClient && part != PartDouble {
			p.Unlabeled += us(part)
		}
	}
	p.BrokerAndClient = p.Broker + p.Client
	if labeled := p.Broker + p.Client + p.Double; labeled > 0 {
		p.BrokerAndClient += p.Unlabeled * (p.Broker + p.Client) / labeled
	}
	return p
}

// AstraResult is the outcome of RunAstra.
type AstraResult struct {
	Chunks  int           `json:"chunks"`
	Latency time.Duration `json:"latency_ns"`
	Runs    int           `json:"runs"`
	// Modes holds one result per mode, in the order they ran.
	Modes []ModeResult `json:"modes"`
	// SluiceVsSeed is c/a, the sluice mode's docs/s over the seed's; 0 when either did not
	// run. The goal is GoalSluiceVsSeed.
	SluiceVsSeed float64 `json:"sluice_vs_seed,omitempty"`
	// SluiceVsAstrapy is c/b, the sluice mode's docs/s over astrapy's; 0 when either did not
	// run. The goal is GoalSluiceVsAstrapy.
	SluiceVsAstrapy float64 `json:"sluice_vs_astrapy,omitempty"`
	// SluiceSingleVsAstrapy is c/b with one chunk per message: ModeSluiceSingle's docs/s over
	// astrapy's; 0 when either did not run.
	SluiceSingleVsAstrapy float64 `json:"sluice_single_vs_astrapy,omitempty"`
	// BundlesVsSingle is ModeSluice's docs/s over ModeSluiceSingle's; 0 when either did not
	// run.
	BundlesVsSingle float64 `json:"bundles_vs_single,omitempty"`
	// SluiceVsAstrapyByRun, SluiceSingleVsAstrapyByRun and BundlesVsSingleByRun are the
	// same ratios run by run (run i of one mode against run i of the other, which ran next to
	// it): their spread is the machine's noise.
	SluiceVsAstrapyByRun       []float64 `json:"sluice_vs_astrapy_by_run,omitempty"`
	SluiceSingleVsAstrapyByRun []float64 `json:"sluice_single_vs_astrapy_by_run,omitempty"`
	BundlesVsSingleByRun       []float64 `json:"bundles_vs_single_by_run,omitempty"`
	// SluiceVsAstrapyCeiling is the c/b that no path through the broker could beat here: the
	// astrapy mode's time per run over the jetstream mode's (the durable publish alone) plus
	// one write round trip (Latency), since the last chunk can only be written once it is
	// stored. 0 when either mode did not run.
	SluiceVsAstrapyCeiling float64 `json:"sluice_vs_astrapy_ceiling,omitempty"`
}

// Mode returns the result of mode, and whether it ran.
func (r AstraResult) Mode(mode string) (ModeResult, bool) {
	for _, m := range r.Modes {
		if m.Mode == mode {
			return m, true
		}
	}
	return ModeResult{}, false
}

// RunAstra runs cfg.Runs timed runs of every mode of cfg.Modes, each mode on its own Astra
// (double, and broker for the modes that use one), and computes the ratios of the modes that
// ran. The runs are interleaved — run 1 of every mode in cfg.Modes order, then run 2, ... — so
// that a change in the machine's load (it is shared) weighs on every mode alike, and the
// ratios are also given run by run. It blocks until all runs end or ctx ends. It returns
// cfg.Validate's errors, setup errors, and the first run's error (a write that failed, a count
// that did not match), naming the mode.
func RunAstra(ctx context.Context, cfg AstraConfig) (res AstraResult, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return AstraResult{}, err
	}
	res = AstraResult{Chunks: cfg.Chunks, Latency: max(cfg.Latency, 0), Runs: cfg.Runs}
	setups := make([]*Astra, 0, len(cfg.Modes))
	defer func() {
		for _, a := range setups {
			err = errors.Join(err, a.Close())
		}
	}()
	for _, mode := range cfg.Modes {
		mc := cfg
		mc.Modes = []string{mode}
		a, err := NewAstra(ctx, mc)
		if err != nil {
			return res, err
		}
		setups = append(setups, a)
	}
	results := make([]ModeResult, len(cfg.Modes))
	perRun := make([][]time.Duration, len(cfg.Modes)) // elapsed of each run, by mode
	for run := range cfg.Runs {
		for i, mode := range cfg.Modes {
			cfg.Logger.Info("bench: run", "mode", mode, "run", run+1, "of", cfg.Runs, "chunks", cfg.Chunks, "latency", cfg.Latency)
			mr, err := setups[i].Run(ctx, mode, 1)
			if err != nil {
				return res, err
			}
			perRun[i] = append(perRun[i], mr.Elapsed)
			results[i] = mergeRuns(results[i], mr)
		}
	}
	res.Modes = results
	for _, mr := range results {
		cfg.Logger.Info("bench: mode finished", "mode", mr.Mode, "runs", mr.Runs, "docs_per_sec", mr.DocsPerSec)
	}
	idx := func(mode string) int { return slices.Index(cfg.Modes, mode) }
	// ratio is b's docs/s over a's, over all runs and run by run (a's time over b's).
	ratio := func(a, b string) (float64, []float64) {
		ia, ib := idx(a), idx(b)
		if ia < 0 || ib < 0 {
			return 0, nil
		}
		byRun := make([]float64, cfg.Runs)
		for r := range byRun {
			byRun[r] = float64(perRun[ia][r]) / float64(perRun[ib][r])
		}
		return results[ib].DocsPerSec / results[ia].DocsPerSec, byRun
	}
	res.SluiceVsSeed, _ = ratio(ModeSeed, ModeSluice)
	res.SluiceVsAstrapy, res.SluiceVsAstrapyByRun = ratio(ModeAstrapy, ModeSluice)
	res.SluiceSingleVsAstrapy, res.SluiceSingleVsAstrapyByRun = ratio(ModeAstrapy, ModeSluiceSingle)
	res.BundlesVsSingle, res.BundlesVsSingleByRun = ratio(ModeSluiceSingle, ModeSluice)
	if ia, ifl := idx(ModeAstrapy), idx(ModeJetStream); ia >= 0 && ifl >= 0 {
		perRun := func(m ModeResult) time.Duration { return m.Elapsed / time.Duration(m.Runs) }
		res.SluiceVsAstrapyCeiling = float64(perRun(results[ia])) / float64(perRun(results[ifl])+res.Latency)
	}
	return res, nil
}

// mergeRuns adds the runs of b to those of a (the same mode and chunk count): times add up,
// CPU per run and per chunk are averaged over all runs.
func mergeRuns(a, b ModeResult) ModeResult {
	if a.Runs == 0 {
		return b
	}
	m := a
	m.Runs = a.Runs + b.Runs
	m.Elapsed = a.Elapsed + b.Elapsed
	m.DocsPerSec = float64(m.Chunks*m.Runs) / m.Elapsed.Seconds()
	wa, wb := float64(a.Runs)/float64(m.Runs), float64(b.Runs)/float64(m.Runs)
	m.CPUPerRun = time.Duration(float64(a.CPUPerRun)*wa + float64(b.CPUPerRun)*wb)
	m.Stored = b.Stored
	switch {
	case a.CPU == nil || b.CPU == nil:
		m.CPU = nil // one run without a split: none for the mode
	default:
		avg := func(x, y float64) float64 { return x*wa + y*wb }
		c := PartsCPU{
			Broker: avg(a.CPU.Broker, b.CPU.Broker), Client: avg(a.CPU.Client, b.CPU.Client),
			Double: avg(a.CPU.Double, b.CPU.Double), Unlabeled: avg(a.CPU.Unlabeled, b.CPU.Unlabeled),
			BrokerAndClient: avg(a.CPU.BrokerAndClient, b.CPU.BrokerAndClient),
			Samples:         a.CPU.Samples + b.CPU.Samples,
		}
		m.CPU = &c
	}
	return m
}

// Astra is the AstraDB scenario set up for its modes: the Data API double, an astra client
// and sink, the generated chunk file and, for the sluice modes, an embedded broker with a running
// worker and a loader. Its methods are not safe for concurrent use. Call Close when done.
type Astra struct {
	cfg     AstraConfig
	work    string // working directory, removed by Close
	path    string // the chunk file
	double  *dataapitest.Server
	client  *dataapi.Client
	sink    *astra.Sink
	builder *document.Builder

	// The broker, for the sluice modes and ModeJetStream; nil unless one of them was set up.
	srv *embedded.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	// The jetstream mode's stream; nil unless ModeJetStream was set up.
	floor jetstream.Stream
	// The sluice modes' parts; nil unless one of them was set up. loader publishes bundles
	// (ModeSluice), single one chunk per message (ModeSluiceSingle).
	jobs   *jobs.Store
	loader *intake.Loader
	single *intake.Loader
	// stopWorker ends the worker's Run; workerDone then receives its result. workerAlive
	// is cancelled, with the cause, when Run returns.
	stopWorker  context.CancelFunc
	workerDone  chan error
	workerAlive context.Context
	// loads counts the sluice modes' runs: runs after the first load with Force, as a
	// resubmitted file is otherwise recognised and not published again.
	loads int
	// floorRuns counts the jetstream mode's runs, for message ids unique to each run.
	floorRuns int

	closeOnce sync.Once
	closeErr  error
}

// NewAstra validates cfg and sets up every mode of cfg.Modes: it creates a working directory
// under cfg.Dir, writes cfg.Chunks synthetic chunks to a JSONL file there, starts the Data
// API double with cfg.Latency and creates the collection; for the sluice modes and
// ModeJetStream it also starts an embedded nats-server that syncs every write; for the sluice
// modes it provisions Sluice's streams and starts a worker (as `sluice load` does: default
// configuration, sink named "astra"); for ModeJetStream it creates a stream configured as
// Sluice's chunk stream. The double, the broker and the rest start in their parts (InPart:
// PartDouble, PartBroker, PartClient). The caller must call Close, which stops the worker it
// started.
func NewAstra(ctx context.Context, cfg AstraConfig) (_ *Astra, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Astra{cfg: cfg}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()
	if a.work, err = os.MkdirTemp(cfg.Dir, "sluice-bench-astra-"); err != nil {
		return nil, fmt.Errorf("bench astra: create working directory: %w", err)
	}
	if a.path, err = writeChunks(a.work, cfg.Chunks); err != nil {
		return nil, err
	}
	if a.builder, err = document.NewBuilder(document.Config{Env: env}); err != nil {
		return nil, err
	}
	InPart(PartDouble, func() { a.double = dataapitest.New(dataapitest.Config{}) })
	a.double.SetLatency(max(cfg.Latency, 0), 0)
	broker := slices.Contains(cfg.Modes, ModeJetStream) || slices.ContainsFunc(cfg.Modes, isSluice)
	if broker {
		InPart(PartBroker, func() { err = a.startBroker() })
		if err != nil {
			return nil, err
		}
	}
	InPart(PartClient, func() { err = a.setupClient(ctx, broker) })
	if err != nil {
		return nil, err
	}
	return a, nil
}

// setupClient sets up everything but the double and the broker: the Astra client and sink,
// the collection, the broker connection and each mode's parts. The goroutines it starts (the
// HTTP and nats.go connections' loops, the worker) belong to the caller's part.
func (a *Astra) setupClient(ctx context.Context, broker bool) error {
	cfg := a.cfg
	var err error
	// Configured as cmd/sluice configures the sink for an ASTRA_DB_API_ENDPOINT.
	if a.client, err = dataapi.NewClient(dataapi.Config{Endpoint: a.double.URL(), Token: a.double.Token(), Logger: cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.sink, err = astra.NewSink(astra.SinkConfig{Client: a.client, Logger: cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if err := a.sink.EnsureCollection(ctx, collection); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if broker {
		if err := a.connectBroker(ctx); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(cfg.Modes, isSluice) {
		if err := a.startSluice(ctx); err != nil {
			return err
		}
	}
	if slices.Contains(cfg.Modes, ModeJetStream) {
		if err := a.createFloor(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startBroker starts the embedded broker, syncing every write, as `sluice load` does on the
// embedded default.
func (a *Astra) startBroker() error {
	var err error
	if a.srv, err = embedded.Start(embedded.Config{DataDir: filepath.Join(a.work, "data"), Logger: a.cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: start embedded broker: %w", err)
	}
	return nil
}

// connectBroker connects to the broker startBroker started.
func (a *Astra) connectBroker(ctx context.Context) error {
	var err error
	if a.nc, err = sjs.Connect(ctx, sjs.ConnConfig{URL: a.srv.ClientURL(), User: embedded.User, Password: a.srv.Endpoint().Password, Logger: a.cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.js, err = jetstream.New(a.nc); err != nil {
		return fmt.Errorf("bench astra: jetstream: %w", err)
	}
	return nil
}

// createFloor creates the jetstream mode's stream with the chunk stream's configuration
// (sources/jetstream.Provision) on its own subject.
func (a *Astra) createFloor(ctx context.Context) error {
	var err error
	a.floor, err = a.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: floorStream, Subjects: []string{floorSubject},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute, AllowAtomicPublish: true, // Provision's default window
	})
	if err != nil {
		return fmt.Errorf("bench astra: create stream %s: %w", floorStream, err)
	}
	return nil
}

// startSluice provisions Sluice's streams, starts the worker and builds the loader, as
// `sluice load` does on the embedded default.
func (a *Astra) startSluice(ctx context.Context) error {
	dataDir := filepath.Join(a.work, "data")
	js := a.js
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	a.jobs = jobs.NewStore(streams.JobsKV)
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{JS: js, Streams: streams, Sink: a.sink, SinkName: "astra", Logger: a.cfg.Logger})
	if err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.loader, err = intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: a.jobs, SpoolDir: filepath.Join(dataDir, "spool")}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.single, err = intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: a.jobs, SpoolDir: filepath.Join(dataDir, "spool"), SingleChunkMessages: true}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	alive, died := context.WithCancelCause(context.Background())
	a.stopWorker, a.workerDone, a.workerAlive = stop, make(chan error, 1), alive
	go func() {
		err := w.Run(runCtx)
		if err != nil {
			died(fmt.Errorf("worker stopped: %w", err))
		} else {
			died(errors.New("worker stopped"))
		}
		a.workerDone <- err
	}()
	return nil
}

// Close stops the worker (draining it), closes the broker connection, shuts the broker and
// the double down and removes the working directory. It returns the worker's Run error. It
// is idempotent.
func (a *Astra) Close() error {
	a.closeOnce.Do(func() {
		if a.stopWorker != nil {
			a.stopWorker()
			a.closeErr = <-a.workerDone
		}
		if a.nc != nil {
			a.nc.Close()
		}
		if a.srv != nil {
			a.srv.Shutdown()
		}
		if a.client != nil {
			a.client.Close()
		}
		if a.double != nil {
			a.double.Close()
		}
		if a.work != "" {
			if err := os.RemoveAll(a.work); err != nil {
				a.closeErr = errors.Join(a.closeErr, fmt.Errorf("bench astra: remove working directory: %w", err))
			}
		}
	})
	return a.closeErr
}

// Run makes runs timed runs of mode, which NewAstra must have set up. Each run starts from an
// empty collection and ends with a check that the double holds exactly Chunks documents;
// neither is timed. It blocks until the runs end or ctx ends, and returns the first error,
// naming the mode and the run.
func (a *Astra) Run(ctx context.Context, mode string, runs int) (ModeResult, error) {
	res := ModeResult{Mode: mode, Runs: runs, Chunks: a.cfg.Chunks}
	if !slices.Contains(a.cfg.Modes, mode) {
		return res, fmt.Errorf("bench astra: mode %q was not set up (modes: %s)", mode, strings.Join(a.cfg.Modes, ", "))
	}
	if runs < 1 {
		return res, fmt.Errorf("bench astra: runs must be at least 1, got %d", runs)
	}
	var run func(context.Context) error
	switch mode {
	case ModeSeed:
		run = a.runSeed
	case ModeAstrapy:
		run = a.runAstrapy
	case ModeSluice:
		run = func(ctx context.Context) error { return a.runSluice(ctx, a.loader) }
	case ModeSluiceSingle:
		run = func(ctx context.Context) error { return a.runSluice(ctx, a.single) }
	case ModeJetStream:
		run = a.runJetStream
	}
	var split CPUSplit
	profiled := true
	for i := range runs {
		var err error
		if mode == ModeJetStream {
			err = a.floor.Purge(ctx)
		} else {
			_, err = a.client.DeleteMany(ctx, collection, nil)
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: start empty: %w", mode, i+1, err)
		}
		prof, perr := StartCPUProfile()
		cpu0, cpuOK := processCPU()
		start := time.Now()
		InPart(PartClient, func() { err = run(ctx) })
		res.Elapsed += time.Since(start)
		if cpu1, ok := processCPU(); ok && cpuOK {
			res.CPUPerRun += cpu1 - cpu0
		}
		if perr != nil {
			profiled = false
		} else if s, serr := prof.Stop(); serr != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, serr)
		} else {
			split.Add(s)
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, err)
		}
		if mode == ModeJetStream {
			res.Stored, err = a.verifyFloor(ctx)
		} else {
			res.Stored, err = a.verify()
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, err)
		}
	}
	res.DocsPerSec = float64(a.cfg.Chunks*runs) / res.Elapsed.Seconds()
	res.CPUPerRun /= time.Duration(runs)
	if profiled {
		p := PerChunk(split, a.cfg.Chunks*runs)
		res.CPU = &p
	}
	return res, nil
}

// verify checks that the double holds exactly Chunks documents and saw no request a correct
// client would not send, and returns the count.
func (a *Astra) verify() (int, error) {
	n := len(a.double.Documents(keyspace, collection))
	if n != a.cfg.Chunks {
		return n, fmt.Errorf("the Data API double holds %d documents, want %d", n, a.cfg.Chunks)
	}
	if v := a.double.Stats().Violations; len(v) > 0 {
		return n, fmt.Errorf("Data API protocol violations: %s", strings.Join(v, "; "))
	}
	return n, nil
}

// verifyFloor checks that the jetstream mode's stream holds exactly Chunks records, in
// bundles, and returns the count.
func (a *Astra) verifyFloor(ctx context.Context) (int, error) {
	c, err := a.js.OrderedConsumer(ctx, floorStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", floorStream, err)
	}
	info, err := a.floor.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", floorStream, err)
	}
	n := 0
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return n, fmt.Errorf("stream %s: read back: %w", floorStream, err)
		}
		var b schemas.ChunkBundlePayload
		if err := json.Unmarshal(m.Data(), &b); err != nil {
			return n, fmt.Errorf("stream %s: read back: %w", floorStream, err)
		}
		n += len(b.Items)
	}
	if n != a.cfg.Chunks {
		return n, fmt.Errorf("stream %s holds %d records in %d messages, want %d", floorStream, n, info.State.Msgs, a.cfg.Chunks)
	}
	return n, nil
}

// readDocs reads the chunk file and builds its documents, as the Python loaders read their
// file before writing.
func (a *Astra) readDocs() ([]document.Doc, error) {
	r, err := files.Open(a.path)
	if err != nil {
		return nil, fmt.Errorf("read chunk file: %w", err)
	}
	defer r.Close()
	docs := make([]document.Doc, 0, a.cfg.Chunks)
	for {
		item, err := r.Next()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read chunk file: %w", err)
		}
		if item.Err != nil {
			return nil, fmt.Errorf("read chunk file: %w", item.Err)
		}
		d, err := a.builder.Build(item.Record, document.Meta{})
		if err != nil {
			return nil, fmt.Errorf("build document of item %d: %w", item.Index, err)
		}
		docs = append(docs, d...)
	}
}

// runSeed is the seed loader: one findOneAndReplace(upsert) per document, in sequence.
func (a *Astra) runSeed(ctx context.Context) error {
	docs, err := a.readDocs()
	if err != nil {
		return err
	}
	for _, d := range docs {
		if _, err := a.client.FindOneAndReplace(ctx, collection, map[string]any{"_id": d.ID}, d.Body, true); err != nil {
			return fmt.Errorf("upsert document %s: %w", d.ID, err)
		}
	}
	return nil
}

// runAstrapy is astrapy's insert_many: AstrapyBatch documents per insertMany,
// AstrapyConcurrency requests at once.
func (a *Astra) runAstrapy(ctx context.Context) error {
	docs, err := a.readDocs()
	if err != nil {
		return err
	}
	p := pool.New().WithContext(ctx).WithMaxGoroutines(AstrapyConcurrency).WithCancelOnError().WithFirstError()
	for part := range slices.Chunk(docs, AstrapyBatch) {
		p.Go(func(ctx context.Context) error {
			bodies := make([]json.RawMessage, len(part))
			for i, d := range part {
				bodies[i] = d.Body
			}
			outcomes, err := a.client.InsertMany(ctx, collection, bodies)
			if err != nil {
				return err
			}
			for i, err := range outcomes {
				if err != nil {
					return fmt.Errorf("insert document %s: %w", part[i].ID, err)
				}
			}
			return nil
		})
	}
	return p.Wait()
}

// runSluice loads the file as a job with l and waits until the worker reports every chunk
// written.
func (a *Astra) runSluice(ctx context.Context, l *intake.Loader) error {
	// A worker that stops (it should not) ends the wait instead of leaving it hanging.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(a.workerAlive, func() { cancel(context.Cause(a.workerAlive)) })
	defer stop()

	res, err := l.Load(ctx, intake.LoadRequest{Env: env, Path: a.path, Force: a.loads > 0})
	a.loads++
	if err != nil {
		return fmt.Errorf("load: %w", withCause(ctx, err))
	}
	if res.Existing {
		return fmt.Errorf("load: job %s was recognised as loaded before and not published", res.JobID)
	}
	job, err := jobs.Wait(ctx, a.jobs, res.JobID, nil)
	if err != nil {
		return fmt.Errorf("wait for job %s: %w", res.JobID, withCause(ctx, err))
	}
	if job.State != jobs.JobCompleted || job.Written != int64(a.cfg.Chunks) {
		return fmt.Errorf("job %s ended %s with %d of %d written, %d rejected, %d dead-lettered",
			res.JobID, job.State, job.Written, a.cfg.Chunks, job.Rejected, job.DeadLettered)
	}
	return nil
}

// runJetStream publishes the chunk file's records to the floor stream as the loader
// publishes chunks: in bundles (schemas.ChunkBundlePayload) of up to
// intake.DefaultBundleItems records and intake.DefaultBundleBytes, each with a Nats-Msg-Id,
// through sources/jetstream.BatchWriter with its defaults; it returns once every batch is
// stored.
func (a *Astra) runJetStream(ctx context.Context) error {
	r, err := files.Open(a.path)
	if err != nil {
		return fmt.Errorf("read chunk file: %w", err)
	}
	defer r.Close()
	a.floorRuns++
	w := sjs.NewBatchWriter(ctx, a.js, sjs.BatchWriterConfig{})
	var (
		bundle schemas.ChunkBundlePayload
		size   int
		first  string
	)
	flush := func() error {
		if len(bundle.Items) == 0 {
			return nil
		}
		m := nats.NewMsg(floorSubject)
		var err error
		if m.Data, err = json.Marshal(bundle); err != nil {
			return err
		}
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("run%d/%s", a.floorRuns, first))
		bundle.Items, size = bundle.Items[:0], 0
		return w.Add(m)
	}
	for {
		item, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = w.Close()
			return fmt.Errorf("read chunk file: %w", err)
		}
		if len(bundle.Items) == intake.DefaultBundleItems || size+len(item.Record) > intake.DefaultBundleBytes {
			if err := flush(); err != nil {
				_ = w.Close()
				return fmt.Errorf("publish: %w", err)
			}
		}
		if len(bundle.Items) == 0 {
			first = item.ID
		}
		bundle.Items = append(bundle.Items, schemas.BundleItem{Index: item.Index, Chunk: item.Record})
		size += len(item.Record) + 32 // the item's index and keys
	}
	if err := flush(); err != nil {
		_ = w.Close()
		return fmt.Errorf("publish: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// withCause adds to err why ctx ended, when that is not already in err (the worker stopped).
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// writeChunks writes n synthetic chunks, one JSON object per line, ids "ab_000000" on, and
// returns the file's path.
func writeChunks(dir string, n int) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("chunks-%d.jsonl", n))
	var b strings.Builder
	for i := range n {
		line, err := json.Marshal(map[string]any{
			"chunk_id": fmt.Sprintf("ab_%06d", i),
			"content":  fmt.Sprintf("Chunk %d: the quick brown fox jumps over the lazy dog.", i),
			"stage":    "raw",
		})
		if err != nil {
			return "", err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("bench astra: write chunk file: %w", err)
	}
	return path, nil
}
