package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// rootLong is the top-level help. Environment variables that are never flags (secrets: a flag
// would show in ps) are listed here and in the commands that read them.
const rootLong = `sluice — event-driven ingestion pipeline (NATS JetStream -> AstraDB / embedded store).

Flags may come anywhere on the line, before or after arguments ("--" ends them). Every
configuration flag is mirrored by the environment variable named in its help ([$NAME]); a flag
on the command line wins over the variable.

Secrets are read from the environment only (a flag would show in ps):
  SLUICE_TOKEN                 bearer token of the operator commands (jobs, dlq) for the API
  NATS_PASSWORD                NATS password
  ASTRA_DB_APPLICATION_TOKEN   AstraDB token
  SLUICE_COMMAND_KEY           key that signs commands and rollbacks (or --command-key-file)
SLUICE_LOG_LEVEL (debug, info, warn, error) sets the log level, SLUICE_LOG_FORMAT (json, text)
the format (default JSON, text when standard error is a terminal); GOMEMLIMIT and GOMAXPROCS
are honoured.

Exit status: 0 all good, 1 failure, 2 bad usage, 3 finished with rejected or dead-lettered
items, 130 interrupted (run the same command again to resume).`

// cli is what the commands share: where they write, their logger and the process's context.
type cli struct {
	ctx            context.Context
	stdout, stderr io.Writer
	log            *slog.Logger
	// ran is set once a command's own code starts (after its command line parsed): an error
	// before that is a usage error (exit 2), whatever cobra calls it.
	ran bool
}

// newRootCmd builds the whole command tree. It does no I/O.
func newRootCmd(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "sluice",
		Short: "Event-driven ingestion pipeline: NATS JetStream -> AstraDB / embedded store",
		Long:  rootLong,
		Example: `  sluice serve                                  # API and workers on the embedded default
  sluice load --env test chunks.jsonl           # load a chunk file and wait for it
  sluice jobs ls --state running                # jobs through the API
  sluice dlq replay --dry-run --job JOB_ID      # what a replay would do
  source <(sluice completion bash)              # shell completion`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// A bare "sluice" is a usage error (exit 2), as it always was.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Sprintf("unknown command %q (run \"sluice --help\")", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(c.stderr, cmd.UsageString())
			return usageError{"name a command"}
		},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			c.ran = true
			return nil
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.AddCommand(
		newLoadCmd(c),
		newServeCmd(c, "serve", true, true),
		newServeCmd(c, "worker", true, false),
		newServeCmd(c, "api", false, true),
		newJobsCmd(c),
		newDLQCmd(c),
		newBenchCmd(c),
		newCompletionCmd(c),
		newHealthCmd(c),
		newProvisionCmd(c),
		&cobra.Command{
			Use:     "version",
			Short:   "Print the version",
			Example: "  sluice version",
			Args:    noArgs("version takes no arguments"),
			RunE: func(*cobra.Command, []string) error {
				_, err := fmt.Fprintln(c.stdout, "sluice", version())
				return err
			},
		},
	)
	return root
}

// run runs the command line args and returns its error: a usageError for a bad command line
// (whatever cobra calls it, when it comes before the command's own code ran), errRejected or
// errInterrupted when the command has said what happened, any other error for a failure.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	c := &cli{ctx: ctx, stdout: stdout, stderr: stderr, log: log}
	root := newRootCmd(c)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ue usageError
	if err != nil && !errors.As(err, &ue) && !c.ran {
		// Cobra's own refusals (an unknown command, a bad flag) come before the command ran.
		return usageError{err.Error()}
	}
	return err
}

// noArgs refuses any argument with msg (a usage error).
func noArgs(msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{msg}
		}
		return nil
	}
}

// exactArgs requires exactly n arguments, else the usage error msg.
func exactArgs(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{msg}
		}
		return nil
	}
}

// minArgs requires at least n arguments, else the usage error msg.
func minArgs(n int, msg string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return usageError{msg}
		}
		return nil
	}
}

// groupCmd is a command that only holds subcommands (jobs, dlq, bench): run bare or with an
// unknown subcommand it is a usage error naming them (in names' order), as before cobra. The
// unknown subcommand is refused by Args, before anything runs.
func groupCmd(use, short, long, example, noun string, names ...string) *cobra.Command {
	list := strings.Join(names, ", ")
	return &cobra.Command{
		Use: use, Short: short, Long: long, Example: example,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Sprintf("%s: unknown %s %q (%ss: %s)", use, noun, args[0], noun, list)}
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			return usageError{fmt.Sprintf("%s: name a %s: %s", use, noun, list)}
		},
	}
}

// buildVersion is stamped at build time (-ldflags "-X main.buildVersion=…", as the container
// image does); empty, the module's build information is used.
var buildVersion string

func version() string {
	if buildVersion != "" {
		return buildVersion
	}
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
