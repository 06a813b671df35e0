package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/client"
)

// dlqFilter is the filter flags of dlq ls, replay and purge.
type dlqFilter struct {
	job, subject, class, since, until string
}

func (f *dlqFilter) bind(cmd *cobra.Command, c *cli) {
	fs := cmd.Flags()
	fs.StringVar(&f.job, "job", "", "only dead letters of this job")
	fs.StringVar(&f.subject, "subject", "", "only dead letters first published on this subject (wildcards allowed)")
	fs.StringVar(&f.class, "error-class", "", "only this error class ("+strings.Join(errorClasses(), ", ")+")")
	fs.StringVar(&f.since, "since", "", "only dead letters stored at or after this RFC 3339 time")
	fs.StringVar(&f.until, "until", "", "only dead letters stored before this RFC 3339 time")
	_ = cmd.RegisterFlagCompletionFunc("job", completeJobIDs(c, -1))
	_ = cmd.RegisterFlagCompletionFunc("subject", completeSubjects(c))
	_ = cmd.RegisterFlagCompletionFunc("error-class", cobra.FixedCompletions(errorClasses(), cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("since", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("until", cobra.NoFileCompletions)
}

// query is the filter as the API's query parameters; empty when no filter flag is given.
func (f *dlqFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"job": f.job, "subject": f.subject, "error_class": f.class, "since": f.since, "until": f.until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// newDLQCmd is "sluice dlq" and its subcommands, which talk to the API.
func newDLQCmd(c *cli) *cobra.Command {
	af := &apiFlags{}
	cmd := groupCmd("dlq", "Inspect, replay and delete dead letters (through the API)",
		"Inspect, replay and delete dead letters through the API."+apiEnvHelp,
		`  sluice dlq ls --error-class validation
  sluice dlq show DEAD_LETTER_ID
  sluice dlq replay --dry-run --job JOB_ID
  sluice dlq delete DEAD_LETTER_ID
  sluice dlq purge --error-class validation --yes`, "subcommand", "ls", "show", "replay", "purge", "delete")
	bindAPIFlags(cmd.PersistentFlags(), af)
	cmd.AddCommand(newDLQLsCmd(c, af), newDLQShowCmd(c, af), newDLQReplayCmd(c, af), newDLQPurgeCmd(c, af), newDLQDeleteCmd(c, af))
	return cmd
}

// newDLQLsCmd is "sluice dlq ls": one page of GET /v1/dlq.
func newDLQLsCmd(c *cli, af *apiFlags) *cobra.Command {
	var filter dlqFilter
	var limit int
	var cursor string
	ls := &cobra.Command{
		Use:     "ls [flags]",
		Short:   "List dead letters, oldest first",
		Long:    "List dead letters, oldest first, a page at a time, optionally filtered." + apiEnvHelp,
		Example: "  sluice dlq ls\n  sluice dlq ls --job JOB_ID --error-class transient --json\n  sluice dlq ls --since 2025-01-02T15:04:05Z --limit 20",
		Args:    noArgs("dlq ls takes no arguments"),
		RunE: func(*cobra.Command, []string) error {
			q := filter.query()
			q.Set("limit", strconv.Itoa(limit))
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page struct {
				Entries    []httpapi.DeadLetter `json:"entries"`
				NextCursor *string              `json:"next_cursor"`
			}
			if printed, err := af.get(c, "/v1/dlq", q, &page); printed || err != nil {
				return err
			}
			printTable(c.stdout, "ID\tCLASS\tSUBJECT\tJOB\tITEM\tATTEMPTS\tREPLAYS\tLAST FAILURE\tERROR", page.Entries, func(e httpapi.DeadLetter) string {
				item := "-"
				if e.Item != nil {
					item = strconv.Itoa(*e.Item)
				}
				return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s", e.ID, e.Error.Class, e.Subject, e.JobID, item, e.Attempts, e.Replays,
					e.LastFailure.Local().Format(time.DateTime), truncateText(e.Error.Message, 70))
			})
			if page.NextCursor != nil {
				printMore(c.stdout, "sluice dlq ls", *page.NextCursor)
			}
			return nil
		},
	}
	filter.bind(ls, c)
	bindPaging(ls, &limit, &cursor, 100, "entries")
	return ls
}

// newDLQShowCmd is "sluice dlq show": GET /v1/dlq/{id}.
func newDLQShowCmd(c *cli, af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:               "show [flags] DEAD_LETTER_ID",
		Short:             "Show one dead letter: error, headers, payload",
		Long:              "Show one dead letter: its error, attempts, headers and payload." + apiEnvHelp,
		Example:           "  sluice dlq show SLUICE_CHUNKS-2077\n  sluice dlq show SLUICE_CHUNKS-2077 --json",
		Args:              exactArgs(1, "dlq show: name one dead-letter id"),
		ValidArgsFunction: completeDeadLetterIDs(c, 1),
		RunE: func(_ *cobra.Command, args []string) error {
			var e httpapi.DeadLetter
			if printed, err := af.get(c, "/v1/dlq/"+url.PathEscape(args[0]), nil, &e); printed || err != nil {
				return err
			}
			return showDeadLetter(c.stdout, e)
		},
	}
}

// newDLQReplayCmd is "sluice dlq replay": POST /v1/dlq/replay of the ids named or the filter.
func newDLQReplayCmd(c *cli, af *apiFlags) *cobra.Command {
	var filter dlqFilter
	var dryRun bool
	var rate float64
	var maxReplays int
	replay := &cobra.Command{
		Use:   "replay [flags] [DEAD_LETTER_ID...]",
		Short: "Publish dead letters again (admin)",
		Long: `Publish dead letters again on their original subjects (POST /v1/dlq/replay, admin scope):
the ones named, or those the filter flags select. --dry-run reports what would be replayed and
changes nothing. Replaying again is harmless: a replayed entry is gone, and a racing republish
is deduplicated by its message id.` + apiEnvHelp,
		Example: `  sluice dlq replay --dry-run --job JOB_ID
  sluice dlq replay --job JOB_ID
  sluice dlq replay SLUICE_CHUNKS-2077 --dry-run
  sluice dlq replay --error-class transient --rate 20 --max-replays 5`,
		ValidArgsFunction: completeDeadLetterIDs(c, -1),
		RunE: func(_ *cobra.Command, args []string) error {
			body := map[string]any{"dry_run": dryRun}
			if rate > 0 {
				body["rate"] = rate
			}
			if maxReplays > 0 {
				body["max_replays"] = maxReplays
			}
			if err := filter.selectFor(body, args); err != nil {
				return err
			}
			api, err := af.client(c)
			if err != nil {
				return err
			}
			return replayDeadLetters(c, api, body, af.asJSON)
		},
	}
	filter.bind(replay, c)
	replay.Flags().BoolVar(&dryRun, "dry-run", false, "report what would be replayed; change nothing")
	replay.Flags().Float64Var(&rate, "rate", 0, "replays per second (server default 100)")
	replay.Flags().IntVar(&maxReplays, "max-replays", 0, "skip entries already replayed this many times (server default 3)")
	_ = replay.RegisterFlagCompletionFunc("rate", cobra.NoFileCompletions)
	_ = replay.RegisterFlagCompletionFunc("max-replays", cobra.NoFileCompletions)
	return replay
}

// selectFor puts what a replay selects into its body: the ids named, or the filter; never
// both, and not neither (usage errors).
func (f *dlqFilter) selectFor(body map[string]any, ids []string) error {
	filter := f.query()
	switch {
	case len(ids) > 0 && len(filter) > 0:
		return usageError{"dlq replay: give ids or filter flags, not both"}
	case len(ids) > 0:
		body["ids"] = ids
	case len(filter) > 0:
		m := map[string]string{}
		for k := range filter {
			m[k] = filter.Get(k)
		}
		body["filter"] = m
	default:
		return usageError{"dlq replay: name dead-letter ids, or select them with --job, --subject, --error-class, --since or --until"}
	}
	return nil
}

// newDLQPurgeCmd is "sluice dlq purge": DELETE /v1/dlq with a filter.
func newDLQPurgeCmd(c *cli, af *apiFlags) *cobra.Command {
	var filter dlqFilter
	var yes bool
	purge := &cobra.Command{
		Use:   "purge [flags]",
		Short: "Delete every dead letter a filter selects, for good (admin)",
		Long: `Delete every dead letter the filter flags select, for good (DELETE /v1/dlq, admin scope).
At least one filter and --yes are required. To delete entries by id, use sluice dlq delete.` + apiEnvHelp,
		Example: "  sluice dlq purge --error-class validation --yes\n  sluice dlq purge --job JOB_ID --until 2025-01-02T00:00:00Z --yes",
		Args:    noArgs("dlq purge: select entries with filter flags; delete entries by id with sluice dlq delete ID..."),
		RunE: func(*cobra.Command, []string) error {
			q := filter.query()
			if len(q) == 0 {
				return usageError{"dlq purge: give at least one filter (--job, --subject, --error-class, --since, --until)"}
			}
			if !yes {
				return usageError{"dlq purge deletes dead letters for good: add --yes"}
			}
			api, err := af.client(c)
			if err != nil {
				return err
			}
			var res struct {
				Purged int `json:"purged"`
			}
			// Purging again deletes what still matches the filter: nothing more than was asked.
			if err := api.DoIdempotent(c.ctx, "DELETE", "/v1/dlq", q, nil, &res); err != nil {
				return err
			}
			if af.asJSON {
				return printJSON(c.stdout, res)
			}
			fmt.Fprintf(c.stdout, "purged %d dead letters\n", res.Purged)
			return nil
		},
	}
	filter.bind(purge, c)
	purge.Flags().BoolVar(&yes, "yes", false, "really delete the matching dead letters")
	return purge
}

// newDLQDeleteCmd is "sluice dlq delete": DELETE /v1/dlq/{id} for each id named.
func newDLQDeleteCmd(c *cli, af *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "delete [flags] DEAD_LETTER_ID...",
		Short: "Delete dead letters by id, for good (admin)",
		Long: `Delete the named dead letters for good (DELETE /v1/dlq/{id} each, admin scope), for example
once their cause is fixed some other way. An id that is not there is reported, the others
are still deleted, and the exit status is 1; a refusal (401, 403) or an unreachable API stops
at once.` + apiEnvHelp,
		Example:           "  sluice dlq delete SLUICE_CHUNKS-2077\n  sluice dlq delete SLUICE_CHUNKS-2077 SLUICE_GRAPH-1 --json",
		Args:              minArgs(1, "dlq delete: name at least one dead-letter id"),
		ValidArgsFunction: completeDeadLetterIDs(c, -1),
		RunE: func(_ *cobra.Command, args []string) error {
			api, err := af.client(c)
			if err != nil {
				return err
			}
			return deleteDeadLetters(c, api, args, af.asJSON)
		},
	}
}

// deleteDeadLetters deletes each id in turn and reports each outcome. An id not there (404) is
// reported and the others still tried; any other failure (refused, unreachable) stops at once.
// Any failure makes the error.
func deleteDeadLetters(c *cli, api *client.Client, ids []string, asJSON bool) error {
	type outcome struct {
		ID    string `json:"id"`
		Error string `json:"error,omitempty"`
	}
	res := struct {
		Deleted []string  `json:"deleted"`
		Failed  []outcome `json:"failed"`
	}{Deleted: []string{}, Failed: []outcome{}}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue // named twice: deleted once
		}
		seen[id] = true
		if err := c.ctx.Err(); err != nil {
			return err
		}
		// Deleting again is harmless: the second answer is 404, reported as such.
		err := api.DoIdempotent(c.ctx, "DELETE", "/v1/dlq/"+url.PathEscape(id), nil, nil, nil)
		var ae *client.Error
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound:
			res.Failed = append(res.Failed, outcome{ID: id, Error: err.Error()})
			continue
		case err != nil:
			// Refused (401, 403) or unreachable: the rest would fail the same way.
			if len(res.Deleted) > 0 {
				return fmt.Errorf("delete %s: %w (deleted before it: %s)", id, err, strings.Join(res.Deleted, " "))
			}
			return fmt.Errorf("delete %s: %w", id, err)
		}
		res.Deleted = append(res.Deleted, id)
	}
	if asJSON {
		if err := printJSON(c.stdout, res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(c.stdout, "deleted %d, failed %d\n", len(res.Deleted), len(res.Failed))
		for _, f := range res.Failed {
			fmt.Fprintf(c.stdout, "  failed %s: %s\n", f.ID, f.Error)
		}
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d of %d dead letters not deleted", len(res.Failed), len(res.Failed)+len(res.Deleted))
	}
	return nil
}

