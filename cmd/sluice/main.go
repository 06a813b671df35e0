// Command sluice runs the Sluice ingestion pipeline — NATS JetStream to AstraDB or the
// embedded stores — and operates it: one binary for the HTTP API and the workers (serve,
// worker, api), loading files as jobs (load), and the operator tools (jobs, dlq, bench,
// completion). Run "sluice help" for the commands.
//
// The files: main.go maps run's error to the exit status; root.go builds the command tree;
// config.go reads every flag and environment variable; wiring.go builds the broker, stores,
// workers and API services from that configuration; each command has its own file (serve.go,
// load.go, jobs.go, dlq.go, bench*.go, completion.go); output.go prints for a person.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	level, err := parseLogLevel(os.Getenv("SLUICE_LOG_LEVEL"))
	if err != nil {
		os.Exit(exitStatus(os.Stderr, err))
	}
	format, err := parseLogFormat(os.Getenv("SLUICE_LOG_FORMAT"), os.Stderr)
	if err != nil {
		os.Exit(exitStatus(os.Stderr, err))
	}
	log := newLogger(os.Stderr, level, format)
	shutdownTracing, err := setupTracing(ctx, os.Getenv, os.Stderr, log)
	if err != nil {
		os.Exit(exitStatus(os.Stderr, err))
	}
	setMemoryLimit(log)
	code := exitStatus(os.Stderr, run(ctx, os.Args[1:], os.Stdout, os.Stderr, log))
	// After the drain: the spans still buffered are flushed (5 s at most).
	fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := shutdownTracing(fctx); err != nil {
		log.Warn("tracing: spans not flushed at exit", "err", err)
	}
	cancel()
	os.Exit(code)
}

// exitStatus says err on w (unless its command has already said it) and returns the exit
// status it means: 0 for nil, 2 for a usageError, 3 for errRejected, 130 for errInterrupted,
// else 1.
func exitStatus(w io.Writer, err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		if err.Error() != "" {
			fmt.Fprintf(w, "sluice: %v\n", err)
		}
		return exitUsage
	case errors.Is(err, errRejected):
		return exitRejected
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	default:
		fmt.Fprintf(w, "sluice: %v\n", err)
		return exitFailure
	}
}

// Exit statuses (DESIGN.md, "Public surface").
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitRejected = 3
	// exitInterrupted is a command stopped by SIGINT or SIGTERM (128 + SIGINT, as shells
	// report it): nothing is lost, running the same command again resumes.
	exitInterrupted = 130
)

// usageError is a bad command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// errRejected means the command finished, but some items were rejected or dead-lettered:
// exit status 3.
var errRejected = errors.New("finished with rejected or dead-lettered items")

// errInterrupted means the command was stopped by a signal before it finished: exit status 130.
// The command has already said so.
var errInterrupted = errors.New("interrupted — run the same command again to resume")

// interruptedMsg is what an interrupted load says, for each file not finished and once on
// stderr.
const interruptedMsg = "interrupted — run the same command again to resume"
