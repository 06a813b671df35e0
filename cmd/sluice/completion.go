package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/client"
)

// completionExample is the completion command's examples; the docs test runs them.
const completionExample = `  source <(sluice completion bash)                  # bash, this shell
  sluice completion bash > /etc/bash_completion.d/sluice
  source <(sluice completion zsh)                   # zsh, this shell
  sluice completion fish | source                   # fish
  sluice completion powershell | Out-String | Invoke-Expression`

// bashWordsFallback precedes cobra's bash script: the script needs _get_comp_words_by_ref from
// the bash-completion package, and without that package (a minimal image, a fresh macOS) every
// Tab printed "command not found". The stand-in splits words as bash does (so "--flag=value"
// is two words), enough for sluice's ids and subjects; the package's own wins when loaded.
const bashWordsFallback = `if ! declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
_get_comp_words_by_ref() {
    # stand-in for bash-completion's: sets the caller's cur prev words cword
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    words=("${COMP_WORDS[@]:0:COMP_CWORD+1}")
    cword=$COMP_CWORD
}
fi
`

// newCompletionCmd prints cobra's completion scripts. They call "sluice __complete", so what
// they offer is always this binary's real commands and flags, and job ids, dead-letter ids and
// subjects come from the API (--api-url / SLUICE_API_URL, SLUICE_TOKEN) when it answers.
func newCompletionCmd(c *cli) *cobra.Command {
	var noDesc bool
	shells := []string{"bash", "zsh", "fish", "powershell"}
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print the completion script of a shell. It completes commands and flags, the values of
--env, --state and --error-class, and job ids, dead-letter ids and subjects read from the API
(--api-url or SLUICE_API_URL, token SLUICE_TOKEN); when the API does not answer within 2 s it
offers nothing for those.`,
		Example:   completionExample,
		ValidArgs: shells,
		Args: func(_ *cobra.Command, args []string) error {
			switch {
			case len(args) != 1:
				return usageError{"completion: name a shell: " + strings.Join(shells, ", ")}
			case !slices.Contains(shells, args[0]):
				return usageError{fmt.Sprintf("completion: unknown shell %q (%s)", args[0], strings.Join(shells, ", "))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), c.stdout
			switch args[0] {
			case "bash":
				if _, err := io.WriteString(w, bashWordsFallback); err != nil {
					return err
				}
				return root.GenBashCompletionV2(w, !noDesc)
			case "zsh":
				if noDesc {
					return root.GenZshCompletionNoDesc(w)
				}
				return root.GenZshCompletion(w)
			case "fish":
				return root.GenFishCompletion(w, !noDesc)
			default:
				if noDesc {
					return root.GenPowerShellCompletion(w)
				}
				return root.GenPowerShellCompletionWithDesc(w)
			}
		},
	}
	cmd.Flags().BoolVar(&noDesc, "no-descriptions", false, "complete without descriptions")
	return cmd
}

// completionTimeout bounds the API call of one completion: a shell waits for it on every Tab.
const completionTimeout = 2 * time.Second

// completionLimit is how many jobs or dead letters one completion lists (the newest jobs, the
// oldest dead letters: the API's orders): enough to choose from, small enough to answer fast.
const completionLimit = 200

func envNames() []string { return []string{"dev", "test", "prod"} }

func jobStates() []string {
	return []string{
		string(jobs.JobPending), string(jobs.JobRunning), string(jobs.JobCompleted),
		string(jobs.JobCompletedWithErrors), string(jobs.JobSuperseded), string(jobs.JobRolledBack), string(jobs.JobFailed),
	}
}

func errorClasses() []string {
	return []string{
		string(fault.Validation), string(fault.Limit), string(fault.Rejected),
		string(fault.Auth), string(fault.Transient), string(fault.Exhausted),
	}
}

// completionClient is an API client for a completion: the command's --api-url (or
// SLUICE_API_URL), no waiting out 429/503, no messages. ok is false when the command has no
// --api-url.
func completionClient(cmd *cobra.Command) (api *client.Client, ctx context.Context, cancel context.CancelFunc, ok bool) {
	_ = applyEnv(cmd.Flags()) // completion runs no PersistentPreRun
	f := cmd.Flags().Lookup("api-url")
	if f == nil {
		return nil, nil, nil, false
	}
	api, err := client.New(client.Config{URL: f.Value.String(), Token: secret.String(envOr("SLUICE_TOKEN", "")), NoResend: true})
	if err != nil {
		return nil, nil, nil, false
	}
	ctx, cancel = context.WithTimeout(context.Background(), completionTimeout)
	return api, ctx, cancel, true
}

// completeJobIDs completes job ids from GET /v1/jobs (newest first), described by state and
// file. max is how many positional ids the command takes (-1: any); past it nothing is
// offered. Without an answer from the API it offers nothing, quietly.
func completeJobIDs(_ *cli, max int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if max >= 0 && len(args) >= max {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		api, ctx, cancel, ok := completionClient(cmd)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer cancel()
		var page struct {
			Jobs []jobs.Job `json:"jobs"`
		}
		q := url.Values{"limit": {fmt.Sprint(completionLimit)}}
		if err := api.Do(ctx, "GET", "/v1/jobs", q, nil, &page); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, j := range page.Jobs {
			if strings.HasPrefix(j.JobID, toComplete) && !slices.Contains(args, j.JobID) {
				out = append(out, cobra.CompletionWithDesc(j.JobID, strings.TrimSpace(string(j.State)+" "+j.Env+" "+j.File)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// deadLetters lists up to completionLimit dead letters for a completion; nil when the API does
// not answer.
func deadLetters(cmd *cobra.Command) []httpapi.DeadLetter {
	api, ctx, cancel, ok := completionClient(cmd)
	if !ok {
		return nil
	}
	defer cancel()
	var page struct {
		Entries []httpapi.DeadLetter `json:"entries"`
	}
	q := url.Values{"limit": {fmt.Sprint(completionLimit)}}
	if err := api.Do(ctx, "GET", "/v1/dlq", q, nil, &page); err != nil {
		return nil
	}
	return page.Entries
}

// completeDeadLetterIDs completes dead-letter ids from GET /v1/dlq, described by error class and
// subject, leaving out ids already on the line. max is as for completeJobIDs.
func completeDeadLetterIDs(_ *cli, max int) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if max >= 0 && len(args) >= max {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, e := range deadLetters(cmd) {
			if strings.HasPrefix(e.ID, toComplete) && !slices.Contains(args, e.ID) {
				out = append(out, cobra.CompletionWithDesc(e.ID, e.Error.Class+" "+e.Subject+": "+truncateText(e.Error.Message, 60)))
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSubjects completes --subject: the subjects of the dead letters the API lists, then
// Sluice's subject patterns (DESIGN.md, "Public surface").
func completeSubjects(_ *cli) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		var out []cobra.Completion
		seen := map[string]bool{}
		add := func(s string) {
			if !seen[s] && strings.HasPrefix(s, toComplete) {
				seen[s] = true
				out = append(out, s)
			}
		}
		for _, e := range deadLetters(cmd) {
			add(e.Subject)
		}
		for _, env := range envNames() {
			add("sluice.v1.chunks." + env)
			add("sluice.v1.jobs." + env)
			add("sluice.v1.graph." + env)
		}
		add("sluice.v1.requirements.>")
		add("sluice.v1.features.>")
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
