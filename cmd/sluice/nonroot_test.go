//go:build linux

package main

import (
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
)

// nonroot is the uid and gid of the container image's user (distroless "nonroot").
const nonroot = 65532

// asImageUser returns a command running the sluice binary with args as the image's user when
// the test runs as root (copied where that user may execute it), else as the current user.
func asImageUser(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	bin := binary
	if os.Getuid() == 0 {
		bin = filepath.Join(dir, "sluice")
		if _, err := os.Stat(bin); err == nil {
			return imageCmd(bin, dir, args)
		}
		data, err := os.ReadFile(binary)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return imageCmd(bin, dir, args)
}

// imageCmd runs bin with args, as the image's user when the test runs as root.
func imageCmd(bin, dir string, args []string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SLUICE_LOG_LEVEL=warn", "HOME="+dir)
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nonroot, Gid: nonroot}}
	}
	return cmd
}

// imageDir returns a directory every user may enter, removed when the test ends.
func imageDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-image-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Issue 15: the image runs as uid 65532 with its data on a volume, and every mode failed
// opening SQLite with "unable to open database file (14)" when the volume was not the user's.
// On a fresh data directory the user owns (what the image's /data gives a new volume), serve
// starts, stores and all, and `sluice health` — the image's health check, the image having no
// shell or curl — says so.
func TestServesAsImageUserOnFreshVolume(t *testing.T) {
	dir := imageDir(t)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 {
		if err := os.Chown(data, nonroot, nonroot); err != nil {
			t.Fatal(err)
		}
	}
	addr, ops := freeAddr(t), freeAddr(t)
	serve := asImageUser(t, dir, "serve", "--data-dir", data, "--http-addr", addr, "--ops-addr", ops)
	logs := &syncBuffer{}
	serve.Stderr = logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
		if t.Failed() {
			t.Logf("serve logs:\n%s", logs.String())
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/readyz"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("serve as the image's user not ready after 60 s")
		}
	}
	// The health check asks the ops listener (SLUICE_OPS_ADDR, as the image sets it), and the
	// API's /healthz with --http-addr.
	hc := asImageUser(t, dir, "health")
	hc.Env = append(hc.Env, "SLUICE_OPS_ADDR="+ops)
	out, err := hc.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sluice health (ops listener): %v: %s", err, out)
	}
	out, err = asImageUser(t, dir, "health", "--http-addr", addr).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("sluice health --http-addr: %v: %s", err, out)
	}
	// The ops listener of the process run as the image's user is ready and scraped without
	// a token.
	if p, ok := get("http://" + ops + "/readyz"); !ok || p.code != http.StatusOK {
		t.Fatalf("ops /readyz = %+v", p)
	}
	if p, ok := get("http://" + ops + "/metrics"); !ok || p.code != http.StatusOK || !strings.Contains(string(p.body), "process_open_fds") {
		t.Fatalf("ops /metrics = %d", p.code)
	}
	for _, f := range []string{"documents.db", "graph.db", "requirements.db"} {
		fi, err := os.Stat(filepath.Join(data, f))
		if err != nil {
			t.Fatalf("store %s not created: %v", f, err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Getuid() == 0 && st.Uid != nonroot {
			t.Errorf("%s owned by uid %d, want %d", f, st.Uid, nonroot)
		}
	}
	// The health check fails, with exit status 1, when nothing answers.
	nothing := freeAddr(t)
	out, err = asImageUser(t, dir, "health", "--ops-addr", nothing, "--timeout", "1s").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), nothing+"/healthz") {
		t.Fatalf("health of nothing: %v: %s", err, out)
	}
	// With the ops listener off there is nothing to ask: a usage error saying so.
	out, err = asImageUser(t, dir, "health", "--ops-addr", "off").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--http-addr") {
		t.Fatalf("health with the ops listener off: %v: %s", err, out)
	}
}

// Issue 15: a data directory the user cannot write (a root-owned volume) fails at once, with
// exit status 1, naming the directory, its mode and the user — not SQLite's error code later —
// and leaves nothing behind.
func TestUnwritableDataDirSaysWhy(t *testing.T) {
	dir := imageDir(t)
	data := filepath.Join(dir, "data")
	mode := os.FileMode(0o755) // root's, as a new volume
	if os.Getuid() != 0 {
		mode = 0o555 // this user's, but read-only
	}
	if err := os.Mkdir(data, mode); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(data, 0o700) })
	file := filepath.Join(dir, "chunks.jsonl")
	chunks, err := os.ReadFile(writeChunkFile(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, chunks, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"serve", "--data-dir", data, "--http-addr", freeAddr(t)},
		{"worker", "--data-dir", data},
		{"load", "--data-dir", data, "--env", "dev", file},
	} {
		out, err := asImageUser(t, dir, args...).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Fatalf("%s: exit %v, want 1: %s", args[0], err, out)
		}
		for _, want := range []string{"data directory " + data, fmt.Sprintf("mode %#o", mode), "not writable by this process", "permission denied", "chown"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s: error lacks %q: %s", args[0], want, out)
			}
		}
		if entries, _ := os.ReadDir(data); len(entries) != 0 {
			t.Errorf("%s left %d entries in the data directory", args[0], len(entries))
		}
	}
}

// The image itself (Docker is not on the test machines, so its file is read): it runs as the
// user the tests above run as, with /data created owned by that user, checks its health with
// the binary, stamps its version, and the build context leaves out history and local data.
func TestImageFileRunsAsNonRoot(t *testing.T) {
	dockerfile, err := os.ReadFile("../../deployments/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"USER 65532:65532",
		"COPY --from=build --chown=65532:65532 /out/data /data",
		`HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 CMD ["/usr/local/bin/sluice", "health"]`,
		"-X main.buildVersion=${VERSION}",
		"org.opencontainers.image.version=",
		// The ops listener answers the kubelet and Prometheus from outside the container.
		"SLUICE_OPS_ADDR=0.0.0.0:9090",
		"EXPOSE 8080 9090",
	} {
		if !strings.Contains(string(dockerfile), want) {
			t.Errorf("deployments/Dockerfile lacks %q", want)
		}
	}
	ignore, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(ignore), "\n")
	for _, want := range []string{".git", ".sluice", "**/.sluice", "/sluice"} {
		if !slices.Contains(lines, want) {
			t.Errorf(".dockerignore lacks %q", want)
		}
	}
}
