package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/client"
)

// newJobsCmd is "sluice jobs" and its subcommands, which talk to the API.
func newJobsCmd(c *cli) *cobra.Command {
	af := &apiFlags{}
	cmd := groupCmd("jobs", "Inspect, follow and roll back jobs (through the API)",
		"Inspect, follow and roll back jobs through the API."+apiEnvHelp,
		`  sluice jobs ls --state running
  sluice jobs show JOB_ID --json
  sluice jobs wait JOB_ID --timeout 10m
  sluice jobs rollback JOB_ID`, "subcommand", "ls", "show", "wait", "rollback")
	bindAPIFlags(cmd.PersistentFlags(), af)
	cmd.AddCommand(newJobsLsCmd(c, af), newJobsShowCmd(c, af), newJobsWaitCmd(c, af), newJobsRollbackCmd(c, af))
	return cmd
}

// newJobsLsCmd is "sluice jobs ls": one page of GET /v1/jobs.
func newJobsLsCmd(c *cli, af *apiFlags) *cobra.Command {
	var state, env, cursor string
	var limit int
	ls := &cobra.Command{
		Use:     "ls [flags]",
		Short:   "List jobs, newest first",
		Long:    "List jobs, newest first, a page at a time." + apiEnvHelp,
		Example: "  sluice jobs ls\n  sluice jobs ls --state completed_with_errors --env prod --limit 20\n  sluice jobs ls --cursor CURSOR",
		Args:    noArgs("jobs ls takes no arguments"),
		RunE: func(*cobra.Command, []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"state": state, "env": env, "cursor": cursor, "limit": strconv.Itoa(limit)} {
				if v != "" {
					q.Set(k, v)
				}
			}
			var page struct {
				Jobs       []jobs.Job `json:"jobs"`
				NextCursor string     `json:"next_cursor"`
			}
			if printed, err := af.get(c, "/v1/jobs", q, &page); printed || err != nil {
				return err
			}
			printTable(c.stdout, "JOB\tENV\tSTATE\tTOTAL\tWRITTEN\tREJECTED\tDEAD\tCREATED\tFILE", page.Jobs, func(j jobs.Job) string {
				return fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s", j.JobID, j.Env, j.State, j.Total, j.Written, j.Rejected, j.DeadLettered,
					j.CreatedAt.Local().Format(time.DateTime), j.File)
			})
			printMore(c.stdout, "sluice jobs ls", page.NextCursor)
			return nil
		},
	}
	ls.Flags().StringVar(&state, "state", "", "only jobs in this state ("+strings.Join(jobStates(), ", ")+")")
	ls.Flags().StringVar(&env, "env", "", "only jobs of this environment (dev, test, prod)")
	bindPaging(ls, &limit, &cursor, 50, "jobs")
	_ = ls.RegisterFlagCompletionFunc("state", cobra.FixedCompletions(jobStates(), cobra.ShellCompDirectiveNoFileComp))
	_ = ls.RegisterFlagCompletionFunc("env", cobra.FixedCompletions(envNames(), cobra.ShellCompDirectiveNoFileComp))
	return ls
}

// newJobsShowCmd is "sluice jobs show": GET /v1/jobs/{id}.
func newJobsShowCmd(c *cli, af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "show [flags] JOB_ID",
		Short:             "Show one job: counts, state, rejections",
		Long:              "Show one job: its counts, state, failure, rollback and rejected items." + apiEnvHelp,
		Example:           "  sluice jobs show JOB_ID\n  sluice jobs show JOB_ID --json",
		Args:              exactArgs(1, "jobs show: name one job id"),
		ValidArgsFunction: completeJobIDs(c, 1),
		RunE: func(_ *cobra.Command, args []string) error {
			var job jobs.Job
			if printed, err := af.get(c, "/v1/jobs/"+url.PathEscape(args[0]), nil, &job); printed || err != nil {
				return err
			}
			return showJob(c.stdout, job, false, rejectionLimit(c.stdout))
		},
	}
}

