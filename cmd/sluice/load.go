package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/schemas"
)

type loadSummary struct {
	JobID        string               `json:"job_id"`
	File         string               `json:"file"`
	State        pipeline.JobState    `json:"state"`
	Total        int64                `json:"total"`
	Written      int64                `json:"written"`
	Rejected     int64                `json:"rejected"`
	DeadLettered int64                `json:"dead_lettered"`
	Existing     bool                 `json:"existing,omitempty"`
	ElapsedMS    int64                `json:"elapsed_ms"`
	Rejections   []pipeline.ItemIssue `json:"rejections,omitempty"`
	Warnings     []pipeline.ItemIssue `json:"warnings,omitempty"`
	Error        string               `json:"error,omitempty"`
}

func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	bindCommon(fs, &c)
	env := fs.String("env", envOr("SLUICE_ENV", "dev"), "environment: dev, test or prod")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	force := fs.Bool("force", false, "load again even if the same file was loaded before")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sluice load [flags] FILE...\n\nEach file becomes one job; load waits until every job ends.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		return usageError{"load: name at least one FILE"}
	}
	if !schemas.ValidEnv(*env) {
		return usageError{fmt.Sprintf("load: --env must be dev, test or prod, not %q", *env)}
	}
	for _, f := range fs.Args() {
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
	loader, err := pipeline.NewLoader(pipeline.LoaderConfig{JS: b.js, Jobs: b.jobs, SpoolDir: c.DataDir + "/spool"})
	if err != nil {
		return err
	}
	bar := newProgressBar(stderr, !*asJSON)
	summaries := make([]loadSummary, len(fs.Args()))
	var wg sync.WaitGroup
	for i, path := range fs.Args() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			summaries[i] = loadOne(ctx, loader, b.jobs, path, *env, *force, bar)
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
	return report(stdout, summaries, time.Since(start), *asJSON)
}

func loadOne(ctx context.Context, l *pipeline.Loader, jobs *pipeline.JobStore, path, env string, force bool, bar *progressBar) loadSummary {
	start := time.Now()
	s := loadSummary{File: path}
	res, err := l.Load(ctx, pipeline.LoadRequest{Env: env, Path: path, Force: force})
	s.JobID, s.Total, s.Rejected, s.Existing = res.JobID, res.Total, res.Rejected, res.Existing
	if err != nil {
		s.Error = err.Error()
		s.State = "failed"
		return s
	}
	job, err := pipeline.Wait(ctx, jobs, res.JobID, func(j pipeline.Job) { bar.update(path, j) })
	if err != nil {
		s.Error = fmt.Sprintf("wait for job %s: %v", res.JobID, err)
		s.State = job.State
		return s
	}
	s.State, s.Total, s.Written, s.Rejected, s.DeadLettered = job.State, job.Total, job.Written, job.Rejected, job.DeadLettered
	s.Rejections, s.Warnings = job.Rejections, job.Warnings
	s.ElapsedMS = time.Since(start).Milliseconds()
	if f := job.Failure; job.State == pipeline.JobFailed && f != nil {
		s.Error = "job " + res.JobID + " failed: " + f.Reason
	}
	return s
}

func report(w io.Writer, sums []loadSummary, elapsed time.Duration, asJSON bool) error {
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
			if s.Error != "" {
				fmt.Fprintf(w, "%s: FAILED: %s\n", s.File, s.Error)
				continue
			}
			again := ""
			if s.Existing {
				again = " (already loaded; use --force to load again)"
			}
			fmt.Fprintf(w, "%s: job %s %s%s — %d total, %d written, %d rejected, %d dead-lettered (%.1fs)\n",
				s.File, s.JobID, s.State, again, s.Total, s.Written, s.Rejected, s.DeadLettered, float64(s.ElapsedMS)/1000)
			for _, r := range s.Rejections {
				id := ""
				if r.ID != "" {
					id = " (" + r.ID + ")"
				}
				fmt.Fprintf(w, "  rejected item %d%s: %s\n", r.Index, id, r.Reason)
			}
			for _, r := range s.Warnings {
				fmt.Fprintf(w, "  warning, item %d (%s): %s\n", r.Index, r.ID, r.Reason)
			}
		}
		fmt.Fprintf(w, "%d job(s) in %.1fs\n", len(sums), elapsed.Seconds())
	}
	switch {
	case failed:
		return errors.New("some files failed to load")
	case rejected:
		return errRejected
	}
	return nil
}

// progressBar draws one status line per update on a terminal, and nothing elsewhere.
type progressBar struct {
	w       io.Writer
	enabled bool
	mu      sync.Mutex // guards last
	last    time.Time
}

func newProgressBar(w io.Writer, want bool) *progressBar {
	enabled := false
	if f, ok := w.(*os.File); ok && want {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			enabled = true
		}
	}
	return &progressBar{w: w, enabled: enabled}
}

func (p *progressBar) update(file string, j pipeline.Job) {
	if !p.enabled {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < 100*time.Millisecond && !j.State.Done() {
		return
	}
	p.last = time.Now()
	done := j.Written + j.DeadLettered
	total := j.Published
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	const width = 30
	filled := int(pct / 100 * width)
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < filled {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\r%-30.30s [%s] %5.1f%% %d/%d", file, bar, pct, done, total)
}

func (p *progressBar) done() {
	if p.enabled {
		fmt.Fprintln(p.w)
	}
}
