package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// binary is the sluice binary built once for the process tests; natsServerBinary is
// nats-server, built from the module version go.mod names.
var binary, natsServerBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sluice")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build sluice: %v\n%s", err, out)
		os.Exit(1)
	}
	// SLUICE_TEST_BINARY runs the process tests against another build (an older commit's, to
	// see a regression test fail before its fix).
	if b := os.Getenv("SLUICE_TEST_BINARY"); b != "" {
		binary = b
	}
	// The fault suite runs nats-server as a process of its own: the same server, from the
	// same module version, as the embedded one.
	natsServerBinary = filepath.Join(dir, "nats-server")
	out, err = exec.Command("go", "build", "-o", natsServerBinary, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build nats-server: %v\n%s", err, out)
		os.Exit(1)
	}
	// The process tests match text log lines (key=value); a child's stderr is no terminal, so
	// without this it would log JSON. TestLogFormat overrides it per process.
	if err := os.Setenv("SLUICE_LOG_FORMAT", "text"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := writeReliabilityReport(); err != nil {
		fmt.Fprintln(os.Stderr, "reliability report:", err)
		code = 1
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// broker is a real embedded nats-server owned by the test, shared by the worker processes.
func startBroker(t *testing.T) (url string, js jetstream.JetStream, streams *sjs.Provisioned) {
	t.Helper()
	srv, _, js := embeddedtest.Start(t, embedded.Config{})
	streams, err := sjs.Provision(context.Background(), js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// The worker processes get the credential in the URL (tests only: a URL shows in ps).
	ep := srv.Endpoint()
	u, err := neturl.Parse(ep.URL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = neturl.UserPassword(ep.User, string(ep.Password))
	return u.String(), js, streams
}

func writeChunkFile(t *testing.T, n int) string {
	t.Helper()
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"chunk_id":"proc_%06d","content":"Chunk %d of a crash test, with enough text to be a realistic chunk of rules text."}`+"\n", i, i)
	}
	p := filepath.Join(t.TempDir(), "crash.jsonl")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func startWorker(t *testing.T, url, dataDir string) *exec.Cmd {
	t.Helper()
	cmd, _ := startProc(t, "worker", nil, "worker", "--nats-url", url, "--data-dir", dataDir, "--drain-timeout", "20s")
	return cmd
}

func waitJob(t *testing.T, jobStore *jobs.Store, id string, cond func(jobs.Job) bool) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var last jobs.Job
	err := jobStore.Watch(ctx, id, func(j jobs.Job) bool { last = j; return cond(j) })
	if err != nil {
		t.Fatalf("job %s: %v (last %+v)", id, err, last)
	}
	return last
}

func TestWorkerKilledMidLoadLosesNothing(t *testing.T) {
	const n = 20000
	url, js, streams := startBroker(t)
	jobStore := jobs.NewStore(streams.JobsKV)
	dataDir := t.TempDir()
	w1 := startWorker(t, url, dataDir)

	loader, err := intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: jobStore})
	if err != nil {
		t.Fatal(err)
	}
	res, err := loader.Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunkFile(t, n)})
	if err != nil {
		t.Fatal(err)
	}
	// Kill the worker with SIGKILL once it has written part of the job.
	mid := waitJob(t, jobStore, res.JobID, func(j jobs.Job) bool { return j.Written > 0 })
	if err := w1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = w1.Wait()
	if mid.Written >= n {
		t.Skipf("the worker finished all %d chunks before it could be killed", n)
	}
	w2, w2logs := startProc(t, "worker", []string{"SLUICE_LOG_LEVEL=info"}, "worker", "--nats-url", url, "--data-dir", dataDir, "--drain-timeout", "20s")
	final := waitJob(t, jobStore, res.JobID, func(j jobs.Job) bool { return j.State.Done() })
	if final.State != jobs.JobCompleted || final.Written != n {
		t.Fatalf("after restart: %+v", final)
	}
	// SIGTERM drains and exits cleanly.
	waitRunning(t, w2logs)
	if err := w2.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w2.Wait(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	if count := storeCount(t, dataDir); count != n {
		t.Fatalf("store holds %d documents, want %d", count, n)
	}
	info, err := streams.ChunkConsumer.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("consumer has %d pending acks and %d undelivered", info.NumAckPending, info.NumPending)
	}
	t.Logf("killed after %d of %d written; restart finished the job", mid.Written, n)
}

func TestSIGTERMDrainsInFlightWork(t *testing.T) {
	const n = 20000
	url, js, streams := startBroker(t)
	jobStore := jobs.NewStore(streams.JobsKV)
	dataDir := t.TempDir()
	w := startWorker(t, url, dataDir)
	loader, err := intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: jobStore})
	if err != nil {
		t.Fatal(err)
	}
	res, err := loader.Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunkFile(t, n)})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, jobStore, res.JobID, func(j jobs.Job) bool { return j.Written > 0 })
	start := time.Now()
	if err := w.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("drain took %s, longer than the grace period", d)
	}
	// Everything acked is in the store and counted; what the drain handed back (nacked)
	// is finished by the next worker.
	job, err := jobStore.Get(context.Background(), res.JobID)
	if err != nil {
		t.Fatal(err)
	}
	count := storeCount(t, dataDir)
	if count < job.Written || job.Written == 0 {
		t.Fatalf("job says %d written, store holds %d", job.Written, count)
	}
	w2, w2logs := startProc(t, "worker", []string{"SLUICE_LOG_LEVEL=info"}, "worker", "--nats-url", url, "--data-dir", dataDir, "--drain-timeout", "20s")
	final := waitJob(t, jobStore, res.JobID, func(j jobs.Job) bool { return j.State.Done() })
	if final.State != jobs.JobCompleted || final.Written != n {
		t.Fatalf("after restart: %+v", final)
	}
	// The job may be complete before the second worker has even installed its signal
	// handler (the first one's drain finished everything): a SIGTERM then kills it outright.
	waitRunning(t, w2logs)
	_ = w2.Process.Signal(syscall.SIGTERM)
	if err := w2.Wait(); err != nil {
		t.Fatalf("second worker exit: %v", err)
	}
	if c := storeCount(t, dataDir); c != n {
		t.Fatalf("store holds %d documents, want %d", c, n)
	}
	info, err := streams.ChunkConsumer.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("consumer has %d pending acks and %d undelivered after a clean stop", info.NumAckPending, info.NumPending)
	}
}

// waitRunning waits (up to 30 s) until a process started with SLUICE_LOG_LEVEL=info logs
// that it runs: its signal handling is in place by then.
func waitRunning(t *testing.T, logs *syncBuffer) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), "sluice running"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the process did not log \"sluice running\" within 30 s")
		}
	}
}

func storeCount(t *testing.T, dataDir string) int64 {
	t.Helper()
	store, err := docstore.Open(context.Background(), docstore.Config{Path: filepath.Join(dataDir, "documents.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	count, err := store.CountDocs(context.Background(), "ttrpg_chunks_dev")
	if err != nil {
		t.Fatal(err)
	}
	return count
}

func TestLoadCommandOnEmbeddedDefault(t *testing.T) {
	dataDir := t.TempDir()
	run := func(args ...string) (string, int) {
		cmd := exec.Command(binary, append([]string{"load", "--data-dir", dataDir, "--json"}, args...)...)
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = os.Stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), code
	}
	out, code := run("../../testdata/chunks/passA_chunks.json")
	if code != 0 {
		t.Fatalf("exit %d, output %s", code, out)
	}
	var raw struct {
		Jobs      []map[string]any `json:"jobs"`
		ElapsedMS *int64           `json:"elapsed_ms"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil || raw.ElapsedMS == nil {
		t.Fatalf("output is not the JSON summary: %v\n%s", err, out)
	}
	if len(raw.Jobs) != 1 || raw.Jobs[0]["state"] != "completed" || raw.Jobs[0]["written"].(float64) != 20 {
		t.Fatalf("summary = %s", out)
	}
	for _, k := range []string{"job_id", "file", "state", "total", "written", "rejected", "dead_lettered"} {
		if _, ok := raw.Jobs[0][k]; !ok {
			t.Errorf("summary lacks %q", k)
		}
	}
	// Rejected items give exit status 3.
	out, code = run("../../testdata/chunks/nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json")
	if code != 3 || !strings.Contains(out, "completed_with_errors") {
		t.Fatalf("nasty file: exit %d, output %s", code, out)
	}
	// Bad usage gives 2.
	if _, code := run("--env", "staging", "x.json"); code != 2 {
		t.Fatalf("bad env: exit %d, want 2", code)
	}
}
