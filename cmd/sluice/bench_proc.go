package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// benchProc is a sluice child process started by a bench scenario (serve or worker): the same
// binary as the bench, so its resident memory is measured on its own. Its standard error goes
// to a bounded buffer, shown when the scenario fails.
type benchProc struct {
	name string
	cmd  *exec.Cmd
	logs *tailBuffer
	done chan struct{} // closed when the process has exited and been waited for
	err  error         // the exit, set before done closes
}

// startBenchProc starts the running executable with args and extra environment. It does not
// wait for the process to be ready.
func startBenchProc(name string, args, env []string) (*benchProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: find the sluice binary: %w", err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_LEVEL=warn"), env...)
	p := &benchProc{name: name, cmd: cmd, logs: &tailBuffer{max: 64 << 10}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has already ended, with its exit.
func (p *benchProc) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits up to grace for the process to drain and exit, then kills
// it. It blocks until the process is gone and is safe to call more than once.
func (p *benchProc) stop(grace time.Duration) error {
	if ok, err := p.exited(); ok {
		return err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("bench: %s did not stop within %s after SIGTERM; killed", p.name, grace)
	}
}

// failed wraps err with the tail of the process's logs.
func (p *benchProc) failed(err error) error {
	return fmt.Errorf("%w\n--- %s logs (tail) ---\n%s", err, p.name, p.logs.String())
}

// memory reads the process's peak and current resident set size in bytes from
// /proc/<pid>/status (VmHWM, VmRSS). It returns zeros where /proc is not available.
func (p *benchProc) memory() (peak, now int64) {
	return procMemory(p.cmd.Process.Pid)
}

func procMemory(pid int) (peak, now int64) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			continue
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmHWM":
			peak = n << 10
		case "VmRSS":
			now = n << 10
		}
	}
	return peak, now
}

// freeLoopbackAddr picks a free loopback TCP address for a child process to listen on. Another
// process may take it before the child does; the child then fails to start and says so.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitFor calls check every interval until it returns true, an error, the process exits, or
// timeout passes. It blocks.
func waitFor(ctx context.Context, p *benchProc, timeout, interval time.Duration, what string, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := check(ctx)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if ok {
			return nil
		}
		if p != nil {
			if gone, exit := p.exited(); gone {
				return fmt.Errorf("bench: %s exited while waiting for %s: %v", p.name, what, exit)
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("bench: %s not reached within %s", what, timeout)
			}
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// tailBuffer keeps the last max bytes written to it (a child's logs, bounded however long it
// runs). Safe for concurrent use.
type tailBuffer struct {
	max int
	mu  sync.Mutex // guards b
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// mib formats bytes as MiB with one decimal.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
