package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// cliTimeout bounds one cliRun: a command that should have refused its command line but runs
// (a worker, a wait) is killed and fails the test instead of hanging it.
const cliTimeout = 2 * time.Minute

// cliRun runs the real binary with args and the extra environment (after SLUICE_LOG_LEVEL=warn
// and a temporary TMPDIR) and returns what it printed and its exit status; past cliTimeout it
// is killed and the test fails.
func cliRun(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_LEVEL=warn", "TMPDIR="+t.TempDir()), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("sluice %s still running after %s\n%s%s", strings.Join(args, " "), cliTimeout, out.String(), errOut.String())
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// deadLetter publishes a chunk no file loader would send (empty content) straight onto the
// chunk subject of the sluice serve on dataDir, waits until it is dead-lettered, and returns
// the dead letter's id.
func deadLetter(t *testing.T, dataDir, base, chunkID string) string {
	t.Helper()
	js := embeddedJS(t, dataDir)
	before := map[string]bool{}
	for _, e := range dlqEntries(t, base, "") {
		before[e.(map[string]any)["id"].(string)] = true
	}
	msg := nats.NewMsg("sluice.v1.chunks.dev")
	msg.Data = []byte(`{"chunk_id":"` + chunkID + `","content":""}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, e := range dlqEntries(t, base, "") {
			if id := e.(map[string]any)["id"].(string); !before[id] {
				return id
			}
		}
	}
	t.Fatal("the bad chunk was never dead-lettered")
	return ""
}

// chunkStreamLastSeq is the last sequence of the chunk stream of the sluice serve on dataDir:
// it moves when anything is published there, a replay included.
func chunkStreamLastSeq(t *testing.T, dataDir string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := embeddedJS(t, dataDir).Stream(ctx, "SLUICE_CHUNKS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// Regression (issue 13, finding 1): the standard library's flag package stopped at the first
// argument, so in `sluice dlq replay ID --dry-run` the --dry-run became a second id ("skipped
// --dry-run: not found", exit 0) and the entry was replayed for real. Both orders must now be
// dry runs: the entry stays, nothing is republished.
func TestDLQReplayDryRunAnywhereOnTheLine(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, "serve", nil, "--data-dir", dataDir)
	id := deadLetter(t, dataDir, s.base, "dry_run_probe")
	env := []string{"SLUICE_API_URL=" + s.base}
	for _, args := range [][]string{
		{"dlq", "replay", id, "--dry-run"},
		{"dlq", "replay", "--dry-run", id},
	} {
		seq := chunkStreamLastSeq(t, dataDir)
		out, errOut, code := cliRun(t, env, args...)
		if code != 0 || !strings.Contains(out, "would replay 1, skipped 0") {
			t.Errorf("sluice %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		if got := chunkStreamLastSeq(t, dataDir); got != seq {
			t.Errorf("sluice %s republished: chunk stream last seq %d -> %d", strings.Join(args, " "), seq, got)
		}
		if a := call(t, "GET", s.base+"/v1/dlq/"+id, "", "", nil); a.status != 200 || num(a.body, "replays") != 0 {
			t.Errorf("sluice %s: the entry is gone or was replayed: %d %v", strings.Join(args, " "), a.status, a.body)
		}
	}
}

// TestFlagsAfterArguments: `sluice jobs show ID --json` exited 2 and `sluice load FILE --json`
// said "--json is not a readable file"; flags may now come anywhere on the line.
func TestFlagsAfterArguments(t *testing.T) {
	dataDir := t.TempDir()
	out, errOut, code := cliRun(t, nil, "load", "../../testdata/chunks/passA_chunks.json", "--data-dir", dataDir, "--json")
	if code != 0 || !strings.Contains(out, `"state": "completed"`) {
		t.Fatalf("load FILE --json: exit %d\n%s%s", code, out, errOut)
	}
	s := startServer(t, "serve", nil, "--data-dir", dataDir)
	jobs := call(t, "GET", s.base+"/v1/jobs", "", "", nil)
	list, _ := jobs.body["jobs"].([]any)
	if len(list) != 1 {
		t.Fatalf("jobs: %v", jobs.body)
	}
	id := list[0].(map[string]any)["job_id"].(string)
	out, errOut, code = cliRun(t, []string{"SLUICE_API_URL=" + s.base}, "jobs", "show", id, "--json")
	if code != 0 || !strings.Contains(out, `"job_id": "`+id+`"`) {
		t.Fatalf("jobs show ID --json: exit %d\n%s%s", code, out, errOut)
	}
}

// commandPaths lists every command of the tree ("load", "jobs show", ...), hidden ones and
// cobra's help command left out.
func commandPaths(t *testing.T) [][]string {
	t.Helper()
	var out [][]string
	var walk func(cmd *cobra.Command, path []string)
	walk = func(cmd *cobra.Command, path []string) {
		for _, sub := range cmd.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			p := append(slices.Clone(path), sub.Name())
			out = append(out, p)
			walk(sub, p)
		}
	}
	walk(newRootCmd(&cli{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard}), nil)
	if len(out) < 20 {
		t.Fatalf("only %d commands: %v", len(out), out)
	}
	return out
}

// Issue 13: `sluice jobs --help`, `dlq --help` and `completion --help` exited 2 ("unknown
// subcommand"). Every command and subcommand now answers --help (and -h) with exit 0, its
// usage and an Examples section, on stdout.
func TestHelpOnEveryCommand(t *testing.T) {
	for _, p := range append(commandPaths(t), nil) {
		for _, h := range []string{"--help", "-h"} {
			out, errOut, code := cliRun(t, nil, append(slices.Clone(p), h)...)
			name := strings.Join(append(slices.Clone(p), h), " ")
			if code != 0 || !strings.Contains(out, "Usage:") || !strings.Contains(out, "Examples:") || errOut != "" {
				t.Errorf("sluice %s: exit %d, want 0 with Usage and Examples\nstdout:\n%s\nstderr:\n%s", name, code, out, errOut)
			}
		}
	}
	// help COMMAND is the same.
	if out, _, code := cliRun(t, nil, "help", "dlq", "replay"); code != 0 || !strings.Contains(out, "--dry-run") {
		t.Errorf("sluice help dlq replay: exit %d\n%s", code, out)
	}
}

// perInvocationFlags are the flags deliberately not mirrored by an environment variable: they
// say what one command does (which items, which output), and a variable left set in a shell
// would silently change later commands — SLUICE_YES would defeat purge's guard, SLUICE_FORCE
// would publish every file again, SLUICE_DRY_RUN would make replays do nothing.
var perInvocationFlags = map[string]bool{
	"help": true, "json": true, "force": true, "dry-run": true, "yes": true, "wait": true,
	"job": true, "subject": true, "error-class": true, "since": true, "until": true,
	"state": true, "limit": true, "cursor": true, "rate": true, "max-replays": true,
	"no-descriptions": true, "restore-previous": true,
	// bench scenario parameters
	"chunks": true, "latency": true, "runs": true, "modes": true, "dir": true, "clients": true,
	"duration": true, "chunks-per-job": true, "settle": true, "timeout": true,
	// a filter here, unlike load's --env (SLUICE_ENV)
	"jobs ls --env": true,
	// asks the API instead of the ops listener for one probe: bound to SLUICE_HTTP_ADDR, which
	// the image sets for the API, it would take every health check away from the ops listener
	"health --http-addr": true,
}

// Every configuration flag is mirrored by its environment variable, which its help names; a
// value the flag refuses is a usage error naming the variable; the command line wins.
func TestEveryFlagMirroredByItsEnvironmentVariable(t *testing.T) {
	root := newRootCmd(&cli{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard})
	seen := 0
	for _, p := range commandPaths(t) {
		cmd, _, err := root.Find(p)
		if err != nil {
			t.Fatal(err)
		}
		check := func(f *pflag.Flag) {
			env := f.Annotations[envAnnotation]
			if p[len(p)-1] == "wait" && f.Name == "timeout" {
				// jobs wait --timeout is configuration: SLUICE_WAIT_TIMEOUT.
				if len(env) == 0 || env[0] != "SLUICE_WAIT_TIMEOUT" {
					t.Errorf("sluice %s --timeout: env %v", strings.Join(p, " "), env)
				}
				return
			}
			switch {
			case len(env) == 0 && !perInvocationFlags[f.Name] && !perInvocationFlags[strings.Join(p, " ")+" --"+f.Name]:
				t.Errorf("sluice %s --%s has no environment variable", strings.Join(p, " "), f.Name)
			case len(env) == 1 && !strings.Contains(f.Usage, "[$"+env[0]+"]"):
				t.Errorf("sluice %s --%s: help %q does not name %s", strings.Join(p, " "), f.Name, f.Usage, env[0])
			case len(env) == 1:
				seen++
			}
		}
		cmd.LocalFlags().VisitAll(check)
		cmd.InheritedFlags().VisitAll(check)
	}
	if seen < 40 {
		t.Fatalf("only %d mirrored flags seen", seen)
	}
	// The help text of the real binary names them.
	out, _, _ := cliRun(t, nil, "serve", "--help")
	for _, env := range []string{"SLUICE_DATA_DIR", "NATS_URL", "SLUICE_HTTP_ADDR", "SLUICE_API_TOKENS_FILE", "SLUICE_DRAIN_TIMEOUT", "SLUICE_API_RATE_LIMITS", "SLUICE_LAZY_FSYNC", "SLUICE_OPS_ADDR"} {
		if !strings.Contains(out, "[$"+env+"]") {
			t.Errorf("serve --help does not name %s:\n%s", env, out)
		}
	}
	// A bad value is a usage error naming the variable; the flag wins over it.
	for _, tt := range []struct {
		env  string
		args []string
	}{
		{"SLUICE_DRAIN_TIMEOUT=soon", []string{"worker"}},
		{"SLUICE_API_MAX_CONNS=many", []string{"api"}},
		{"SLUICE_LAZY_FSYNC=perhaps", []string{"serve"}},
		{"SLUICE_WAIT_TIMEOUT=later", []string{"jobs", "wait", "j1"}},
	} {
		_, errOut, code := cliRun(t, []string{tt.env}, tt.args...)
		if name := strings.Split(tt.env, "=")[0]; code != exitUsage || !strings.Contains(errOut, name) {
			t.Errorf("%s sluice %v: exit %d, want 2 naming %s: %s", tt.env, tt.args, code, name, errOut)
		}
	}
	dead := "http://" + freeAddr(t) // nothing listens there
	s := startServer(t, "serve", nil, "--data-dir", t.TempDir())
	if out, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + s.base}, "jobs", "ls", "--json"); code != 0 || !strings.Contains(out, `"jobs"`) {
		t.Errorf("SLUICE_API_URL: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + dead}, "jobs", "ls", "--api-url", s.base); code != 0 {
		t.Errorf("--api-url does not win over SLUICE_API_URL: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + dead}, "jobs", "ls"); code != exitFailure || !strings.Contains(errOut, strings.TrimPrefix(dead, "http://")) {
		t.Errorf("SLUICE_API_URL of nothing: exit %d: %s", code, errOut)
	}
}

// completions runs `sluice __complete args...` (what the shell scripts call on Tab) and
// returns the values offered, without descriptions, and the exit status.
func completions(t *testing.T, env []string, args ...string) ([]string, int) {
	t.Helper()
	out, _, code := cliRun(t, env, append([]string{"__complete"}, args...)...)
	var vals []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" || strings.HasPrefix(l, ":") {
			continue // the directive
		}
		v, _, _ := strings.Cut(l, "\t")
		vals = append(vals, v)
	}
	return vals, code
}

// Issue 13: the hand-written completion offered flags that do not exist (--yes, --limit,
// --cursor on replay, --state on show) and never completed ids. Completion now comes from the
// command tree, for bash, zsh, fish and PowerShell, and job ids, dead-letter ids and subjects
// come from the API; without an API it offers nothing, quickly and quietly.
func TestCompletion(t *testing.T) {
	dataDir := t.TempDir()
	if _, errOut, code := cliRun(t, nil, "load", "--data-dir", dataDir, "../../testdata/chunks/passA_chunks.json"); code != 0 {
		t.Fatalf("load: exit %d: %s", code, errOut)
	}
	s := startServer(t, "serve", nil, "--data-dir", dataDir)
	env := []string{"SLUICE_API_URL=" + s.base}
	dl1 := deadLetter(t, dataDir, s.base, "completion_probe_1")
	dl2 := deadLetter(t, dataDir, s.base, "completion_probe_2")
	list, _ := call(t, "GET", s.base+"/v1/jobs", "", "", nil).body["jobs"].([]any)
	if len(list) != 1 {
		t.Fatalf("jobs: %v", list)
	}
	jobID := list[0].(map[string]any)["job_id"].(string)

	for _, tt := range []struct {
		args      []string
		want, not []string
	}{
		// Only real flags.
		{[]string{"dlq", "replay", "--"}, []string{"--dry-run", "--rate", "--max-replays", "--job", "--subject", "--error-class", "--api-url", "--json"}, []string{"--yes", "--limit", "--cursor"}},
		{[]string{"jobs", "show", "--"}, []string{"--json", "--api-url"}, []string{"--state", "--limit", "--wait"}},
		{[]string{"dlq", "purge", "--"}, []string{"--yes", "--error-class"}, []string{"--dry-run", "--limit"}},
		{[]string{"load", "--"}, []string{"--env", "--json", "--force", "--data-dir", "--nats-url"}, []string{"--api-url", "--yes"}},
		{[]string{""}, []string{"load", "serve", "worker", "api", "jobs", "dlq", "bench", "completion", "version"}, nil},
		{[]string{"dlq", ""}, []string{"ls", "show", "replay", "purge", "delete"}, nil},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish", "powershell"}, nil},
		// Fixed values.
		{[]string{"load", "--env", ""}, []string{"dev", "test", "prod"}, nil},
		{[]string{"jobs", "ls", "--state", ""}, []string{"running", "completed", "rolled_back"}, nil},
		{[]string{"dlq", "ls", "--error-class", ""}, []string{"validation", "transient", "exhausted"}, nil},
		// From the API.
		{[]string{"jobs", "show", ""}, []string{jobID}, nil},
		{[]string{"jobs", "wait", jobID[:3]}, []string{jobID}, nil},
		{[]string{"jobs", "show", jobID, ""}, nil, []string{jobID}}, // one id only
		{[]string{"dlq", "show", ""}, []string{dl1, dl2}, nil},
		{[]string{"dlq", "replay", dl1, "--dry-run", ""}, []string{dl2}, []string{dl1}}, // not offered twice
		{[]string{"dlq", "delete", ""}, []string{dl1, dl2}, nil},
		{[]string{"dlq", "ls", "--subject", ""}, []string{"sluice.v1.chunks.dev", "sluice.v1.graph.prod"}, nil},
		{[]string{"dlq", "replay", "--job", ""}, []string{jobID}, nil},
		// --api-url on the line wins.
		{[]string{"jobs", "show", "--api-url", "http://" + freeAddr(t), ""}, nil, []string{jobID}},
	} {
		got, code := completions(t, env, tt.args...)
		if code != 0 || !hasAll(got, tt.want...) || slices.ContainsFunc(tt.not, func(n string) bool { return slices.Contains(got, n) }) {
			t.Errorf("complete %q: exit %d, got %v; want %v and none of %v", tt.args, code, got, tt.want, tt.not)
		}
	}
	// No API: no ids, no error, within the completion timeout.
	start := time.Now()
	got, code := completions(t, []string{"SLUICE_API_URL=http://" + freeAddr(t)}, "dlq", "replay", "")
	if code != 0 || len(got) != 0 || time.Since(start) > completionTimeout+5*time.Second {
		t.Errorf("complete without an API: exit %d, %v after %s", code, got, time.Since(start))
	}

	checkCompletionScripts(t, env, dl1, dl2)
}

// hasAll reports whether got holds every one of want.
func hasAll(got []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(got, w) {
			return false
		}
	}
	return true
}

// checkCompletionScripts checks that every shell's completion script is generated, and that
// bash's, sourced without the bash-completion package and the API in env, completes flags
// and the dead-letter ids dl1 and dl2 through the binary.
func checkCompletionScripts(t *testing.T, env []string, dl1, dl2 string) {
	t.Helper()
	// Every shell's script is generated; bash's is valid and, sourced without the
	// bash-completion package, completes through the binary.
	for _, sh := range []string{"bash", "zsh", "fish", "powershell"} {
		out, errOut, code := cliRun(t, nil, "completion", sh)
		if code != 0 || !strings.Contains(out, "__complete") {
			t.Errorf("completion %s: exit %d, %d bytes: %s", sh, code, len(out), errOut)
		}
	}
	script := filepath.Join(t.TempDir(), "sluice.bash")
	out, _, _ := cliRun(t, nil, "completion", "bash")
	if err := os.WriteFile(script, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	bash := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		prog := fmt.Sprintf(`source %s; COMP_WORDS=(%s); COMP_CWORD=%d; COMP_LINE=%q; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9; __start_sluice 2>/dev/null; printf '%%s\n' "${COMPREPLY[@]}"`,
			script, strings.Join(quoted, " "), len(words)-1, line)
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", prog)
		cmd.Env = append(os.Environ(), env...)
		b, err := cmd.Output()
		if err != nil {
			t.Fatalf("bash completion of %q: %v", line, err)
		}
		return strings.Fields(string(b))
	}
	if got := bash(binary + " dlq replay --d"); !slices.Equal(got, []string{"--dry-run"}) {
		t.Errorf("bash: dlq replay --d<Tab> = %v", got)
	}
	if got := bash(binary + " dlq show "); !hasAll(got, dl1, dl2) {
		t.Errorf("bash: dlq show <Tab> = %v, want %s %s", got, dl1, dl2)
	}
}

// Issue 13: the docs deleted a dead letter with curl; `sluice dlq delete ID [ID...]` does it.
func TestDLQDelete(t *testing.T) {
	dataDir := t.TempDir()
	s := startServer(t, "serve", nil, "--data-dir", dataDir)
	env := []string{"SLUICE_API_URL=" + s.base}
	a, b, keep := deadLetter(t, dataDir, s.base, "delete_a"), deadLetter(t, dataDir, s.base, "delete_b"), deadLetter(t, dataDir, s.base, "delete_keep")
	out, errOut, code := cliRun(t, env, "dlq", "delete", a, b, a)
	if code != 0 || !strings.Contains(out, "deleted 2, failed 0") {
		t.Fatalf("dlq delete: exit %d\n%s%s", code, out, errOut)
	}
	for _, id := range []string{a, b} {
		if st := call(t, "GET", s.base+"/v1/dlq/"+id, "", "", nil).status; st != 404 {
			t.Errorf("%s still there after delete: %d", id, st)
		}
	}
	if st := call(t, "GET", s.base+"/v1/dlq/"+keep, "", "", nil).status; st != 200 {
		t.Errorf("%s, not named, is gone: %d", keep, st)
	}
	// An id that is not there is reported and fails the command; the others are still deleted.
	out, errOut, code = cliRun(t, env, "dlq", "delete", "--json", a, keep)
	if code != exitFailure || !strings.Contains(out, `"deleted": [`) || !strings.Contains(out, `"id": "`+a+`"`) || !strings.Contains(errOut, "1 of 2 dead letters not deleted") {
		t.Fatalf("dlq delete of a missing id: exit %d\n%s%s", code, out, errOut)
	}
	if st := call(t, "GET", s.base+"/v1/dlq/"+keep, "", "", nil).status; st != 404 {
		t.Errorf("%s not deleted beside a missing id: %d", keep, st)
	}
	if _, errOut, code := cliRun(t, env, "dlq", "delete"); code != exitUsage || !strings.Contains(errOut, "name at least one dead-letter id") {
		t.Errorf("dlq delete without an id: exit %d: %s", code, errOut)
	}
	// Without the admin scope the API refuses, and so does the command.
	tokens := tokensFile(t)
	s2 := startServer(t, "serve", nil, "--data-dir", t.TempDir(), "--tokens-file", tokens)
	if _, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + s2.base, "SLUICE_TOKEN=" + readTok}, "dlq", "delete", "SLUICE_CHUNKS-1"); code != exitFailure || !strings.Contains(errOut, "403") {
		t.Errorf("dlq delete with a read token: exit %d: %s", code, errOut)
	}
}

// Issue 13, finding 5: a file of 176,465 junk lines printed exactly 1,000 rejection lines and
// no count of the rest. The listing stops at its limit (1,000 off a terminal, the most a job
// record keeps) and says how many more were rejected, in load and in jobs show.
func TestRejectionListingSaysHowManyMore(t *testing.T) {
	for _, tt := range []struct {
		rejected    int
		lines, more int // rejection lines printed, and the "and N more" count (0: no such line)
	}{
		{999, 999, 0},
		{1000, 1000, 0},
		{1001, 1000, 1},
		{2500, 1000, 1500},
	} {
		t.Run(fmt.Sprint(tt.rejected), func(t *testing.T) {
			var b strings.Builder
			b.WriteString(`{"chunk_id":"fine_1","content":"a chunk with content"}` + "\n")
			for i := range tt.rejected {
				fmt.Fprintf(&b, `{"chunk_id":"empty_%d"}`+"\n", i)
			}
			file := filepath.Join(t.TempDir(), "rejects.jsonl")
			if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			dataDir := t.TempDir()
			check := func(what, out string) {
				t.Helper()
				lines := strings.Count(out, "\n  rejected item ")
				more := fmt.Sprintf("  and %d more rejected items\n", tt.more)
				if lines != tt.lines || tt.more > 0 && !strings.Contains(out, more) || tt.more == 0 && strings.Contains(out, " more rejected items") {
					t.Errorf("%s: %d rejection lines, want %d, and %q (%v)\n%s", what, lines, tt.lines, more, tt.more > 0, tail(out, 400))
				}
			}
			out, errOut, code := cliRun(t, nil, "load", "--data-dir", dataDir, file)
			if code != exitRejected || !strings.Contains(out, fmt.Sprintf("%d rejected", tt.rejected)) {
				t.Fatalf("load: exit %d\n%s%s", code, tail(out, 400), errOut)
			}
			check("load", out)
			if tt.rejected != 2500 {
				return
			}
			s := startServer(t, "serve", nil, "--data-dir", dataDir)
			list, _ := call(t, "GET", s.base+"/v1/jobs", "", "", nil).body["jobs"].([]any)
			id := list[0].(map[string]any)["job_id"].(string)
			out, errOut, code = cliRun(t, []string{"SLUICE_API_URL=" + s.base}, "jobs", "show", id)
			if code != 0 {
				t.Fatalf("jobs show: exit %d\n%s", code, errOut)
			}
			check("jobs show", out)
		})
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string { return s[max(0, len(s)-n):] }

// Issue 13, finding 5: interrupting `sluice load` printed "FAILED: … context canceled" and then
// suggested --force, which would publish everything again, although a plain rerun resumes. It
// now says to run the same command again and exits 130; the rerun completes the job exactly.
func TestLoadInterruptedSaysRerun(t *testing.T) {
	dataDir := t.TempDir()
	// An API without workers: the job is published and then waits, so the interrupt always
	// comes while load waits for it.
	s := startServer(t, "api", nil, "--data-dir", dataDir)
	file := writeChunkFile(t, 500)
	cmd := exec.Command(binary, "load", "--data-dir", dataDir, file)
	cmd.Env = append(os.Environ(), "SLUICE_LOG_LEVEL=warn")
	var out, errOut syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	var jobID string
	for deadline := time.Now().Add(30 * time.Second); jobID == ""; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no job published\n%s%s", out.String(), errOut.String())
		}
		list, _ := call(t, "GET", s.base+"/v1/jobs", "", "", nil).body["jobs"].([]any)
		if len(list) == 1 && num(list[0].(map[string]any), "published") == 500 {
			jobID = list[0].(map[string]any)["job_id"].(string)
		}
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("interrupted load: %v, want exit %d\n%s%s", err, exitInterrupted, out.String(), errOut.String())
	}
	all := out.String() + errOut.String()
	if !strings.Contains(errOut.String(), "interrupted — run the same command again to resume") || strings.Contains(all, "--force") || strings.Contains(all, "FAILED") {
		t.Fatalf("interrupted load said:\n%s", all)
	}
	// The rerun, with a worker now, resumes the same job and completes it exactly.
	startProc(t, "worker", nil, "worker", "--data-dir", dataDir)
	stdout, stderr, code := cliRun(t, nil, "load", "--data-dir", dataDir, "--json", file)
	if code != 0 || !strings.Contains(stdout, `"job_id": "`+jobID+`"`) || !strings.Contains(stdout, `"written": 500`) {
		t.Fatalf("rerun: exit %d\n%s%s", code, stdout, stderr)
	}
}

// Issue 13, finding 4: `sluice jobs wait` exited 0 with the job still running when its event
// stream dropped (a pod restart, an ingress timeout). It now reads the job again and
// reconnects, through a cut connection and an API restart, and returns only at the job's final
// state; with --timeout it fails at its timeout.
func TestJobsWaitSurvivesDroppedStream(t *testing.T) {
	dataDir := t.TempDir()
	addr := freeAddr(t)
	api := startAPIAt(t, dataDir, addr)
	base := "http://" + addr
	// No worker yet: the job stays running.
	jobID := upload(t, base, "/v1/jobs?env=dev&file=wait.jsonl", "", "application/x-ndjson", []byte(`{"chunk_id":"wait_1","content":"one"}`+"\n"+`{"chunk_id":"wait_2","content":"two"}`+"\n"))
	proxy := startProxy(t, addr)
	viaProxy := []string{"SLUICE_API_URL=http://" + proxy.ln.Addr().String()}

	// --timeout: fails, non-zero, saying the job's state.
	start := time.Now()
	_, errOut, code := cliRun(t, viaProxy, "jobs", "wait", jobID, "--timeout", "2s")
	if took := time.Since(start); code != exitFailure || !strings.Contains(errOut, "after 2s (--timeout)") || took < 2*time.Second || took > 15*time.Second {
		t.Fatalf("jobs wait --timeout 2s: exit %d after %s: %s", code, took, errOut)
	}

	w := startBgCLI(t, append([]string{"SLUICE_LOG_LEVEL=warn"}, viaProxy...), "jobs", "wait", "--json", jobID)
	t.Cleanup(func() {
		if w.cmd.ProcessState == nil {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	stillWaiting := func(what string) {
		t.Helper()
		select {
		case err := <-w.done:
			t.Fatalf("jobs wait returned after %s with the job still running: %v\n%s%s", what, err, w.out.String(), w.errOut.String())
		case <-time.After(2 * time.Second):
		}
	}
	stillWaiting("starting")
	proxy.cut() // the connection drops mid-stream
	stillWaiting("a cut connection")
	// The API restarts (its stream ends cleanly; for a while nothing answers).
	if err := api.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = api.Wait()
	stillWaiting("the API stopped")
	startAPIAt(t, dataDir, addr)
	stillWaiting("the API restarted")
	// A worker finishes the job: wait returns with its final state.
	startProc(t, "worker", nil, "worker", "--data-dir", dataDir)
	select {
	case err := <-w.done:
		if err != nil || !strings.Contains(w.out.String(), `"state": "completed"`) || !strings.Contains(w.out.String(), `"written": 2`) {
			t.Fatalf("jobs wait: %v\n%s%s", err, w.out.String(), w.errOut.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("jobs wait did not return after the job completed\n%s", w.errOut.String())
	}
	if !strings.Contains(w.errOut.String(), "reconnecting") {
		t.Errorf("the reconnects were not announced: %s", w.errOut.String())
	}
	// A job already final returns at once, rolled back included.
	if _, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + base}, "jobs", "rollback", jobID); code != 0 {
		t.Fatalf("rollback: exit %d: %s", code, errOut)
	}
	if out, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + base}, "jobs", "wait", jobID, "--timeout", "10s", "--json"); code != 0 || !strings.Contains(out, `"state": "rolled_back"`) {
		t.Fatalf("jobs wait on a rolled-back job: exit %d\n%s%s", code, out, errOut)
	}
	// An unknown job fails at once.
	if _, errOut, code := cliRun(t, []string{"SLUICE_API_URL=" + base}, "jobs", "wait", "jnosuch"); code != exitFailure || !strings.Contains(errOut, "404") {
		t.Fatalf("jobs wait on an unknown job: exit %d: %s", code, errOut)
	}
}

// startAPIAt starts `sluice api` on dataDir listening on addr and waits until it is ready.
func startAPIAt(t *testing.T, dataDir, addr string) *exec.Cmd {
	t.Helper()
	cmd, _ := startProc(t, "api", nil, "api", "--data-dir", dataDir, "--http-addr", addr)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("api not ready after 30 s")
		}
	}
}
