// Package pgtest starts throwaway PostgreSQL servers for tests with the server's own
// initdb and pg_ctl: a cluster in a temporary directory, listening on a free loopback port
// and a unix socket in that directory, with fsync off (test data only).
//
// Binaries are looked up in PATH, then in /usr/lib/postgresql/*/bin (newest first). When
// the test process runs as root, initdb refuses to run, so the binaries run as the
// "postgres" OS user and the temporary directory is handed to that user.
//
// Without the binaries, tests skip with a loud message, unless the environment variable CI
// is set: then they fail, so CI never silently skips the PostgreSQL tests.
//
// Share one cluster per test binary from TestMain:
//
//	var pg *pgtest.Cluster
//	func TestMain(m *testing.M) {
//		pg = pgtest.StartCluster()
//		code := m.Run()
//		pg.Stop()
//		os.Exit(code)
//	}
//	func TestX(t *testing.T) { dsn := pg.Database(t) ... }
//
// A test that crashes the server starts its own with StartClusterWith(Config{Durable: true})
// and calls Crash and Restart (same port, same data).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoBinaries is wrapped by the start error when initdb or pg_ctl cannot be found.
var ErrNoBinaries = errors.New("pgtest: initdb/pg_ctl not found (install PostgreSQL server binaries)")

// Config says how StartClusterWith sets a server up; the zero value is StartCluster's.
type Config struct {
	// Durable turns synchronous_commit on: COMMIT returns only once the transaction's WAL has
	// reached the kernel, so a crash of the server (Crash) loses no committed transaction.
	// Off (the default, faster) a crash may lose the commits of the last ≈0.6 s
	// (3 × wal_writer_delay) — acknowledged writes gone, which a crash test must not blame on
	// the code under test. fsync stays off either way: tests crash the server, never the
	// machine, and the kernel keeps what was written.
	Durable bool
}

// Cluster is a running throwaway PostgreSQL server, or the reason none could start. Its
// methods are safe for concurrent use.
type Cluster struct {
	err     error
	cfg     Config
	dir     string
	bin     string
	port    int
	opts    string // the server options it was started with, for Restart
	cred    *syscall.Credential
	stopped sync.Once
	ctl     sync.Mutex // serialises Crash, Restart and Stop

	mu sync.Mutex // guards n
	n  int
}

// StartCluster initialises and starts a server. It never returns nil: when the server
// cannot start, the returned Cluster records why, and Database reports it (skip or fail).
// It blocks until the server accepts connections (at most about a minute). Call Stop.
func StartCluster() *Cluster { return StartClusterWith(Config{}) }

// StartClusterWith is StartCluster with cfg (Durable for a server a test will Crash).
func StartClusterWith(cfg Config) *Cluster {
	c := &Cluster{cfg: cfg}
	c.err = c.start()
	if errors.Is(c.err, ErrNoBinaries) {
		fmt.Fprintf(os.Stderr, "\n*** pgtest: PostgreSQL TESTS WILL NOT RUN: %v ***\n\n", c.err)
	}
	return c
}

// Err returns why the cluster did not start, or nil.
func (c *Cluster) Err() error { return c.err }

// Start starts a cluster of its own for t (one per call; prefer a shared Cluster), creates
// a database and returns its DSN. The cluster is stopped when t ends. It skips t when no
// binaries exist (fails when CI is set) and fails t on any other start error.
func Start(t testing.TB) string {
	t.Helper()
	c := StartCluster()
	t.Cleanup(c.Stop)
	return c.Database(t)
}

