package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
)

type loadSummary struct {
	JobID        string           `json:"job_id"`
	File         string           `json:"file"`
	State        jobs.State       `json:"state"`
	Total        int64            `json:"total"`
	Written      int64            `json:"written"`
	Rejected     int64            `json:"rejected"`
	DeadLettered int64            `json:"dead_lettered"`
	Existing     bool             `json:"existing,omitempty"`
	ElapsedMS    int64            `json:"elapsed_ms"`
	Rejections   []jobs.ItemIssue `json:"rejections,omitempty"`
	Warnings     []jobs.ItemIssue `json:"warnings,omitempty"`
	Error        string           `json:"error,omitempty"`
	// Interrupted is set when a signal stopped the load or the wait for this file.
	Interrupted bool `json:"interrupted,omitempty"`
}

// loadExample is the load command's examples; the docs test runs them.
const loadExample = `  sluice load chunks.jsonl                      # one job, on the embedded default or a running serve
  sluice load --env test passA.json passB.json  # one job per file, all waited for
  sluice load chunks.jsonl --json               # the summary as one JSON object
  sluice load --force chunks.jsonl              # publish a file loaded before once more`

func newLoadCmd(c *cli) *cobra.Command {
	var (
		cfg    config
		env    string
		asJSON bool
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "load [flags] FILE...",
		Short: "Load chunk or graph files as jobs and wait for them",
		Long: `Each file becomes one job; load waits until every job ends and prints a summary (a progress
bar on a terminal). With a sluice serve running on the same data directory (or NATS_URL set)
it publishes there; otherwise it runs the broker, the stores and the workers in this process.

Interrupted (Ctrl-C), it exits 130: run the same command again to resume — the file's job is
recognised and what was already published is not published twice. --force is only for
loading a file again on purpose.

Exit status: 0 all written, 3 some items rejected or dead-lettered, 1 failure, 2 bad usage,
130 interrupted.`,
		Example: loadExample,
		Args:    minArgs(1, "load: name at least one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmdLoad(c, cfg, args, env, asJSON, force)
		},
	}
	fs := cmd.Flags()
	bindCommon(fs, &cfg)
	bindProvision(fs, &cfg.Provision)
	fs.StringVar(&env, "env", "dev", "environment: dev, test or prod")
	bindEnv(fs, "env", "SLUICE_ENV")
	fs.BoolVar(&asJSON, "json", false, "print the summary as one JSON object")
	fs.BoolVar(&force, "force", false, "load again even if the same file was loaded before")
	_ = cmd.RegisterFlagCompletionFunc("env", cobra.FixedCompletions(envNames(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func cmdLoad(cl *cli, c config, paths []string, env string, asJSON, force bool) error {
	ctx, stdout, stderr, log := cl.ctx, cl.stdout, cl.stderr, cl.log
	if !schemas.ValidEnv(env) {
		return usageError{fmt.Sprintf("load: --env must be dev, test or prod, not %q", env)}
	}
	if _, err := c.Provision.config(); err != nil {
		return err
	}
	for _, f := range paths {
		if st, err := os.Stat(f); err != nil || st.IsDir() {
			return usageError{fmt.Sprintf("load: %s is not a readable file", f)}
		}
	}
	start := time.Now()
	b, err := openBroker(ctx, c, log, true)
	if err != nil {
		return err
	}
	defer b.close()

	// Without a running server, this process is the worker too.
	var workerDone chan error
	workerCtx, stopWorker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorker()
	if !b.remote {
		sk, err := openSinks(ctx, c, log)
		if err != nil {
			return err
		}
		defer sk.close()
		g, err := openGraph(ctx, c, nil)
		if err != nil {
			return err
		}
		defer g.Close()
		// The key lets this worker carry out a rollback the API left pending on the stream.
		key, err := commandKey(c, log)
		if err != nil {
			return err
		}
		w, err := pipeline.NewWorker(pipeline.WorkerConfig{JS: b.js, Streams: b.streams, Sink: sk.docs, SinkName: sk.name, Graph: g, Key: key, Logger: log})
		if err != nil {
			return err
		}
		workerDone = make(chan error, 1)
		go func() { workerDone <- w.Run(workerCtx) }()
	}
	loader, err := intake.NewLoader(intake.LoaderConfig{JS: b.js, Jobs: b.jobs, SpoolDir: c.DataDir + "/spool"})
	if err != nil {
		return err
	}
	bar := newProgressBar(stderr, !asJSON)
	summaries := make([]loadSummary, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			summaries[i] = loadOne(ctx, loader, b.jobs, path, env, force, bar)
		}()
	}
	wg.Wait()
	bar.done()
	if workerDone != nil {
		stopWorker()
		if err := <-workerDone; err != nil {
			log.Warn("worker drain", "err", err)
		}
	}
	if slices.ContainsFunc(summaries, func(s loadSummary) bool { return s.Interrupted }) {
		// Stopped by a signal: what was published stays, and the job is recognised on the
		// next run, which publishes only what is missing. Never suggest --force here: it
		// would publish everything again.
		if err := report(stdout, summaries, time.Since(start), asJSON, rejectionLimit(stdout)); err != nil && !errors.Is(err, errRejected) && !errors.Is(err, errLoadFailed) {
			return err
		}
		fmt.Fprintln(stderr, "sluice load: "+interruptedMsg)
		return errInterrupted
	}
	return report(stdout, summaries, time.Since(start), asJSON, rejectionLimit(stdout))
}

// errLoadFailed is report's error when a file failed to load.
var errLoadFailed = errors.New("some files failed to load")

func loadOne(ctx context.Context, l *intake.Loader, jobStore *jobs.Store, path, env string, force bool, bar *progressBar) loadSummary {
	start := time.Now()
	s := loadSummary{File: path}
	res, err := l.Load(ctx, intake.LoadRequest{Env: env, Path: path, Force: force})
	s.JobID, s.Total, s.Rejected, s.Existing = res.JobID, res.Total, res.Rejected, res.Existing
	if err != nil && ctx.Err() != nil {
		s.Error, s.Interrupted, s.Existing = interruptedMsg, true, false
		return s
	}
	if err != nil {
		s.Error = err.Error()
		s.State = "failed"
		return s
	}
	job, err := jobs.Wait(ctx, jobStore, res.JobID, func(j jobs.Job) { bar.update(path, j) })
	if err != nil && ctx.Err() != nil {
		s.Error, s.Interrupted, s.Existing, s.State = interruptedMsg, true, false, job.State
		return s
	}
	if err != nil {
		s.Error = fmt.Sprintf("wait for job %s: %v", res.JobID, err)
		s.State = job.State
		return s
	}
	s.State, s.Total, s.Written, s.Rejected, s.DeadLettered = job.State, job.Total, job.Written, job.Rejected, job.DeadLettered
	s.Rejections, s.Warnings = job.Rejections, job.Warnings
	s.ElapsedMS = time.Since(start).Milliseconds()
	if f := job.Failure; job.State == jobs.JobFailed && f != nil {
		s.Error = "job " + res.JobID + " failed: " + f.Reason
	}
	return s
}

func report(w io.Writer, sums []loadSummary, elapsed time.Duration, asJSON bool, limit int) error {
	failed, rejected := false, false
	for _, s := range sums {
		if s.Error != "" {
			failed = true
		}
		if s.Rejected+s.DeadLettered > 0 {
			rejected = true
		}
	}
	if asJSON {
		out := struct {
			Jobs      []loadSummary `json:"jobs"`
			ElapsedMS int64         `json:"elapsed_ms"`
		}{sums, elapsed.Milliseconds()}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		for _, s := range sums {
			switch {
			case s.Interrupted:
				fmt.Fprintf(w, "%s: %s\n", s.File, s.Error)
				continue
			case s.Error != "":
				fmt.Fprintf(w, "%s: FAILED: %s\n", s.File, s.Error)
				continue
			}
			again := ""
			if s.Existing {
				again = " (already loaded; use --force to load again)"
			}
			fmt.Fprintf(w, "%s: job %s %s%s — %d total, %d written, %d rejected, %d dead-lettered (%.1fs)\n",
				s.File, s.JobID, s.State, again, s.Total, s.Written, s.Rejected, s.DeadLettered, float64(s.ElapsedMS)/1000)
			printRejections(w, s.Rejections, s.Rejected, limit)
			for _, r := range s.Warnings {
				fmt.Fprintf(w, "  warning, item %d (%s): %s\n", r.Index, r.ID, r.Reason)
			}
		}
		fmt.Fprintf(w, "%d job(s) in %.1fs\n", len(sums), elapsed.Seconds())
	}
	switch {
	case failed:
		return errLoadFailed
	case rejected:
		return errRejected
	}
	return nil
}
