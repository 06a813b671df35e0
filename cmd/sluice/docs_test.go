package main

import (
	"context"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// docCommand is one `sluice ...` command line found in a document or a command's examples.
type docCommand struct {
	where string   // file:line, or "sluice X --help" for a command's examples
	args  []string // after "sluice"
	// synopsis is set for a usage line ("[--flag N]", "a|b", "FILE..."): its flags and command
	// path are checked, not its arguments.
	synopsis bool
}

// sluiceRef finds "sluice ARGS" in a line: after the start, a space, "(" or "/" (go run
// ./cmd/sluice), up to a pipe, a redirection, a closing parenthesis or a comment.
var sluiceRef = regexp.MustCompile(`(?:^|[\s(/])sluice\s+([^)#>]*?)\s*(?:\s\|\s.*|\s#.*|\)|>.*)?$`)

// placeholders stand for the values documents leave open.
var placeholders = map[string]string{
	"FILE": "chunks.jsonl", "FILE...": "chunks.jsonl", "ID": "jx", "JOB_ID": "jx", "DEAD_LETTER_ID": "SLUICE_CHUNKS-1",
	"DIR": "/tmp", "N": "10", "CURSOR": "c", "COMMAND": "load", "SCENARIO": "astra",
}

// parseDocCommand turns one found command text into its argument lists: one per alternative
// of an "a|b" word (a synopsis), optional "[...]" parts included. ok is false when the text is
// no sluice command (output, prose, "sluice:" messages).
func parseDocCommand(text string, commands []string) (variants [][]string, synopsis, ok bool) {
	text = strings.ReplaceAll(text, `\|`, "|")
	synopsis = strings.ContainsAny(text, "[|") || strings.Contains(text, "...")
	text = strings.NewReplacer("[", "", "]", "").Replace(text)
	words := strings.Fields(text)
	if len(words) == 0 {
		return nil, false, false
	}
	if first, _, _ := strings.Cut(words[0], "|"); !slices.Contains(commands, first) {
		return nil, false, false
	}
	variants = [][]string{nil}
	for _, w := range words {
		if w == "..." {
			continue
		}
		alts := []string{w}
		if strings.Contains(w, "|") && !strings.Contains(w, ",") {
			alts = strings.Split(w, "|")
		}
		var next [][]string
		for _, v := range variants {
			for _, a := range alts {
				if p, ok := placeholders[a]; ok {
					a = p
				}
				next = append(next, append(slices.Clone(v), a))
			}
		}
		variants = next
	}
	return variants, synopsis, true
}

// docCommands finds every sluice command of README.md and docs/operations.md (in code blocks
// and in inline code) and of every command's Example section.
func docCommands(t *testing.T) []docCommand {
	t.Helper()
	var top []string
	root := newRootCmd(&cli{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard})
	for _, c := range root.Commands() {
		top = append(top, c.Name())
	}
	var out []docCommand
	add := func(where, text string) {
		m := sluiceRef.FindStringSubmatch(text)
		if m == nil {
			return
		}
		variants, synopsis, ok := parseDocCommand(m[1], top)
		if !ok {
			return
		}
		for _, v := range variants {
			out = append(out, docCommand{where: where, args: v, synopsis: synopsis})
		}
	}
	inline := regexp.MustCompile("`([^`]+)`")
	for _, file := range []string{"../../README.md", "../../docs/operations.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		fenced := false
		for i, line := range strings.Split(string(b), "\n") {
			where := strings.TrimPrefix(file, "../../") + ":" + strconv.Itoa(i+1)
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				fenced = !fenced
				continue
			}
			if fenced {
				add(where, strings.TrimPrefix(strings.TrimSpace(line), "$ "))
				continue
			}
			for _, m := range inline.FindAllStringSubmatch(line, -1) {
				add(where, m[1])
			}
		}
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, line := range strings.Split(c.Example, "\n") {
			add(c.CommandPath()+" --help", strings.TrimSpace(line))
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	return out
}

// dryParse runs args through the real command tree with every command's own code replaced by
// nothing: flags, their values, environment variables, the command path and the argument
// counts are checked as on a real run.
func dryParse(args []string) error {
	c := &cli{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard}
	root := newRootCmd(c)
	var stub func(cmd *cobra.Command)
	stub = func(cmd *cobra.Command) {
		if cmd.RunE != nil && !cmd.HasSubCommands() {
			cmd.RunE = func(*cobra.Command, []string) error { return nil }
		}
		for _, s := range cmd.Commands() {
			stub(s)
		}
	}
	stub(root)
	root.SetArgs(args)
	return root.Execute()
}

// Issue 13: the documents' commands had drifted from the binary (the completion offered flags
// that did not exist). Every `sluice ...` of README.md, docs/operations.md and the commands'
// Example sections now runs through the real binary with --help appended (an unknown flag is
// exit 2), through the real command tree up to its own code (command path, flag values,
// argument counts), and, where cheap, for real against a running server.
func TestDocumentedCommands(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 60 {
		t.Fatalf("found only %d documented commands: the extraction is broken", len(cmds))
	}
	s := startServer(t, "serve", nil, "--data-dir", t.TempDir())
	env := []string{"SLUICE_API_URL=" + s.base}
	real := 0
	for _, dc := range cmds {
		name := dc.where + ": sluice " + strings.Join(dc.args, " ")
		out, errOut, code := cliRun(t, nil, append(slices.Clone(dc.args), "--help")...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: exit %d\n%s", name, code, errOut)
			continue
		}
		root := newRootCmd(&cli{ctx: context.Background(), stdout: io.Discard, stderr: io.Discard})
		cmd, rest, err := root.Find(dc.args)
		if err != nil || cmd.HasSubCommands() && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			t.Errorf("%s: no such command (%v, left %v)", name, err, rest)
			continue
		}
		// A synopsis: its path and flags are checked, not its arguments.
		if dc.synopsis {
			continue
		}
		if err := dryParse(dc.args); err != nil {
			// A command named in prose ("`sluice load` exits 130") lacks its arguments.
			if len(rest) > 0 {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		// For real where it is cheap and changes nothing.
		switch a := dc.args; {
		case a[0] == "version", a[0] == "completion",
			len(a) >= 2 && (a[0] == "jobs" || a[0] == "dlq") && a[1] == "ls" && !slices.Contains(a, "--cursor"),
			len(a) >= 2 && a[0] == "dlq" && a[1] == "replay" && slices.Contains(a, "--dry-run") && !slices.Contains(a, "jx") && !strings.HasPrefix(a[2], "SLUICE_"):
			real++
			if out, errOut, code := cliRun(t, env, a...); code != 0 {
				t.Errorf("%s: exit %d\n%s%s", name, code, out, errOut)
			}
		}
	}
	if real < 5 {
		t.Errorf("only %d documented commands ran for real", real)
	}
	t.Logf("%d documented commands checked, %d run for real", len(cmds), real)
}

// The checks above catch what they should: a flag that does not exist, an unknown subcommand,
// a missing argument.
func TestDocumentedCommandChecks(t *testing.T) {
	for _, tt := range []struct {
		text     string
		parseErr bool // the dry parse refuses it
	}{
		{"dlq replay --dry-run --job jx", false},
		{"dlq replay --yes --job jx", true},
		{"jobs show --state running jx", true},
		{"jobs frob", true},
		{"jobs show", true},
		{"bench astra --latency soon", true},
		{"load --env test chunks.jsonl", false},
	} {
		variants, _, ok := parseDocCommand(tt.text, []string{"dlq", "jobs", "bench", "load"})
		if !ok || len(variants) != 1 {
			t.Fatalf("%q: %v %v", tt.text, variants, ok)
		}
		if err := dryParse(variants[0]); (err != nil) != tt.parseErr {
			t.Errorf("%q: dry parse error %v, want error %v", tt.text, err, tt.parseErr)
		}
	}
	if _, _, code := cliRun(t, nil, "dlq", "replay", "--yes", "--help"); code != exitUsage {
		t.Errorf("an unknown flag before --help: exit %d, want 2", code)
	}
	// The extraction: synopses expand their alternatives, commands hide in pipes and $(...).
	for text, want := range map[string][][]string{
		`sluice completion bash\|zsh`:                    {{"completion", "bash"}, {"completion", "zsh"}},
		"source <(sluice completion bash)":               {{"completion", "bash"}},
		"sluice completion fish | source":                {{"completion", "fish"}},
		"go run ./cmd/sluice load x.jsonl   # a comment": {{"load", "x.jsonl"}},
		"sluice load [--env dev|test] FILE...":           {{"load", "--env", "dev", "chunks.jsonl"}, {"load", "--env", "test", "chunks.jsonl"}},
		"sluice: start embedded broker: insecure":        nil,
		"sluice         18038.1    10    2000":           nil,
	} {
		var got [][]string
		if m := sluiceRef.FindStringSubmatch(text); m != nil {
			got, _, _ = parseDocCommand(m[1], []string{"completion", "load"})
		}
		if !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("%q: %q, want %q", text, got, want)
		}
	}
}