// replayDeadLetters sends one replay request and reports its outcome.
func replayDeadLetters(c *cli, api *client.Client, body map[string]any, asJSON bool) error {
	var res struct {
		Replayed []map[string]any `json:"replayed"`
		Skipped  []struct {
			ID     string `json:"id"`
			Reason string `json:"reason"`
		} `json:"skipped"`
		Failed []struct {
			ID    string `json:"id"`
			Error string `json:"error"`
		} `json:"failed"`
		DryRun    bool `json:"dry_run"`
		Truncated bool `json:"truncated"`
	}
	// Replaying again is harmless (dlq.Store.Replay): an entry replayed already is gone or
	// in progress, and a racing republish is deduplicated by its message id.
	if err := api.DoIdempotent(c.ctx, "POST", "/v1/dlq/replay", nil, body, &res); err != nil {
		return err
	}
	if asJSON {
		if err := printJSON(c.stdout, res); err != nil {
			return err
		}
	} else {
		verb := "replayed"
		if res.DryRun {
			verb = "would replay"
		}
		fmt.Fprintf(c.stdout, "%s %d, skipped %d, failed %d\n", verb, len(res.Replayed), len(res.Skipped), len(res.Failed))
		for _, s := range res.Skipped {
			fmt.Fprintf(c.stdout, "  skipped %s: %s\n", s.ID, s.Reason)
		}
		for _, f := range res.Failed {
			fmt.Fprintf(c.stdout, "  failed %s: %s\n", f.ID, f.Error)
		}
		if res.Truncated {
			fmt.Fprintln(c.stdout, "  more entries match: run the replay again")
		}
	}
	if len(res.Failed) > 0 {
		return errors.New("some replays failed")
	}
	return nil
}

