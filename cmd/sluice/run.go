package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
)

// Exit statuses (DESIGN.md, "Public surface").
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitRejected = 3
)

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// rejectedError means the command finished, but some items were rejected or dead-lettered:
// exit status 3.
var errRejected = errors.New("finished with rejected or dead-lettered items")

const usage = `sluice — event-driven ingestion pipeline (NATS JetStream -> AstraDB / embedded store)

Usage:
  sluice load [flags] FILE...   load chunk files as jobs and wait for them
  sluice serve [flags]          run the HTTP API and the workers (embedded broker unless NATS_URL)
  sluice worker [flags]         run the workers only
  sluice api [flags]            run the HTTP API only
  sluice jobs ls|show|wait|rollback   inspect, follow and roll back jobs (through the API)
  sluice dlq ls|show|replay|purge     inspect and replay dead letters (through the API)
  sluice bench astra [flags]    measure AstraDB loading: seed vs astrapy vs sluice, in-process
  sluice bench api [flags]      drive sluice serve with 1,000 clients: latency, refusals, orphaned jobs, RSS
  sluice bench backlog [flags]  drain a queued backlog with one worker: docs/s and peak RSS
  sluice completion bash|zsh    print a shell completion script
  sluice version                print the version

Run "sluice COMMAND -h" for a command's flags. Configuration comes from flags or environment:
SLUICE_DATA_DIR, SLUICE_HTTP_ADDR, SLUICE_API_TOKENS_FILE, SLUICE_COMMAND_KEY,
SLUICE_COMMAND_KEY_FILE, NATS_URL, NATS_CREDS, NATS_USER, NATS_PASSWORD, NATS_CA, NATS_CERT,
NATS_KEY; the operator commands use SLUICE_API_URL and
SLUICE_TOKEN.
Exit status: 0 all good, 1 failure, 2 bad usage, 3 finished with rejected or dead-lettered items.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "load":
		err = cmdLoad(ctx, rest, stdout, stderr, log)
	case "serve":
		err = cmdServe(ctx, rest, stderr, log, true, true)
	case "worker":
		err = cmdServe(ctx, rest, stderr, log, true, false)
	case "api":
		err = cmdServe(ctx, rest, stderr, log, false, true)
	case "jobs":
		err = cmdJobs(ctx, rest, stdout, stderr)
	case "dlq":
		err = cmdDLQ(ctx, rest, stdout, stderr)
	case "bench":
		err = cmdBench(ctx, rest, stdout, stderr, log)
	case "completion":
		err = cmdCompletion(rest, stdout)
	case "version":
		fmt.Fprintln(stdout, "sluice", version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "sluice: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return exitUsage
	case errors.Is(err, errRejected):
		return exitRejected
	default:
		fmt.Fprintf(stderr, "sluice: %v\n", err)
		return exitFailure
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		v := bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		return v
	}
	return "(unknown)"
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}
