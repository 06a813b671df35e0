package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline/bench"
)

const benchUsage = `Usage: sluice bench SCENARIO [flags]

Scenarios:
  astra   load a generated chunk file into an in-process AstraDB Data API double three ways:
          seed (one findOneAndReplace per chunk), astrapy (insertMany of 50, 20 at once),
          sluice (loader -> JetStream, fsync always -> worker -> group commit -> ack; chunk
          bundles, or one chunk per message with the sluice-single mode), and jetstream, the
          floor: the records published durably to JetStream and nothing else; with the CPU per
          chunk of the broker, the client and the double
  api     start sluice serve (embedded default, its own process) and drive it with N keep-alive
          clients: 70% GET /v1/jobs/{id}, 20% POST /api/features/submit, 10% POST /v1/jobs of
          100 chunks; latency per route, answers by status, admission refusals, orphaned jobs,
          whether every accepted job completed exactly, peak RSS of the serve process
  backlog queue N chunks with no worker running, then time one sluice worker draining them:
          with the embedded broker in its process, and as a client of a broker elsewhere;
          docs/s and the worker's peak RSS

Run "sluice bench SCENARIO -h" for its flags.
`

// newBenchCmd is "sluice bench" and its scenarios.
func newBenchCmd(c *cli) *cobra.Command {
	cmd := groupCmd("bench", "Measure Sluice: AstraDB loading, the API under load, a backlog drain",
		strings.TrimSuffix(strings.TrimPrefix(benchUsage, "Usage: sluice bench SCENARIO [flags]\n\n"), "\nRun \"sluice bench SCENARIO -h\" for its flags.\n"),
		`  sluice bench astra --chunks 20000 --runs 5
  sluice bench api --clients 1000 --duration 60s
  sluice bench backlog --chunks 100000 --modes embedded`, "scenario", "astra", "api", "backlog")
	cmd.AddCommand(newBenchAstraCmd(c), newBenchAPICmd(c), newBenchBacklogCmd(c))
	return cmd
}

func newBenchAstraCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "astra [flags]",
		Short: "Load a generated chunk file into the Data API double: seed, astrapy, sluice, jetstream",
		Long: "Loads a generated chunk file into the strict Data API double, which runs in this process\n" +
			"and shares the CPU with the broker, the loader and the worker, in each mode, and prints\n" +
			"docs/s per mode (the modes' runs interleaved: run 1 of each, then run 2, ...) and the ratios c/a (sluice/seed) and c/b (sluice/astrapy); with the jetstream\n" +
			"mode, also the c/b no path through the broker could beat here (its durable publish alone\n" +
			"plus one write round trip); with sluice-single, c/b at one chunk per message and bundles\n" +
			"over one chunk per message; with sluice-trace-1 and sluice-trace-100 (sluice with\n" +
			"OpenTelemetry tracing on, 1% or all of the jobs' traces sampled, spans dropped after batching),\n" +
			"their docs/s over untraced sluice's. The CPU columns split the process's CPU per chunk by part, from\n" +
			"a CPU profile sampled by goroutine label: the broker (the embedded nats-server), the client\n" +
			"(Sluice's loader, worker, nats.go connection and Astra client, or the astrapy loader), the\n" +
			"double, and unlabeled runtime work (GC marking); b+c is broker + client with the unlabeled\n" +
			"share in proportion. At 100 samples per CPU-second, use --chunks 20000 for a split within\n" +
			"a few percent.",
		Example: "  sluice bench astra\n  sluice bench astra --modes astrapy,sluice,jetstream --runs 10\n  sluice bench astra --modes sluice,sluice-trace-1,sluice-trace-100\n  sluice bench astra --chunks 20000 --latency 0 --json",
		Args:    noArgs("bench astra takes no arguments"),
	}
	fs := cmd.Flags()
	ctx, stdout, log := c.ctx, c.stdout, c.log
	chunks := fs.Int("chunks", 2000, "chunks in the generated file, one document each")
	latency := fs.Duration("latency", 20*time.Millisecond, "delay of the Data API double before it answers each request; 0 for none")
	runs := fs.Int("runs", 5, "timed runs of each mode")
	modes := fs.String("modes", strings.Join([]string{bench.ModeSeed, bench.ModeAstrapy, bench.ModeSluice, bench.ModeJetStream}, ","),
		"comma-separated modes to run, in order, of: "+strings.Join(bench.Modes(), ", ")+" (sluice-single: sluice with one chunk per message instead of bundles; sluice-trace-1, sluice-trace-100: sluice traced, 1% or all sampled)")
	dir := fs.String("dir", "", "directory for the working files and the broker's data (its disk decides the fsync cost); default the system temporary directory")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	_ = cmd.RegisterFlagCompletionFunc("modes", cobra.FixedCompletions(bench.Modes(), cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
	cmd.RunE = func(*cobra.Command, []string) error {
		cfg := bench.AstraConfig{Chunks: *chunks, Latency: *latency, Runs: *runs, Dir: *dir, Logger: log}
		errs := astraBenchFlags(&cfg, *modes)
		return runBenchScenario(stdout, *asJSON, errs, func() (bench.AstraResult, error) { return bench.RunAstra(ctx, cfg) }, printAstraBench)
	}
	return cmd
}

// astraBenchFlags checks the flags of bench astra (cfg as given, modes comma-separated) and
// completes cfg: its modes, and a latency of 0 as none. It returns every problem.
func astraBenchFlags(cfg *bench.AstraConfig, modes string) []error {
	for m := range strings.SplitSeq(modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Modes = append(cfg.Modes, m)
		}
	}
	var errs []error
	if cfg.Chunks < 1 {
		errs = append(errs, fmt.Errorf("bench astra: --chunks must be at least 1, got %d", cfg.Chunks))
	}
	if cfg.Runs < 1 {
		errs = append(errs, fmt.Errorf("bench astra: --runs must be at least 1, got %d", cfg.Runs))
	}
	switch {
	case cfg.Latency < 0:
		errs = append(errs, fmt.Errorf("bench astra: --latency must not be negative, got %s", cfg.Latency))
	case cfg.Latency == 0:
		cfg.Latency = -1 // the package's zero means its default
	}
	if len(cfg.Modes) == 0 {
		errs = append(errs, errors.New("bench astra: --modes names no mode"))
	} else {
		errs = append(errs, bench.AstraConfig{Modes: cfg.Modes}.Validate()) // unknown or repeated modes
	}
	return errs
}