// showDeadLetter prints one dead letter for a person.
func showDeadLetter(w io.Writer, e httpapi.DeadLetter) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id\t%s\nsubject\t%s\nerror\t%s: %s\nsink\t%s\n", e.ID, e.Subject, e.Error.Class, e.Error.Message, e.Error.Sink)
	fmt.Fprintf(tw, "job\t%s\nattempts\t%d (replayed %d times)\nfailed\t%s .. %s\nstream seq\t%d\ntrace\t%s\n", e.JobID, e.Attempts, e.Replays,
		e.FirstFailure.Local().Format(time.DateTime), e.LastFailure.Local().Format(time.DateTime), e.StreamSeq, e.TraceID)
	for k, v := range e.Headers {
		fmt.Fprintf(tw, "header %s\t%v\n", k, v)
	}
	_ = tw.Flush()
	if r := e.HeadersRef; r != nil {
		fmt.Fprintf(w, "headers stored by reference: %s/%s (%d bytes); replay uses them all\n", r.Bucket, r.Object, r.Size)
	}
	if r := e.PayloadRef; r != nil {
		fmt.Fprintf(w, "payload stored by reference: %s/%s (%d bytes, sha256 %s); GET /v1/dlq/%s/payload serves it\n",
			r.Bucket, r.Object, r.Size, r.SHA256, url.PathEscape(e.ID))
		return nil
	}
	payload := []byte(e.PayloadJSON)
	if len(payload) == 0 {
		payload = e.Payload
	}
	_, err := fmt.Fprintf(w, "payload (%d bytes):\n%s\n", len(payload), truncateText(string(payload), 2000))
	return err
}
