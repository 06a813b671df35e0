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
//   - sluice-trace-1 and sluice-trace-100: the sluice mode with OpenTelemetry tracing on, an
//     SDK TracerProvider sampling 1% or all of the traces (parent-based: a job's load span
//     decides for all its spans), its spans batched to an exporter that drops them — the
//     cost of making, sampling and batching the spans, not of encoding and sending them. The
//     sluice mode itself runs with otel's no-op provider, as Sluice does by default (not run
//     unless asked for; side by side with sluice they give the tracing overhead);
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
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
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
	// ModeSluiceTrace1 is ModeSluice traced, 1% of the traces (jobs) sampled.
	ModeSluiceTrace1 = "sluice-trace-1"
	// ModeSluiceTrace100 is ModeSluice traced, every trace sampled.
	ModeSluiceTrace100 = "sluice-trace-100"
)

// modes lists the modes RunAstra runs by default, in order.
var modes = []string{ModeSeed, ModeAstrapy, ModeSluice, ModeJetStream}

// allModes lists every mode.
var allModes = []string{ModeSeed, ModeAstrapy, ModeSluice, ModeSluiceSingle, ModeJetStream, ModeSluiceTrace1, ModeSluiceTrace100}

// Modes returns every mode's name, the default ones first.
func Modes() []string { return slices.Clone(allModes) }

// isSluice says whether mode runs Sluice's loader and worker.
func isSluice(mode string) bool {
	return mode == ModeSluice || mode == ModeSluiceSingle || mode == ModeSluiceTrace1 || mode == ModeSluiceTrace100
}

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
	// ModeAstrapy, ModeSluice, ModeSluiceSingle, ModeJetStream, ModeSluiceTrace1,
	// ModeSluiceTrace100. Optional; default all but ModeSluiceSingle and the traced ones. The sluice modes and ModeJetStream start a broker; only the sluice
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
	// Spans is the number of spans the traced modes (ModeSluiceTrace1, ModeSluiceTrace100)
	// exported over their runs: proof that tracing was on, and how much of it.
	Spans int64 `json:"spans,omitempty"`
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
	// Trace1VsSluice and Trace100VsSluice are the traced modes' docs/s over the untraced
	// sluice mode's (1.0: tracing costs nothing; 0.9: 10% fewer documents a second); 0 when
	// either did not run. The ByRun slices give them run by run.
	Trace1VsSluice        float64   `json:"trace1_vs_sluice,omitempty"`
	Trace100VsSluice      float64   `json:"trace100_vs_sluice,omitempty"`
	Trace1VsSluiceByRun   []float64 `json:"trace1_vs_sluice_by_run,omitempty"`
	Trace100VsSluiceByRun []float64 `json:"trace100_vs_sluice_by_run,omitempty"`
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
	res.Trace1VsSluice, res.Trace1VsSluiceByRun = ratio(ModeSluice, ModeSluiceTrace1)
	res.Trace100VsSluice, res.Trace100VsSluiceByRun = ratio(ModeSluice, ModeSluiceTrace100)
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
	m.Spans = a.Spans + b.Spans
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
