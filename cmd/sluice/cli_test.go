package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// cliRun runs the real binary with args and the extra environment (after SLUICE_LOG_LEVEL=warn
// and a temporary TMPDIR) and returns what it printed and its exit status.
func cliRun(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_LEVEL=warn", "TMPDIR="+t.TempDir()), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
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