// newJobsWaitCmd is "sluice jobs wait": follow a job until it ends (waitJobAPI).
func newJobsWaitCmd(c *cli, af *apiFlags) *cobra.Command {
	var timeout time.Duration
	wait := &cobra.Command{
		Use:   "wait [flags] JOB_ID",
		Short: "Follow a job until it ends",
		Long: `Follow a job's event stream with a progress bar until the job reaches a final state
(completed, completed_with_errors, superseded, rolled_back, failed, with no rollback pending), then show it.
When the stream drops (a restart, a proxy's timeout) it reads the job again and reconnects; it
never returns while the job is still running. With --timeout it fails (exit 1) if the job has
not ended by then.

Exit status: 0 completed, 3 completed with rejected or dead-lettered items, 1 failed, timed
out or unreachable, 130 interrupted.` + apiEnvHelp,
		Example:           "  sluice jobs wait JOB_ID\n  sluice jobs wait JOB_ID --timeout 30m --json",
		Args:              exactArgs(1, "jobs wait: name one job id"),
		ValidArgsFunction: completeJobIDs(c, 1),
		RunE: func(_ *cobra.Command, args []string) error {
			if timeout < 0 {
				return usageError{fmt.Sprintf("jobs wait: --timeout %s is negative", timeout)}
			}
			api, err := af.client(c)
			if err != nil {
				return err
			}
			job, err := waitJobAPI(c.ctx, api, args[0], newProgressBar(c.stderr, !af.asJSON), timeout, c.stderr)
			if err != nil {
				return err
			}
			if err := showJob(c.stdout, job, af.asJSON, rejectionLimit(c.stdout)); err != nil {
				return err
			}
			if job.State == jobs.JobFailed {
				return fmt.Errorf("job %s failed", job.JobID)
			}
			if job.Rejected+job.DeadLettered > 0 {
				return errRejected
			}
			return nil
		},
	}
	wait.Flags().DurationVar(&timeout, "timeout", 0, "fail if the job has not ended after this long; 0 waits as long as it takes")
	bindEnv(wait.Flags(), "timeout", "SLUICE_WAIT_TIMEOUT")
	_ = wait.RegisterFlagCompletionFunc("timeout", cobra.NoFileCompletions)
	return wait
}

// newJobsRollbackCmd is "sluice jobs rollback": DELETE /v1/jobs/{id}, then (--wait) follow it.
func newJobsRollbackCmd(c *cli, af *apiFlags) *cobra.Command {
	var waitRollback, restorePrevious, dryRun bool
	rollback := &cobra.Command{
		Use:   "rollback [flags] JOB_ID",
		Short: "Delete every document a job wrote (admin)",
		Long: `Roll a job back (DELETE /v1/jobs/{id}, admin scope): delete every document it wrote, then,
with --wait (the default), follow it until the rollback is done. Rolling back again is
harmless. --dry-run changes nothing (admin, as the rollback): it prints what the rollback would do now
(GET /v1/jobs/{id}/rollback): documents deleted or restored, the earlier jobs whose documents
would go with them, and whether the rollback can be asked now.` + apiEnvHelp,
		Example:           "  sluice jobs rollback JOB_ID --dry-run\n  sluice jobs rollback JOB_ID\n  sluice jobs rollback JOB_ID --restore-previous\n  sluice jobs rollback JOB_ID --wait=false --json",
		Args:              exactArgs(1, "jobs rollback: name one job id"),
		ValidArgsFunction: completeJobIDs(c, 1),
		RunE: func(_ *cobra.Command, args []string) error {
			api, err := af.client(c)
			if err != nil {
				return err
			}
			if dryRun {
				var p httpapi.RollbackPreview
				q := url.Values{"restore_previous": {strconv.FormatBool(restorePrevious)}}
				if err := api.Do(c.ctx, "GET", "/v1/jobs/"+url.PathEscape(args[0])+"/rollback", q, nil, &p); err != nil {
					return err
				}
				return showRollbackPreview(c.stdout, p, af.asJSON)
			}
			var job jobs.Job
			// Rolling back again is harmless: it deletes the job's documents, and those already
			// deleted stay deleted (JobStore.RequestRollback keeps the first request).
			var q url.Values
			if restorePrevious {
				q = url.Values{"restore_previous": {"true"}}
			}
			if err := api.DoIdempotent(c.ctx, "DELETE", "/v1/jobs/"+url.PathEscape(args[0]), q, nil, &job); err != nil {
				return err
			}
			if waitRollback {
				if job, err = waitJobAPI(c.ctx, api, args[0], nil, 0, c.stderr); err != nil {
					return err
				}
			}
			return showJob(c.stdout, job, af.asJSON, rejectionLimit(c.stdout))
		},
	}
	rollback.Flags().BoolVar(&waitRollback, "wait", true, "wait until the rollback finished")
	rollback.Flags().BoolVar(&restorePrevious, "restore-previous", false,
		"put back the version each document replaced instead of deleting it (the embedded store keeps them; AstraDB refuses)")
	rollback.Flags().BoolVar(&dryRun, "dry-run", false, "change nothing: print what the rollback would do now")
	return rollback
}