// Database creates a new empty database in the cluster and returns a DSN for it
// ("postgres://postgres@127.0.0.1:port/name?sslmode=disable"). When the cluster did not
// start it skips t (no binaries, CI unset) or fails it. Must be called from the test goroutine.
func (c *Cluster) Database(t testing.TB) string {
	t.Helper()
	if c.err != nil {
		if errors.Is(c.err, ErrNoBinaries) && os.Getenv("CI") == "" {
			t.Skipf("*** SKIPPING PostgreSQL test: %v ***", c.err)
		}
		t.Fatalf("pgtest: no PostgreSQL server: %v", c.err)
	}
	c.mu.Lock()
	c.n++
	name := fmt.Sprintf("t%d", c.n)
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		t.Fatalf("pgtest: connect to admin database: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	return c.dsn(name)
}

func (c *Cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// Stop stops the server at once (pg_ctl stop -m immediate) and removes its directory.
// Idempotent; a cluster that never started is a no-op.
func (c *Cluster) Stop() {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	c.stopped.Do(func() {
		if c.dir == "" {
			return
		}
		if c.err == nil {
			_, _ = c.run(filepath.Join(c.bin, "pg_ctl"), "stop", "-D", c.data(), "-m", "immediate", "-w")
		}
		_ = os.RemoveAll(c.dir)
	})
}

// Crash stops the server the way a crash would (pg_ctl stop -m immediate: every server
// process quits at once, no checkpoint, shared buffers lost; the next start replays the WAL)
// and keeps its directory for Restart. It blocks until the server is gone (at most about a
// minute). Connections open at the time fail; new ones are refused until Restart.
func (c *Cluster) Crash() error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.err != nil {
		return c.err
	}
	if out, err := c.run(filepath.Join(c.bin, "pg_ctl"), "stop", "-D", c.data(), "-m", "immediate", "-w", "-t", "60"); err != nil {
		return fmt.Errorf("pgtest: crash (pg_ctl stop -m immediate): %w\n%s", err, out)
	}
	return nil
}

// Restart starts a crashed (or stopped) server again on the same port and directory, with
// the same options, and blocks until it accepts connections (crash recovery included, at most
// about a minute). Databases and DSNs from before stay valid.
func (c *Cluster) Restart() error {
	c.ctl.Lock()
	defer c.ctl.Unlock()
	if c.err != nil {
		return c.err
	}
	out, err := c.run(filepath.Join(c.bin, "pg_ctl"), "start", "-D", c.data(), "-w", "-t", "60",
		"-l", filepath.Join(c.dir, "server.log"), "-o", c.opts)
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		return fmt.Errorf("pgtest: restart on port %d: %w\n%s\n%s", c.port, err, out, log)
	}
	return nil
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// findBin returns the directory holding both initdb and pg_ctl.
func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		_, e1 := os.Stat(filepath.Join(d, "initdb"))
		_, e2 := os.Stat(filepath.Join(d, "pg_ctl"))
		if e1 == nil && e2 == nil {
			return d, nil
		}
	}
	return "", ErrNoBinaries
}

func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

func (c *Cluster) start() error {
	bin, err := findBin()
	if err != nil {
		return err
	}
	c.bin = bin
	// Not t.TempDir(): its parents are mode 0700 and owned by root, so the postgres user
	// could not reach a cluster inside them.
	dir, err := os.MkdirTemp("", "sluice-pg-")
	if err != nil {
		return fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	c.dir = dir
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("pgtest: running as root and no postgres user to run initdb as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return fmt.Errorf("pgtest: hand %s to postgres: %w", dir, err)
		}
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if out, err := c.run(filepath.Join(bin, "initdb"), "-D", c.data(), "-U", "postgres", "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return err
		}
		c.port = port
		syncCommit := "off"
		if c.cfg.Durable {
			syncCommit = "on"
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=%s "+
			"-c full_page_writes=off -c max_connections=300 -c deadlock_timeout=100ms", port, c.dir, syncCommit)
		out, err := c.run(filepath.Join(bin, "pg_ctl"), "start", "-D", c.data(), "-w", "-t", "60",
			"-l", filepath.Join(c.dir, "server.log"), "-o", opts)
		if err == nil {
			c.opts = opts
			return nil
		}
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		lastErr = fmt.Errorf("pgtest: pg_ctl start on port %d: %w\n%s\n%s", port, err, out, log)
	}
	return lastErr
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = c.dir
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	err := cmd.Run()
	return out.Bytes(), err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
