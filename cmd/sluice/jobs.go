package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
)

// cmdJobs runs "sluice jobs ls|show|wait|rollback" against a running API.
func cmdJobs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"jobs: name a subcommand: ls, show, wait or rollback"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("jobs "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := bindAPI(fs, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	var state, env, cursor *string
	var limit *int
	var wait *bool
	switch sub {
	case "ls":
		state = fs.String("state", "", "only jobs in this state (pending, running, completed, completed_with_errors, rolled_back, failed)")
		env = fs.String("env", "", "only jobs of this environment")
		limit = fs.Int("limit", 50, "jobs per page")
		cursor = fs.String("cursor", "", "page cursor from a previous listing")
	case "show", "wait":
	case "rollback":
		wait = fs.Bool("wait", true, "wait until the rollback finished")
	default:
		return usageError{fmt.Sprintf("jobs: unknown subcommand %q (ls, show, wait, rollback)", sub)}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if sub != "ls" && fs.NArg() != 1 {
		return usageError{fmt.Sprintf("jobs %s: name one job id", sub)}
	}
	switch sub {
	case "ls":
		q := url.Values{}
		for k, v := range map[string]string{"state": *state, "env": *env, "cursor": *cursor, "limit": strconv.Itoa(*limit)} {
			if v != "" {
				q.Set(k, v)
			}
		}
		var page struct {
			Jobs       []pipeline.Job `json:"jobs"`
			NextCursor string         `json:"next_cursor"`
		}
		if err := api.do(ctx, "GET", "/v1/jobs", q, nil, &page); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, page)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tENV\tSTATE\tTOTAL\tWRITTEN\tREJECTED\tDEAD\tCREATED\tFILE")
		for _, j := range page.Jobs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", j.JobID, j.Env, j.State, j.Total, j.Written, j.Rejected, j.DeadLettered, j.CreatedAt.Local().Format(time.DateTime), j.File)
		}
		_ = tw.Flush()
		if page.NextCursor != "" {
			fmt.Fprintf(stdout, "more: sluice jobs ls --cursor %s\n", page.NextCursor)
		}
		return nil
	case "show":
		var job pipeline.Job
		if err := api.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(fs.Arg(0)), nil, nil, &job); err != nil {
			return err
		}
		return showJob(stdout, job, *asJSON)
	case "wait":
		job, err := waitJobAPI(ctx, api, fs.Arg(0), newProgressBar(stderr, !*asJSON))
		if err != nil {
			return err
		}
		if err := showJob(stdout, job, *asJSON); err != nil {
			return err
		}
		if job.State == pipeline.JobFailed {
			return fmt.Errorf("job %s failed", job.JobID)
		}
		if job.Rejected+job.DeadLettered > 0 {
			return errRejected
		}
		return nil
	default: // rollback
		var job pipeline.Job
		// Rolling back again is harmless: it deletes the job's documents, and those already
		// deleted stay deleted (JobStore.RequestRollback keeps the first request).
		if err := api.doIdempotent(ctx, "DELETE", "/v1/jobs/"+url.PathEscape(fs.Arg(0)), nil, nil, &job); err != nil {
			return err
		}
		if *wait {
			var err error
			if job, err = waitJobAPI(ctx, api, fs.Arg(0), nil); err != nil {
				return err
			}
		}
		return showJob(stdout, job, *asJSON)
	}
}

// waitJobAPI follows a job's event stream until it ends.
func waitJobAPI(ctx context.Context, api *apiClient, id string, bar *progressBar) (pipeline.Job, error) {
	var last pipeline.Job
	err := api.events(ctx, "/v1/jobs/"+url.PathEscape(id)+"/events", func(event string, data []byte) bool {
		if err := json.Unmarshal(data, &last); err != nil {
			return false
		}
		if bar != nil {
			bar.update(last.File, last)
		}
		return event == "done"
	})
	if bar != nil {
		bar.done()
	}
	if err != nil {
		return last, err
	}
	// The stream carries the hot record; read the whole job (rejections) once.
	var job pipeline.Job
	if err := api.do(ctx, "GET", "/v1/jobs/"+url.PathEscape(id), nil, nil, &job); err != nil {
		return last, err
	}
	return job, nil
}

func showJob(w io.Writer, j pipeline.Job, asJSON bool) error {
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
		fmt.Fprintf(tw, "rollback\t%s by %s, %d documents deleted %s\n", r.State, r.RequestedBy, r.Deleted, r.Error)
	}
	_ = tw.Flush()
	for _, r := range j.Rejections {
		fmt.Fprintf(w, "  rejected item %d %s: %s\n", r.Index, r.ID, r.Reason)
	}
	for _, r := range j.Warnings {
		fmt.Fprintf(w, "  warning, item %d %s: %s\n", r.Index, r.ID, r.Reason)
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
