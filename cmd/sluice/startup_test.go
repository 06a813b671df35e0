package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// probe is one answer of the starting or running API.
type probe struct {
	code       int
	retryAfter string
	body       []byte
	checks     map[string]string
}

// get answers GET url, or ok=false when nothing answered.
func get(url string) (p probe, ok bool) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return p, false
	}
	defer resp.Body.Close()
	p.code, p.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	p.body, _ = io.ReadAll(resp.Body)
	var doc struct {
		Checks map[string]string `json:"checks"`
	}
	_ = json.Unmarshal(p.body, &doc)
	p.checks = doc.Checks
	return p, true
}

// Issue 11: while `serve` waited for AstraDB at start-up (retrying 503s), nothing listened on
// the API's port, so an orchestrator could not tell "starting, waiting for AstraDB" from
// "dead". Now the port is bound first: /healthz answers 200, /readyz 503 naming the wait and
// its last error, other routes 503 with Retry-After; once AstraDB answers, the same port
// serves the API and a job submitted there lands.
func TestServeSaysWhatItWaitsFor(t *testing.T) {
	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	double.SetFaultRate(1, dataapitest.FaultHTTP503)
	addr := freeAddr(t)
	base := "http://" + addr
	cmd, logs := startProc(t, "serve", []string{"ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
		"serve", "--http-addr", addr, "--data-dir", filepath.Join(t.TempDir(), "data"))

	// /readyz names the wait once the first try failed.
	checkStartupWait(t, base, double.Token())

	// The CLI started now waits out the 503s (Retry-After) and gets its answer once serve is up.
	cli := startRetryingCLI(t, base)

	// AstraDB comes back: the same port turns ready and takes a job.
	double.SetFaultRate(0)
	for deadline := time.Now().Add(40 * time.Second); ; {
		if p, ok := get(base + "/readyz"); ok && p.code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("serve not ready 40 s after AstraDB came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cli.checkDone(t)
	body, err := os.ReadFile("../../testdata/chunks/passA_chunks.json")
	if err != nil {
		t.Fatal(err)
	}
	sub := mustPostJSON(t, base+"/v1/jobs?env=dev", body, http.StatusAccepted)
	waitJobCompleted(t, base, sub["job_id"].(string))
	if n := len(double.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 20 {
		t.Fatalf("AstraDB holds %d chunk documents, want 20", n)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve exit: %v", err)
	}
	if strings.Contains(logs.String(), double.Token()) {
		t.Fatal("the AstraDB token appears in the logs")
	}
}

// checkStartupWait waits until /readyz of the starting server at base names the wait for
// AstraDB, and checks the answers while it waits: /readyz 503 with Retry-After and the last
// error but not the token, /healthz 200, other routes 503 with Retry-After.
func checkStartupWait(t *testing.T, base, token string) {
	t.Helper()
	var ready probe
	for deadline := time.Now().Add(30 * time.Second); ; {
		p, ok := get(base + "/readyz")
		if ok && strings.HasPrefix(p.checks["startup"], "waiting for AstraDB (requirements store)") {
			ready = p
			break
		}
		if ok && p.code == http.StatusOK {
			t.Fatalf("serve is ready while AstraDB answers 503: %s", p.body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said what start-up waits for; last: %v %d %s", ok, p.code, p.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if ready.code != http.StatusServiceUnavailable || ready.retryAfter == "" {
		t.Fatalf("/readyz while waiting = %d (Retry-After %q), want 503 with Retry-After", ready.code, ready.retryAfter)
	}
	if !strings.Contains(ready.checks["startup"], "503") {
		t.Fatalf("/readyz does not give the last error: %q", ready.checks["startup"])
	}
	if bytes.Contains(ready.body, []byte(token)) {
		t.Fatal("/readyz shows the AstraDB token")
	}
	if p, ok := get(base + "/healthz"); !ok || p.code != http.StatusOK {
		t.Fatalf("/healthz while waiting = %v %d, want 200", ok, p.code)
	}
	if p, ok := get(base + "/v1/jobs"); !ok || p.code != http.StatusServiceUnavailable || p.retryAfter == "" {
		t.Fatalf("GET /v1/jobs while waiting = %v %d (Retry-After %q), want 503 with Retry-After", ok, p.code, p.retryAfter)
	}
}

// bgCLI is a CLI process running in the background, its output captured.
type bgCLI struct {
	cmd         *exec.Cmd
	out, errOut *syncBuffer
	done        chan error // its Wait's result
}

// startBgCLI starts the binary with args, the environment extended by env, in the background.
func startBgCLI(t *testing.T, env []string, args ...string) *bgCLI {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	c := &bgCLI{cmd: cmd, out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = c.out, c.errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- cmd.Wait() }()
	return c
}

// startRetryingCLI starts `sluice jobs ls --json` against base, a server that is not ready
// yet, and waits until it says it is sending again after a 503.
func startRetryingCLI(t *testing.T, base string) *bgCLI {
	t.Helper()
	c := startBgCLI(t, []string{"SLUICE_API_URL=" + base}, "jobs", "ls", "--json")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(c.errOut.String(), "sending again in"); {
		if time.Now().After(deadline) {
			t.Fatalf("sluice jobs ls did not wait for the starting server; stderr: %s", c.errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// checkDone checks that the retrying CLI exits, within 30 s of the server being ready, with
// its answer, having waited out the 503s.
func (c *bgCLI) checkDone(t *testing.T) {
	t.Helper()
	select {
	case err := <-c.done:
		if err != nil || !strings.Contains(c.errOut.String(), "503 Service Unavailable") || !strings.Contains(c.errOut.String(), "sending again in") {
			t.Fatalf("sluice jobs ls during start-up: %v\nstdout: %s\nstderr: %s", err, c.out.String(), c.errOut.String())
		}
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		t.Fatalf("sluice jobs ls still waiting 30 s after serve was ready; stderr: %s", c.errOut.String())
	}
}

// Issue 11: the API's port was bound only after every store had opened, so a port already in
// use went unnoticed while serve waited for AstraDB (for as long as it answered 503). It now
// fails at once, saying so.
func TestServePortInUseFailsAtOnce(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	double.SetFaultRate(1, dataapitest.FaultHTTP503)
	for _, mode := range []string{"serve", "api"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(binary, mode, "--http-addr", held.Addr().String(), "--data-dir", filepath.Join(t.TempDir(), "data"))
			cmd.Env = append(os.Environ(), "SLUICE_LOG_LEVEL=warn", "ASTRA_DB_API_ENDPOINT="+double.URL(), "ASTRA_DB_APPLICATION_TOKEN="+double.Token())
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("%s still running 10 s after start on a port in use; stderr:\n%s", mode, stderr.String())
			}
			if err == nil {
				t.Fatalf("%s exited 0 on a port in use", mode)
			}
			if !strings.Contains(stderr.String(), "address already in use") || !strings.Contains(stderr.String(), held.Addr().String()) {
				t.Fatalf("%s does not say the port is in use:\n%s", mode, stderr.String())
			}
		})
	}
}
