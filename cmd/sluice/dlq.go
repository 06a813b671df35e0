package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sluice-dev/sluice/schemas"
)

// dlqEntry is the part of a dead letter the CLI shows.
type dlqEntry struct {
	ID      string              `json:"id"`
	Subject string              `json:"subject"`
	Headers map[string][]string `json:"headers"`
	Payload string              `json:"payload"`
	// PayloadRef is set when the original was too large to embed (payload is then empty).
	PayloadRef *schemas.DeadLetterRef `json:"payload_ref,omitempty"`
	HeadersRef *schemas.DeadLetterRef `json:"headers_ref,omitempty"`
	Error      struct {
		Class   string `json:"class"`
		Message string `json:"message"`
		Sink    string `json:"sink"`
	} `json:"error"`
	Attempts       int             `json:"attempts"`
	FirstFailure   time.Time       `json:"first_failure"`
	LastFailure    time.Time       `json:"last_failure"`
	StreamSeq      uint64          `json:"stream_seq"`
	JobID          string          `json:"job_id"`
	Item           *int            `json:"item"`
	TraceID        string          `json:"trace_id"`
	Replays        int             `json:"replays"`
	DeadLetteredAt time.Time       `json:"dead_lettered_at"`
	PayloadJSON    json.RawMessage `json:"payload_json"`
}

