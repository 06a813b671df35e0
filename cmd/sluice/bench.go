package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/bench"
)

const benchUsage = `Usage: sluice bench SCENARIO [flags]

Scenarios:
  astra   load a generated chunk file into an in-process AstraDB Data API double three ways:
          seed (one findOneAndReplace per chunk), astrapy (insertMany of 50, 20 at once),
          sluice (loader -> JetStream, fsync always -> worker -> group commit -> ack), and
          jetstream, the floor: the records published durably to JetStream and nothing else

Run "sluice bench SCENARIO -h" for its flags.
`

// cmdBench runs a benchmark scenario in this process and prints what it measured.
func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return usageError{"bench: name a scenario: astra"}
	}
	switch args[0] {
	case "astra":
		return benchAstra(ctx, args[1:], stdout, stderr, log)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, benchUsage)
		return flag.ErrHelp
	}
	return usageError{fmt.Sprintf("bench: unknown scenario %q (scenarios: astra)", args[0])}
}

func benchAstra(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("bench astra", flag.ContinueOnError)
	fs.SetOutput(stderr)
	chunks := fs.Int("chunks", 2000, "chunks in the generated file, one document each")
	latency := fs.Duration("latency", 20*time.Millisecond, "delay of the Data API double before it answers each request; 0 for none")
	runs := fs.Int("runs", 5, "timed runs of each mode")
	modes := fs.String("modes", strings.Join([]string{bench.ModeSeed, bench.ModeAstrapy, bench.ModeSluice, bench.ModeJetStream}, ","), "comma-separated modes to run, in order")
	dir := fs.String("dir", "", "directory for the working files and the broker's data (its disk decides the fsync cost); default the system temporary directory")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sluice bench astra [flags]\n\n"+
			"Loads a generated chunk file into the strict Data API double, which runs in this process\n"+
			"and shares the CPU with the broker, the loader and the worker, in each mode, and prints\n"+
			"docs/s per mode and the ratios c/a (sluice/seed) and c/b (sluice/astrapy); with the jetstream\n"+
			"mode, also the c/b no path through the broker could beat here (its durable publish alone\n"+
			"plus one write round trip).")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{"bench astra takes no arguments"}
	}
	cfg := bench.AstraConfig{Chunks: *chunks, Latency: *latency, Runs: *runs, Dir: *dir, Logger: log}
	for m := range strings.SplitSeq(*modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			cfg.Modes = append(cfg.Modes, m)
		}
	}
	var errs []error
	if *chunks < 1 {
		errs = append(errs, fmt.Errorf("bench astra: --chunks must be at least 1, got %d", *chunks))
	}
	if *runs < 1 {
		errs = append(errs, fmt.Errorf("bench astra: --runs must be at least 1, got %d", *runs))
	}
	switch {
	case *latency < 0:
		errs = append(errs, fmt.Errorf("bench astra: --latency must not be negative, got %s", *latency))
	case *latency == 0:
		cfg.Latency = -1 // the package's zero means its default
	}
	if len(cfg.Modes) == 0 {
		errs = append(errs, errors.New("bench astra: --modes names no mode"))
	} else {
		errs = append(errs, bench.AstraConfig{Modes: cfg.Modes}.Validate()) // unknown or repeated modes
	}
	if err := errors.Join(errs...); err != nil {
		return usageError{err.Error()}
	}
	res, err := bench.RunAstra(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	answers := "at once"
	if res.Latency > 0 {
		answers = "after " + res.Latency.String()
	}
	fmt.Fprintf(stdout, "AstraDB load: %d chunks, Data API double in this process answering %s\n", res.Chunks, answers)
	fmt.Fprintf(stdout, "%-9s %12s %5s %7s %9s %9s\n", "mode", "docs/s", "runs", "chunks", "ms/run", "cpu ms")
	for _, m := range res.Modes {
		cpu := "-"
		if m.CPUPerRun > 0 {
			cpu = fmt.Sprintf("%.1f", m.CPUPerRun.Seconds()*1000)
		}
		fmt.Fprintf(stdout, "%-9s %12.1f %5d %7d %9.1f %9s\n", m.Mode, m.DocsPerSec, m.Runs, m.Chunks,
			m.Elapsed.Seconds()*1000/float64(m.Runs), cpu)
	}
	if res.SluiceVsSeed > 0 {
		fmt.Fprintf(stdout, "c/a = %.2f (goal ≥ %g)\n", res.SluiceVsSeed, bench.GoalSluiceVsSeed)
	}
	if res.SluiceVsAstrapy > 0 {
		fmt.Fprintf(stdout, "c/b = %.2f (goal ≥ %g)\n", res.SluiceVsAstrapy, bench.GoalSluiceVsAstrapy)
	}
	if res.SluiceVsAstrapyCeiling > 0 {
		fmt.Fprintf(stdout, "c/b ceiling here = %.2f (astrapy's time over the durable publish alone plus one round trip)\n", res.SluiceVsAstrapyCeiling)
	}
	return nil
}