// printAstraBench prints a bench astra result for a person.
func printAstraBench(w io.Writer, res bench.AstraResult) {
	answers := "at once"
	if res.Latency > 0 {
		answers = "after " + res.Latency.String()
	}
	fmt.Fprintf(w, "AstraDB load: %d chunks, Data API double in this process answering %s\n", res.Chunks, answers)
	fmt.Fprintf(w, "%-16s %10s %5s %7s %8s %8s | %-38s\n", "", "", "", "", "", "", "CPU µs per chunk (sampled)")
	fmt.Fprintf(w, "%-16s %10s %5s %7s %8s %8s | %6s %6s %6s %6s %6s %7s\n", "mode", "docs/s", "runs", "chunks", "ms/run", "cpu ms",
		"broker", "client", "b+c", "double", "unlab", "samples")
	for _, m := range res.Modes {
		cpu := "-"
		if m.CPUPerRun > 0 {
			cpu = fmt.Sprintf("%.1f", m.CPUPerRun.Seconds()*1000)
		}
		split := fmt.Sprintf("%6s %6s %6s %6s %6s %7s", "-", "-", "-", "-", "-", "-")
		if c := m.CPU; c != nil {
			split = fmt.Sprintf("%6.1f %6.1f %6.1f %6.1f %6.1f %7d", c.Broker, c.Client, c.BrokerAndClient, c.Double, c.Unlabeled, c.Samples)
		}
		fmt.Fprintf(w, "%-16s %10.1f %5d %7d %8.1f %8s | %s\n", m.Mode, m.DocsPerSec, m.Runs, m.Chunks,
			m.Elapsed.Seconds()*1000/float64(m.Runs), cpu, split)
	}
	if res.SluiceVsSeed > 0 {
		fmt.Fprintf(w, "c/a = %.2f (goal ≥ %g)\n", res.SluiceVsSeed, bench.GoalSluiceVsSeed)
	}
	if res.SluiceVsAstrapy > 0 {
		fmt.Fprintf(w, "c/b = %.2f (goal ≥ %g)%s\n", res.SluiceVsAstrapy, bench.GoalSluiceVsAstrapy, spread(res.SluiceVsAstrapyByRun))
	}
	if res.SluiceSingleVsAstrapy > 0 {
		fmt.Fprintf(w, "c/b with one chunk per message (sluice-single) = %.2f%s\n", res.SluiceSingleVsAstrapy, spread(res.SluiceSingleVsAstrapyByRun))
	}
	if res.BundlesVsSingle > 0 {
		fmt.Fprintf(w, "sluice / sluice-single (bundles over one chunk per message) = %.2f%s\n", res.BundlesVsSingle, spread(res.BundlesVsSingleByRun))
	}
	if res.SluiceVsAstrapyCeiling > 0 {
		fmt.Fprintf(w, "c/b ceiling here = %.2f (astrapy's time over the durable publish alone plus one round trip)\n", res.SluiceVsAstrapyCeiling)
	}
	for _, m := range res.Modes {
		if m.Spans > 0 {
			fmt.Fprintf(w, "%s: %d spans over %d runs\n", m.Mode, m.Spans, m.Runs)
		}
	}
	if res.Trace1VsSluice > 0 {
		fmt.Fprintf(w, "traced, 1%% sampled / untraced (sluice-trace-1 / sluice) = %.2f%s\n", res.Trace1VsSluice, spread(res.Trace1VsSluiceByRun))
	}
	if res.Trace100VsSluice > 0 {
		fmt.Fprintf(w, "traced, all sampled / untraced (sluice-trace-100 / sluice) = %.2f%s\n", res.Trace100VsSluice, spread(res.Trace100VsSluiceByRun))
	}
}

// runBenchScenario refuses the flags' problems (errs) as one usage error, else runs the
// scenario and prints its result: as one JSON object with --json, else with text.
func runBenchScenario[R any](w io.Writer, asJSON bool, errs []error, run func() (R, error), text func(io.Writer, R)) error {
	if err := errors.Join(errs...); err != nil {
		return usageError{err.Error()}
	}
	res, err := run()
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, res)
	}
	text(w, res)
	return nil
}

// spread describes ratios taken run by run: "; run by run min 0.52 / median 0.61 / max 0.70",
// or nothing for fewer than two.
func spread(byRun []float64) string {
	if len(byRun) < 2 {
		return ""
	}
	xs := slices.Sorted(slices.Values(byRun))
	return fmt.Sprintf("; run by run min %.2f / median %.2f / max %.2f", xs[0], xs[len(xs)/2], xs[len(xs)-1])
}

func newBenchAPICmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "api [flags]",
		Short: "Drive sluice serve with N keep-alive clients: latency, refusals, orphaned jobs, RSS",
		Long: "Starts sluice serve on the embedded default in a fresh data directory, as a process of its\n" +
			"own (this binary), and drives it from this process with --clients keep-alive clients for\n" +
			"--duration: 70% GET /v1/jobs/{id} of jobs it created, 20% POST /api/features/submit, 10%\n" +
			"POST /v1/jobs of --chunks-per-job unique NDJSON chunks. A 503 with Retry-After is counted\n" +
			"as an admission refusal and not retried. Then waits for every accepted job and reports\n" +
			"latency per route, answers by status, orphaned and failed jobs and the server's peak RSS.\n" +
			"The server runs without tokens (loopback, one principal), with the uploads rate limit off\n" +
			"and the connection cap at clients + 64, so the refusals measured are the publish admission's.",
		Example: "  sluice bench api\n  sluice bench api --clients 200 --duration 20s --json",
		Args:    noArgs("bench api takes no arguments"),
	}
	fs := cmd.Flags()
	ctx, stdout := c.ctx, c.stdout
	var cfg apiBenchConfig
	fs.IntVar(&cfg.Clients, "clients", 1000, "keep-alive clients, each with one request in flight")
	fs.DurationVar(&cfg.Duration, "duration", 60*time.Second, "how long the clients start requests")
	fs.IntVar(&cfg.ChunksPerJob, "chunks-per-job", 100, "NDJSON chunks in each uploaded job")
	fs.DurationVar(&cfg.Settle, "settle", 5*time.Minute, "longest wait after the load for every accepted job to finish")
	fs.DurationVar(&cfg.Timeout, "timeout", time.Minute, "longest wait for one answer; past it the request counts as a transport error")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the serve process's data (its disk decides the fsync cost); default the system temporary directory")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	cmd.RunE = func(*cobra.Command, []string) error {
		var errs []error
		if cfg.Clients < 1 {
			errs = append(errs, fmt.Errorf("bench api: --clients must be at least 1, got %d", cfg.Clients))
		}
		if cfg.Duration <= 0 {
			errs = append(errs, fmt.Errorf("bench api: --duration must be positive, got %s", cfg.Duration))
		}
		if cfg.ChunksPerJob < 1 {
			errs = append(errs, fmt.Errorf("bench api: --chunks-per-job must be at least 1, got %d", cfg.ChunksPerJob))
		}
		if cfg.Settle < 0 || cfg.Timeout <= 0 {
			errs = append(errs, fmt.Errorf("bench api: --settle must not be negative and --timeout must be positive"))
		}
		return runBenchScenario(stdout, *asJSON, errs, func() (apiBenchResult, error) { return runAPIBench(ctx, cfg) }, printAPIBench)
	}
	return cmd
}

// printAPIBench prints a bench api result for a person.
func printAPIBench(w io.Writer, res apiBenchResult) {
	fmt.Fprintf(w, "API mix: %d clients for %s (%.1f s with the requests in flight), jobs of %d chunks\n",
		res.Clients, time.Duration(math.Round(res.DurationS*float64(time.Second))), res.ElapsedS, res.ChunksPerJob)
	fmt.Fprintf(w, "server: sluice %s\n", strings.Join(res.ServeArgs, " "))
	fmt.Fprintf(w, "%d requests, %.1f/s; admission refusals (503 + Retry-After) %d; other answers ≥ 500 %d; no answer %d\n",
		res.Requests, res.RequestsPerS, res.Refused, res.ServerErrors, res.TransportErrors)
	fmt.Fprintf(w, "%-26s %9s %8s %9s %9s %9s %9s %10s %11s %12s  %s\n", "route", "requests", "/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "steady p99", "srv p99 ≤", "srv p999 ≤", "statuses")
	for _, r := range res.Routes {
		fmt.Fprintf(w, "%-26s %9d %8.1f %9.1f %9.1f %9.1f %9.1f %10.1f %11s %12s  %s\n", r.Route, r.Requests, r.PerS, r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs, r.SteadyP99Ms,
			bucketMs(r.ServerP99Ms), bucketMs(r.ServerP999Ms), formatStatuses(r.Statuses))
	}
	fmt.Fprintf(w, "(steady p99: requests started after the first %.0f s, past the burst of every client's first request at once;\n"+
		" srv: the server's own request-duration histogram, headers read to handler returned; the bucket bound)\n", res.SteadyAfterS)
	fmt.Fprintf(w, "jobs: %d accepted, %d completed exactly, %d not exactly, %d unsettled after %.1f s\n",
		res.Jobs.Accepted, res.Jobs.Exact, res.Jobs.NotExact, res.Jobs.Unsettled, res.Jobs.SettleS)
	fmt.Fprintf(w, "orphaned jobs (pending, total 0, not sealed): %d; failed jobs: %d\n", res.OrphanedJobs, res.FailedJobs)
	fmt.Fprintf(w, "serve process: peak RSS %s, at the end %s\n", mib(res.PeakRSS), mib(res.EndRSS))
	fmt.Fprintf(w, "CPU during the load: serve %.2f cores, generator %.2f cores; generator's Go scheduler latency p99 ≤ %s, p999 ≤ %s\n",
		res.ServeCPU, res.GeneratorCPU, bucketMs(res.GeneratorSchedP99Ms), bucketMs(res.GeneratorSchedP999Ms))
	for _, s := range append(res.ErrorSamples, res.Jobs.Samples...) {
		fmt.Fprintf(w, "  %s\n", s)
	}
}

// bucketMs prints a histogram bucket bound in milliseconds: "-" without observations, "> last"
// past the last finite bucket.
func bucketMs(ms float64) string {
	switch {
	case ms == 0:
		return "-"
	case ms < 0:
		return "> last"
	}
	return strconv.FormatFloat(ms, 'g', -1, 64) + " ms"
}

// formatStatuses prints status counts in code order: "200:123 503:4".
func formatStatuses(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", k, m[k])
	}
	return b.String()
}

func newBenchBacklogCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backlog [flags]",
		Short: "Drain a queued backlog with one worker: docs/s and peak RSS",
		Long: "For each mode: publishes --chunks chunks as one job onto a fresh broker with no worker\n" +
			"running, then starts one sluice worker (this binary, its own process) and times it until\n" +
			"the job is complete. embedded: the worker starts the embedded broker on the data directory\n" +
			"that holds the backlog; client: the worker connects with --nats-url to the broker, which\n" +
			"runs in this process. Reports docs/s and the worker process's peak RSS (VmHWM).",
		Example: "  sluice bench backlog\n  sluice bench backlog --chunks 100000 --modes embedded",
		Args:    noArgs("bench backlog takes no arguments"),
	}
	fs := cmd.Flags()
	ctx, stdout, log := c.ctx, c.stdout, c.log
	cfg := backlogBenchConfig{Logger: log}
	fs.IntVar(&cfg.Chunks, "chunks", 1_000_000, "chunks queued before the worker starts")
	modes := fs.String("modes", backlogEmbedded+","+backlogClient, "comma-separated modes to run, in order: embedded (the worker holds the broker), client (the worker connects to a broker in another process)")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Minute, "longest drain of one mode")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the chunk file and the brokers' data; default the system temporary directory")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	_ = cmd.RegisterFlagCompletionFunc("modes", cobra.FixedCompletions([]string{backlogEmbedded, backlogClient, backlogEmbedded + "," + backlogClient}, cobra.ShellCompDirectiveNoFileComp))
	cmd.RunE = func(*cobra.Command, []string) error {
		seen := map[string]bool{}
		var errs []error
		for m := range strings.SplitSeq(*modes, ",") {
			switch m = strings.TrimSpace(m); {
			case m == "":
			case m != backlogEmbedded && m != backlogClient:
				errs = append(errs, fmt.Errorf("bench backlog: unknown mode %q (embedded, client)", m))
			case seen[m]:
				errs = append(errs, fmt.Errorf("bench backlog: mode %q given twice", m))
			default:
				seen[m] = true
				cfg.Modes = append(cfg.Modes, m)
			}
		}
		if len(cfg.Modes) == 0 && len(errs) == 0 {
			errs = append(errs, errors.New("bench backlog: --modes names no mode"))
		}
		if cfg.Chunks < 1 {
			errs = append(errs, fmt.Errorf("bench backlog: --chunks must be at least 1, got %d", cfg.Chunks))
		}
		if cfg.Timeout <= 0 {
			errs = append(errs, fmt.Errorf("bench backlog: --timeout must be positive, got %s", cfg.Timeout))
		}
		return runBenchScenario(stdout, *asJSON, errs, func() (backlogBenchResult, error) { return runBacklogBench(ctx, cfg) }, printBacklogBench)
	}
	return cmd
}

// printBacklogBench prints a bench backlog result for a person.
func printBacklogBench(w io.Writer, res backlogBenchResult) {
	fmt.Fprintf(w, "Backlog drain: %d chunks queued, then one worker started\n", res.Chunks)
	fmt.Fprintf(w, "%-9s %10s %10s %10s %10s %12s %12s\n", "mode", "publish s", "startup s", "drain s", "docs/s", "peak RSS", "end RSS")
	for _, m := range res.Modes {
		fmt.Fprintf(w, "%-9s %10.1f %10.1f %10.1f %10.0f %12s %12s\n", m.Mode, m.PublishS, m.StartupS, m.DrainS, m.DocsPerS, mib(m.PeakRSS), mib(m.EndRSS))
	}
}