// cmdDLQ runs "sluice dlq ls|show|replay|purge" against a running API.
func cmdDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"dlq: name a subcommand: ls, show, replay or purge"}
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := bindAPI(fs, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	var job, subject, class, since, until, cursor string
	var limit int
	filterFlags := func() {
		fs.StringVar(&job, "job", "", "only dead letters of this job")
		fs.StringVar(&subject, "subject", "", "only dead letters first published on this subject (wildcards allowed)")
		fs.StringVar(&class, "error-class", "", "only this error class (validation, limit, rejected, auth, transient, exhausted)")
		fs.StringVar(&since, "since", "", "only dead letters stored at or after this RFC 3339 time")
		fs.StringVar(&until, "until", "", "only dead letters stored before this RFC 3339 time")
	}
	var dryRun, yes *bool
	var rate *float64
	var maxReplays *int
	switch sub {
	case "ls":
		filterFlags()
		fs.IntVar(&limit, "limit", 100, "entries per page")
		fs.StringVar(&cursor, "cursor", "", "page cursor from a previous listing")
	case "show":
	case "replay":
		filterFlags()
		dryRun = fs.Bool("dry-run", false, "report what would be replayed; change nothing")
		rate = fs.Float64("rate", 0, "replays per second (server default 100)")
		maxReplays = fs.Int("max-replays", 0, "skip entries already replayed this many times (server default 3)")
	case "purge":
		filterFlags()
		yes = fs.Bool("yes", false, "really delete the matching dead letters")
	default:
		return usageError{fmt.Sprintf("dlq: unknown subcommand %q (ls, show, replay, purge)", sub)}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	filter := url.Values{}
	for k, v := range map[string]string{"job": job, "subject": subject, "error_class": class, "since": since, "until": until} {
		if v != "" {
			filter.Set(k, v)
		}
	}
	switch sub {
	case "ls":
		q := filter
		q.Set("limit", strconv.Itoa(limit))
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Entries    []dlqEntry `json:"entries"`
			NextCursor *string    `json:"next_cursor"`
		}
		if err := api.do(ctx, "GET", "/v1/dlq", q, nil, &page); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, page)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCLASS\tSUBJECT\tJOB\tITEM\tATTEMPTS\tREPLAYS\tLAST FAILURE\tERROR")
		for _, e := range page.Entries {
			item := "-"
			if e.Item != nil {
				item = strconv.Itoa(*e.Item)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", e.ID, e.Error.Class, e.Subject, e.JobID, item, e.Attempts, e.Replays,
				e.LastFailure.Local().Format(time.DateTime), truncateText(e.Error.Message, 70))
		}
		_ = tw.Flush()
		if page.NextCursor != nil && *page.NextCursor != "" {
			fmt.Fprintf(stdout, "more: sluice dlq ls --cursor %s\n", *page.NextCursor)
		}
		return nil
	case "show":
		if fs.NArg() != 1 {
			return usageError{"dlq show: name one dead-letter id"}
		}
		var e dlqEntry
		if err := api.do(ctx, "GET", "/v1/dlq/"+url.PathEscape(fs.Arg(0)), nil, nil, &e); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, e)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "id\t%s\nsubject\t%s\nerror\t%s: %s\nsink\t%s\n", e.ID, e.Subject, e.Error.Class, e.Error.Message, e.Error.Sink)
		fmt.Fprintf(tw, "job\t%s\nattempts\t%d (replayed %d times)\nfailed\t%s .. %s\nstream seq\t%d\ntrace\t%s\n", e.JobID, e.Attempts, e.Replays,
			e.FirstFailure.Local().Format(time.DateTime), e.LastFailure.Local().Format(time.DateTime), e.StreamSeq, e.TraceID)
		for k, v := range e.Headers {
			fmt.Fprintf(tw, "header %s\t%v\n", k, v)
		}
		_ = tw.Flush()
		if r := e.HeadersRef; r != nil {
			fmt.Fprintf(stdout, "headers stored by reference: %s/%s (%d bytes); replay uses them all\n", r.Bucket, r.Object, r.Size)
		}
		if r := e.PayloadRef; r != nil {
			fmt.Fprintf(stdout, "payload stored by reference: %s/%s (%d bytes, sha256 %s); GET /v1/dlq/%s/payload serves it\n",
				r.Bucket, r.Object, r.Size, r.SHA256, url.PathEscape(e.ID))
			return nil
		}
		payload := []byte(e.PayloadJSON)
		if len(payload) == 0 {
			payload, _ = base64.StdEncoding.DecodeString(e.Payload)
		}
		fmt.Fprintf(stdout, "payload (%d bytes):\n%s\n", len(payload), truncateText(string(payload), 2000))
		return nil
	case "replay":
		body := map[string]any{"dry_run": *dryRun}
		if *rate > 0 {
			body["rate"] = *rate
		}
		if *maxReplays > 0 {
			body["max_replays"] = *maxReplays
		}
		switch {
		case fs.NArg() > 0 && len(filter) > 0:
			return usageError{"dlq replay: give ids or filter flags, not both"}
		case fs.NArg() > 0:
			body["ids"] = fs.Args()
		case len(filter) > 0:
			f := map[string]string{}
			for k := range filter {
				f[k] = filter.Get(k)
			}
			body["filter"] = f
		default:
			return usageError{"dlq replay: name dead-letter ids, or select them with --job, --subject, --error-class, --since or --until"}
		}
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
		if err := api.doIdempotent(ctx, "POST", "/v1/dlq/replay", nil, body, &res); err != nil {
			return err
		}
		if *asJSON {
			if err := printJSON(stdout, res); err != nil {
				return err
			}
		} else {
			verb := "replayed"
			if res.DryRun {
				verb = "would replay"
			}
			fmt.Fprintf(stdout, "%s %d, skipped %d, failed %d\n", verb, len(res.Replayed), len(res.Skipped), len(res.Failed))
			for _, s := range res.Skipped {
				fmt.Fprintf(stdout, "  skipped %s: %s\n", s.ID, s.Reason)
			}
			for _, f := range res.Failed {
				fmt.Fprintf(stdout, "  failed %s: %s\n", f.ID, f.Error)
			}
			if res.Truncated {
				fmt.Fprintln(stdout, "  more entries match: run the replay again")
			}
		}
		if len(res.Failed) > 0 {
			return errors.New("some replays failed")
		}
		return nil
	default: // purge
		if fs.NArg() > 0 {
			return usageError{"dlq purge: select entries with filter flags; delete one by id through DELETE /v1/dlq/{id}"}
		}
		if len(filter) == 0 {
			return usageError{"dlq purge: give at least one filter (--job, --subject, --error-class, --since, --until)"}
		}
		if !*yes {
			return usageError{"dlq purge deletes dead letters for good: add --yes"}
		}
		var res struct {
			Purged int `json:"purged"`
		}
		// Purging again deletes what still matches the filter: nothing more than was asked.
		if err := api.doIdempotent(ctx, "DELETE", "/v1/dlq", filter, nil, &res); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, res)
		}
		fmt.Fprintf(stdout, "purged %d dead letters\n", res.Purged)
		return nil
	}
}

func truncateText(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
