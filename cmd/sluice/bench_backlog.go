package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/files"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The modes of bench backlog: where the broker holding the backlog runs while one worker
// drains it.
const (
	// backlogEmbedded: `sluice worker` with no NATS URL, so it starts the embedded broker on
	// the data directory that holds the backlog, in its own process.
	backlogEmbedded = "embedded"
	// backlogClient: `sluice worker --nats-url` against a broker in another process (the
	// bench's own embedded nats-server: the same server, configured the same way).
	backlogClient = "client"
)

// backlogBenchConfig configures bench backlog.
type backlogBenchConfig struct {
	// Chunks queued before the worker starts.
	Chunks int
	// Modes to run, in order (backlogEmbedded, backlogClient).
	Modes []string
	// Timeout bounds each mode's drain.
	Timeout time.Duration
	// Dir holds the working files and the brokers' data. Empty: the system temporary directory.
	Dir    string
	Logger *slog.Logger
}

// backlogModeResult is one mode's drain. Memory in bytes.
type backlogModeResult struct {
	Mode     string  `json:"mode"`
	Chunks   int64   `json:"chunks"`
	PublishS float64 `json:"publish_s"`
	// StartupS is from the worker's start to its first written chunk (broker recovery,
	// store opening); DrainS from its start to the last one.
	StartupS     float64 `json:"startup_s"`
	DrainS       float64 `json:"drain_s"`
	DocsPerS     float64 `json:"docs_per_s"`
	Written      int64   `json:"written"`
	DeadLettered int64   `json:"dead_lettered"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
	EndRSS       int64   `json:"end_rss_bytes"`
	// WorkerCPUS is the worker process's CPU time (user + system) from its start to the last
	// chunk written, the embedded broker's included in mode embedded; 0 where /proc is
	// missing. On a shared machine it varies less than the drain's wall time.
	WorkerCPUS float64 `json:"worker_cpu_s"`
}

// backlogBenchResult is what bench backlog measured.
type backlogBenchResult struct {
	Chunks int                 `json:"chunks"`
	Modes  []backlogModeResult `json:"modes"`
}

// writeBacklogFile writes n chunks of about 150 bytes as NDJSON.
func writeBacklogFile(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		fmt.Fprintf(w, `{"chunk_id":"backlog_%08d","content":"Chunk %d of the backlog benchmark, with enough text to be a realistic chunk of rules text."}`+"\n", i, i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// brokerConn is a client connection to a broker with the job store on it.
type brokerConn struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	jobs *jobs.Store
}

func connectBroker(ctx context.Context, ep embedded.Endpoint) (*brokerConn, error) {
	nc, err := sjs.Connect(ctx, sjs.ConnConfig{URL: ep.URL, User: ep.User, Password: ep.Password, Name: "sluice bench"})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &brokerConn{nc: nc, js: js, jobs: jobs.NewStore(streams.JobsKV)}, nil
}

// runBacklogBench runs each mode: a fresh broker, the chunk file published as one job with no
// worker running, then one worker process started and timed until the job is done. It blocks.
func runBacklogBench(ctx context.Context, cfg backlogBenchConfig) (backlogBenchResult, error) {
	res := backlogBenchResult{Chunks: cfg.Chunks}
	dir, err := os.MkdirTemp(cfg.Dir, "sluice-bench-backlog-")
	if err != nil {
		return res, fmt.Errorf("bench backlog: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "backlog.jsonl")
	if err := writeBacklogFile(file, cfg.Chunks); err != nil {
		return res, fmt.Errorf("bench backlog: write chunk file: %w", err)
	}
	for i, mode := range cfg.Modes {
		m, err := runBacklogMode(ctx, cfg, mode, file, filepath.Join(dir, fmt.Sprintf("%d-%s", i, mode)))
		if err != nil {
			return res, fmt.Errorf("bench backlog: %s: %w", mode, err)
		}
		res.Modes = append(res.Modes, m)
	}
	return res, nil
}

func runBacklogMode(ctx context.Context, cfg backlogBenchConfig, mode, file, dir string) (res backlogModeResult, err error) {
	res.Mode = mode
	brokerDir := filepath.Join(dir, "broker")
	srv, err := embedded.Start(embedded.Config{DataDir: brokerDir, Logger: cfg.Logger})
	if err != nil {
		return res, err
	}
	defer srv.Shutdown() // safe after an earlier Shutdown
	bc, err := connectBroker(ctx, srv.Endpoint())
	if err != nil {
		return res, err
	}
	defer func() { bc.nc.Close() }()
	jobID, err := publishBacklog(ctx, bc, cfg, file, dir, &res)
	if err != nil {
		return res, err
	}

	args := []string{"worker", "--drain-timeout", "30s"}
	var env []string
	switch mode {
	case backlogEmbedded:
		// The worker opens the broker's store itself: the bench lets go of it first.
		bc.nc.Close()
		srv.Shutdown()
		args = append(args, "--data-dir", brokerDir)
	case backlogClient:
		ep := srv.Endpoint()
		args = append(args, "--data-dir", filepath.Join(dir, "worker"), "--nats-url", ep.URL)
		env = []string{"NATS_USER=" + ep.User, "NATS_PASSWORD=" + string(ep.Password)} // not flags: ps shows them
	default:
		return res, fmt.Errorf("unknown mode %q", mode)
	}
	start := time.Now()
	w, err := startBenchProc("sluice worker", args, env)
	if err != nil {
		return res, err
	}
	defer func() {
		if stopErr := w.stop(60 * time.Second); stopErr != nil && err == nil {
			err = w.failed(stopErr)
		}
	}()
	if mode == backlogEmbedded {
		// Progress is read from the worker's own broker, found through the data directory.
		if err := waitFor(ctx, w, 5*time.Minute, 50*time.Millisecond, "the worker's embedded broker", func(ctx context.Context) (bool, error) {
			ep, err := embedded.Discover(brokerDir)
			if err != nil || ep.URL == "" {
				return false, err
			}
			if bc, err = connectBroker(ctx, ep); err != nil {
				return false, nil // started, not yet accepting clients
			}
			return true, nil
		}); err != nil {
			return res, w.failed(err)
		}
	}
	first, last, err := waitDrained(ctx, w, bc, jobID, start, cfg.Timeout)
	if err != nil {
		return res, err
	}
	drain := time.Since(start)
	res.PeakRSS, res.EndRSS = w.memory()
	res.WorkerCPUS = procCPU(w.cmd.Process.Pid)
	res.StartupS, res.DrainS = first.Seconds(), drain.Seconds()
	res.Written, res.DeadLettered = last.Written, last.DeadLettered
	res.DocsPerS = float64(last.Written) / drain.Seconds()
	if last.State != jobs.JobCompleted || last.Written != res.Chunks {
		return res, fmt.Errorf("the job ended %s with %d of %d written, %d dead-lettered", last.State, last.Written, res.Chunks, last.DeadLettered)
	}
	return res, nil
}

// publishBacklog publishes file as one job with no worker running, notes the publish time and
// the chunks in res, and returns the job's id. Fewer chunks published than cfg.Chunks is an
// error.
func publishBacklog(ctx context.Context, bc *brokerConn, cfg backlogBenchConfig, file, dir string, res *backlogModeResult) (string, error) {
	loader, err := intake.NewLoader(intake.LoaderConfig{JS: bc.js, Jobs: bc.jobs, SpoolDir: filepath.Join(dir, "spool")})
	if err != nil {
		return "", err
	}
	start := time.Now()
	lr, err := loader.Load(ctx, intake.LoadRequest{Env: "dev", Path: file, Format: files.Format("jsonl")})
	if err != nil {
		return "", fmt.Errorf("publish the backlog: %w", err)
	}
	res.PublishS = time.Since(start).Seconds()
	res.Chunks = lr.Published
	if lr.Published != int64(cfg.Chunks) {
		return "", fmt.Errorf("published %d of %d chunks (rejected %d)", lr.Published, cfg.Chunks, lr.Rejected)
	}
	return lr.JobID, nil
}

// waitDrained waits up to timeout for the worker w to finish job jobID, reading its progress
// through bc, and returns when the first chunk was written (since start) and the job's last
// record.
func waitDrained(ctx context.Context, w *benchProc, bc *brokerConn, jobID string, start time.Time, timeout time.Duration) (first time.Duration, last jobs.Job, err error) {
	err = waitFor(ctx, w, timeout, 100*time.Millisecond, "the backlog drained", func(ctx context.Context) (bool, error) {
		j, err := bc.jobs.Get(ctx, jobID)
		if err != nil {
			return false, nil // the broker may be busy recovering; the timeout bounds it
		}
		last = j
		if first == 0 && j.Written > 0 {
			first = time.Since(start)
		}
		return j.Sealed && jobDone(j), nil
	})
	if err != nil {
		return first, last, w.failed(fmt.Errorf("%w (last: state %s written %d of %d)", err, last.State, last.Written, last.Published))
	}
	return first, last, nil
}

// procCPU returns the CPU time (user + system) process pid has used so far, in seconds, from
// /proc/<pid>/stat (utime and stime, in USER_HZ ticks: 100 a second on Linux); 0 if it cannot
// be read.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid …": comm may hold spaces, so count fields after its ')'.
	i := strings.LastIndex(string(b), ") ")
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b)[i+2:])
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0
	}
	const userHZ = 100
	return float64(utime+stime) / userHZ
}
