package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
)

// chunkStreamOn opens the embedded broker of dataDir in the test (no sluice process may run
// on it) and returns SLUICE_CHUNKS's configuration and the streams that exist.
func chunkStreamOn(t *testing.T, dataDir string) (cfg *jetstream.StreamConfig, streams []string) {
	t.Helper()
	srv, nc, js := embeddedtest.Start(t, embedded.Config{DataDir: dataDir})
	defer func() { nc.Close(); srv.Shutdown() }()
	ctx := context.Background()
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		streams = append(streams, n)
	}
	s, err := js.Stream(ctx, schemas.StreamChunks)
	if err != nil {
		return nil, streams
	}
	c := s.CachedInfo().Config
	return &c, streams
}

// stopProc sends SIGTERM to cmd and waits for it to exit 0.
func stopProc(t *testing.T, name string, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s exit after SIGTERM: %v", name, err)
	}
}

// Issue 15: an operator set SLUICE_CHUNKS to 20 GiB and no max age; the next `sluice load` set
// it back to 8 GiB and 168 h. Provisioned with `sluice provision`, the settings now survive
// load, serve and worker starts unchanged.
func TestProvisionedSettingsSurviveRestarts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(t.TempDir(), "provision.json")
	if err := os.WriteFile(file, []byte(`{"streams":{"SLUICE_CHUNKS":{"max_bytes":21474836480,"max_age":"0s"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := cliRun(t, nil, "provision", "--data-dir", dir, "--provision-file", file)
	if code != 0 || !strings.Contains(out, "created\tstream SLUICE_CHUNKS") {
		t.Fatalf("provision: exit %d\n%s%s", code, out, errOut)
	}
	want := func(when string) {
		t.Helper()
		c, _ := chunkStreamOn(t, dir)
		if c == nil || c.MaxBytes != 20<<30 || c.MaxAge != 0 {
			t.Fatalf("after %s: SLUICE_CHUNKS %+v, want 20 GiB and no max age", when, c)
		}
	}
	want("provision")
	if out, errOut, code := cliRun(t, nil, "load", "--data-dir", dir, writeChunkFile(t, 20)); code != 0 {
		t.Fatalf("load: exit %d\n%s%s", code, out, errOut)
	}
	want("load")
	s := startServer(t, "serve", nil, "--data-dir", dir)
	// A worker on serve's broker, and a load through it, while serve runs.
	w, wlogs := startProc(t, "worker", nil, "worker", "--data-dir", dir, "--http-addr", freeAddr(t))
	if out, errOut, code := cliRun(t, nil, "load", "--data-dir", dir, "--force", writeChunkFile(t, 20)); code != 0 {
		t.Fatalf("load on serve: exit %d\n%s%s", code, out, errOut)
	}
	stopProc(t, "worker", w)
	stopProc(t, "serve", s.cmd)
	if strings.Contains(wlogs.String()+s.logs.String(), "conflicts") {
		t.Errorf("conflicts reported on streams provisioned by sluice provision:\n%s%s", wlogs, s.logs)
	}
	want("serve and worker")
	// The provision command keeps what it is not given: the replicas alone leave the sizes.
	if out, errOut, code := cliRun(t, nil, "provision", "--data-dir", dir, "--stream-replicas", "1"); code != 0 || !strings.Contains(out, "kept\tstream SLUICE_CHUNKS") {
		t.Fatalf("provision again: exit %d\n%s%s", code, out, errOut)
	}
	want("provision with only the replicas")
	// And sets what it is given: flags over the file.
	out, errOut, code = cliRun(t, nil, "provision", "--data-dir", dir, "--provision-file", file, "--stream-max-bytes", "-1", "--json")
	if code != 0 || !strings.Contains(out, `"max_bytes: 21474836480 -> -1"`) {
		t.Fatalf("provision with a flag over the file: exit %d\n%s%s", code, out, errOut)
	}
}

// --provision off on an empty broker fails naming what is missing, says to run sluice
// provision, and creates nothing.
func TestProvisionOffOnEmptyBroker(t *testing.T) {
	for _, mode := range []string{"worker", "load"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			args := []string{mode, "--provision", "off", "--data-dir", dir}
			if mode == "load" {
				args = append(args, writeChunkFile(t, 1))
			} else {
				args = append(args, "--http-addr", freeAddr(t))
			}
			out, errOut, code := cliRun(t, nil, args...)
			if code != exitFailure || !strings.Contains(errOut, "run `sluice provision`") || !strings.Contains(errOut, "stream SLUICE_CHUNKS") ||
				!strings.Contains(errOut, "stream SLUICE_COMMANDS") || !strings.Contains(errOut, "bucket sluice_jobs") {
				t.Fatalf("exit %d, want 1 naming what is missing\n%s%s", code, out, errOut)
			}
			if _, streams := chunkStreamOn(t, dir); len(streams) != 0 {
				t.Fatalf("--provision off created %q", streams)
			}
		})
	}
}

// Bad provisioning values are usage errors (exit 2), before anything opens.
func TestProvisionFlagChecks(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"streams":{"SLUICE_CHUNKS":{"max_byte":1}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"provision", "--stream-replicas", "0"}, "--stream-replicas 0: want 1 to 5"},
		{[]string{"provision", "--stream-replicas", "-1"}, "--stream-replicas -1"},
		{[]string{"provision", "--stream-replicas", "6"}, "--stream-replicas 6"},
		{[]string{"worker", "--stream-replicas", "6"}, "--stream-replicas 6"},
		{[]string{"load", "--stream-max-bytes", "0", "x.jsonl"}, "--stream-max-bytes 0"},
		{[]string{"serve", "--provision", "always"}, `--provision "always"`},
		{[]string{"api", "--provision", "provision"}, "run sluice provision"},
		{[]string{"provision", "--stream-max-age", "-1s"}, "--stream-max-age -1s"},
		{[]string{"provision", "--provision-file", bad}, `unknown field "max_byte"`},
		{[]string{"provision", "--stream-placement-tags", " , "}, "placement names neither"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append(tc.args, "--data-dir", t.TempDir())
			if tc.args[0] == "load" {
				args = append(args, writeChunkFile(t, 1))
			}
			_, errOut, code := cliRun(t, nil, args...)
			if code != exitUsage || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, want 2 saying %q\n%s", code, tc.want, errOut)
			}
		})
	}
	// The variables are read like the flags.
	if _, errOut, code := cliRun(t, []string{"SLUICE_STREAM_REPLICAS=6"}, "provision", "--data-dir", t.TempDir()); code != exitUsage || !strings.Contains(errOut, "--stream-replicas 6") {
		t.Fatalf("SLUICE_STREAM_REPLICAS=6: exit %d\n%s", code, errOut)
	}
}

// More replicas than the broker has servers: NATS's refusal, wrapped to say why (exit 1).
func TestProvisionReplicasBeyondTheBroker(t *testing.T) {
	out, errOut, code := cliRun(t, nil, "provision", "--data-dir", t.TempDir(), "--stream-replicas", "3")
	if code != exitFailure || !strings.Contains(errOut, "replicas > 1 not supported") || !strings.Contains(errOut, "needs at least 3 servers") {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
}

// startPermissioned runs a nats-server with deployments/nats/permissions.conf and returns its
// URL and each role's environment for a sluice process.
func startPermissioned(t *testing.T) (url string, roleEnv func(role string) []string) {
	t.Helper()
	pw := func(role string) string { return "pw-" + role + "-0123456789abcdef" }
	for _, role := range []string{"API", "WORKER", "LOADER", "OPERATOR"} {
		t.Setenv("SLUICE_NATS_"+role+"_PASSWORD", pw(role))
	}
	ns := embeddedtest.StartConfigured(t, "../../deployments/nats/permissions.conf", nil)
	return ns.ClientURL(), func(role string) []string {
		return []string{"NATS_URL=" + ns.ClientURL(), "NATS_USER=sluice-" + role, "NATS_PASSWORD=" + pw(strings.ToUpper(role)), "SLUICE_PROVISION=off"}
	}
}

// The roles of deployments/nats/permissions.conf end to end: the operator provisions; a worker
// and the API (and a load, as the API's user) run with --provision off, without any
// stream-admin permission, and a job is loaded and drained through them.
func TestRolesEndToEndWithProvisionOff(t *testing.T) {
	_, env := startPermissioned(t)
	if out, errOut, code := cliRun(t, env("operator"), "provision", "--stream-max-age", "72h"); code != 0 {
		t.Fatalf("provision as sluice-operator: exit %d\n%s%s", code, out, errOut)
	}
	_, wlogs := startProc(t, "worker", env("worker"), "worker", "--data-dir", t.TempDir(), "--http-addr", freeAddr(t))
	s := startServer(t, "api", env("api"), "--data-dir", t.TempDir())
	const n = 50
	out, errOut, code := cliRun(t, env("api"), "load", "--data-dir", t.TempDir(), "--json", writeChunkFile(t, n))
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"written": %d`, n)) {
		t.Fatalf("load as sluice-api: exit %d\n%s%s\nworker:\n%s", code, out, errOut, wlogs)
	}
	for name, logs := range map[string]string{"worker": wlogs.String(), "api": s.logs.String(), "load": errOut} {
		if strings.Contains(strings.ToLower(logs), "permissions violation") {
			t.Errorf("%s hit a permissions violation:\n%s", name, logs)
		}
	}
}