// showRollbackPreview prints what a rollback would do (sluice jobs rollback --dry-run).
func showRollbackPreview(w io.Writer, p httpapi.RollbackPreview, asJSON bool) error {
	if asJSON {
		return printJSON(w, p)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	mode := "delete"
	if p.RestorePrevious {
		mode = "restore previous versions"
		if !p.RestoreSupported {
			mode += " (unsupported by this store)"
		}
	}
	fmt.Fprintf(tw, "job\t%s\nenv\t%s\nstate\t%s\nrollback\t%s (dry run: nothing changed)\n", p.JobID, p.Env, p.State, mode)
	more := ""
	if p.Truncated {
		more = " (at least: the store stopped counting)"
	}
	fmt.Fprintf(tw, "documents\t%d the job wrote last: %d would be deleted, %d restored%s\n", p.Documents, p.Deleted, p.Restored, more)
	for _, sj := range p.SupersededJobs {
		fmt.Fprintf(tw, "superseded\tjob %s: %d of its documents would be deleted\n", sj.JobID, sj.Documents)
	}
	if p.CanRollBack {
		fmt.Fprintf(tw, "can roll back\tyes\n")
	} else {
		fmt.Fprintf(tw, "can roll back\tno: %s\n", p.Reason)
	}
	return tw.Flush()
}

// Reconnecting a dropped job event stream: the first wait, doubling up to the last, and how
// many reconnects in a row may fail (nothing received) before wait gives up — about 90 s of
// trying, longer than a pod restart or a rolling update of the API takes.
const (
	reconnectFirstWait = 500 * time.Millisecond
	reconnectMaxWait   = 10 * time.Second
	maxReconnects      = 12
)

// waitJobAPI follows a job's event stream until the job is settled (a final state, no rollback
// pending) and returns the whole record. A stream that ends or breaks before (or an API that
// answers 5xx or not at all meanwhile) is not an end: the job is read again and the stream
// opened again, after a wait (reconnectFirstWait doubling to reconnectMaxWait), up to
// maxReconnects times in a row without an answer. An unknown job or an API that cannot be
// reached at the start fails at once. The job route's event ids count from 1 on
// each connection and it ignores Last-Event-ID; each new stream starts with the job's current
// record, so nothing is missed. timeout > 0 bounds the whole wait: past it the error says the
// job's last state. Reconnects are announced on stderr.
func waitJobAPI(ctx context.Context, api *client.Client, id string, bar *progressBar, timeout time.Duration, stderr io.Writer) (jobs.Job, error) {
	parent := ctx
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	f := &jobFollower{api: api, id: id, path: "/v1/jobs/" + url.PathEscape(id), bar: bar, stderr: stderr}
	job, err := f.follow(ctx)
	if err == nil {
		return job, nil
	}
	if bar != nil {
		bar.done()
	}
	state := cmp.Or(string(f.last.State), "unknown")
	switch {
	case parent.Err() != nil:
		fmt.Fprintf(stderr, "sluice: job %s is still %s: %s\n", id, state, interruptedMsg)
		return f.last, errInterrupted
	case ctx.Err() != nil:
		return f.last, fmt.Errorf("job %s is still %s after %s (--timeout)", id, state, timeout)
	}
	return f.last, err
}

// jobFollower follows one job for waitJobAPI; last is the job's last record seen.
type jobFollower struct {
	api      *client.Client
	id, path string
	bar      *progressBar // nil: none
	stderr   io.Writer
	last     jobs.Job
}

// follow returns the job once settled, or the error that ended the wait.
func (f *jobFollower) follow(ctx context.Context) (jobs.Job, error) {
	// Read the job first: an unknown job or an API that cannot be reached fails at once, and a
	// job that has ended needs no stream.
	if err := f.api.Do(ctx, "GET", f.path, nil, nil, &f.last); err != nil {
		return f.last, err
	}
	if f.last.Settled() {
		return f.last, nil
	}
	if settled, err := f.stream(ctx); err != nil || settled {
		return f.last, err
	}
	if f.bar != nil {
		f.bar.done()
	}
	// The stream carries the hot record; read the whole job (rejections) once.
	var job jobs.Job
	if err := f.api.Do(ctx, "GET", f.path, nil, nil, &job); err != nil {
		return f.last, err
	}
	return job, nil
}

// stream follows the job's event stream until it says the job is settled (nil, false), or,
// when the job is found settled by reading it between reconnects, (nil, true) with f.last the
// whole record. A stream that ends or breaks (or a 5xx) is reconnected after a wait, up to
// maxReconnects times in a row without an event; a 4xx ends the wait at once.
func (f *jobFollower) stream(ctx context.Context) (settled bool, err error) {
	wait := reconnectFirstWait
	for failures := 0; ; {
		got := false
		err := f.api.Events(ctx, f.path+"/events", func(event string, data []byte) bool {
			if err := json.Unmarshal(data, &f.last); err != nil {
				return false
			}
			got = true
			if f.bar != nil {
				f.bar.update(f.last.File, f.last)
			}
			return event == "done" || f.last.Settled()
		})
		if err == nil {
			return false, nil
		}
		var ae *client.Error
		if ctx.Err() != nil || errors.As(err, &ae) && ae.Status < 500 {
			return false, err // 404 no such job, 401, 403: waiting again will not help
		}
		if got {
			failures, wait = 0, reconnectFirstWait
		}
		if failures++; failures > maxReconnects {
			return false, fmt.Errorf("follow job %s: gave up after %d reconnects: %w", f.id, maxReconnects, err)
		}
		// Read the job again: it may have ended while the stream was down.
		var job jobs.Job
		if f.api.Do(ctx, "GET", f.path, nil, nil, &job) == nil {
			f.last = job
			if job.Settled() {
				return true, nil
			}
		}
		if f.bar != nil {
			f.bar.done()
		}
		fmt.Fprintf(f.stderr, "sluice: job %s: event stream ended (%v) while %s; reconnecting in %s\n", f.id, err, cmp.Or(string(f.last.State), "unknown"), wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		}
		wait = min(2*wait, reconnectMaxWait)
	}
}

func showJob(w io.Writer, j jobs.Job, asJSON bool, limit int) error {
	if asJSON {
		return printJSON(w, j)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\nenv\t%s\nstate\t%s\nfile\t%s (%s)\n", j.JobID, j.Env, j.State, j.File, j.Format)
	fmt.Fprintf(tw, "items\t%d total, %d published, %d written, %d rejected, %d dead-lettered\n", j.Total, j.Published, j.Written, j.Rejected, j.DeadLettered)
	fmt.Fprintf(tw, "created\t%s\n", j.CreatedAt.Local().Format(time.DateTime))
	if j.CompletedAt != nil {
		fmt.Fprintf(tw, "completed\t%s (%s)\n", j.CompletedAt.Local().Format(time.DateTime), j.CompletedAt.Sub(j.CreatedAt).Round(time.Millisecond))
	}
	if f := j.Failure; f != nil {
		fmt.Fprintf(tw, "failed\t%s: %s\n", f.At.Local().Format(time.DateTime), f.Reason)
	}
	if r := j.Rollback; r != nil {
		fmt.Fprintf(tw, "rollback\t%s by %s, %d documents deleted, %d restored %s\n", r.State, r.RequestedBy, r.Deleted, r.Restored, r.Error)
		for _, sj := range r.SupersededJobs {
			fmt.Fprintf(tw, "superseded\tjob %s: %d of its documents deleted\n", sj.JobID, sj.Documents)
		}
		if r.SupersededTruncated {
			fmt.Fprintf(tw, "superseded\t(more jobs than listed)\n")
		}
	}
	if sp := j.Superseded; sp != nil {
		for _, by := range sp.By {
			fmt.Fprintf(tw, "superseded by\trollback of job %s: %d documents deleted\n", by.JobID, by.Documents)
		}
	}
	_ = tw.Flush()
	printRejections(w, j.Rejections, j.Rejected, limit)
	for _, r := range j.Warnings {
		fmt.Fprintf(w, "  warning, item %d %s: %s\n", r.Index, r.ID, r.Reason)
	}
	return nil
}
