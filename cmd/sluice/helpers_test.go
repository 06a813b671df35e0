package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// server is a running sluice binary (serve or api) with its HTTP base URL and its logs.
type server struct {
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
}

// syncBuffer is a bytes.Buffer that the process's output goroutine and the test may use at
// once.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc starts the sluice binary with args and the extra environment (after
// SLUICE_LOG_LEVEL=warn), its standard error kept in the returned buffer. When the test ends
// the process is killed if still running, and its log is printed, under label, if the test
// failed.
func startProc(t *testing.T, label string, env []string, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(append(os.Environ(), "SLUICE_LOG_LEVEL=warn"), env...)
	logs := &syncBuffer{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s logs:\n%s", label, logs.String())
		}
	})
	return cmd, logs
}

// startServer runs `sluice <mode> --http-addr <free> args...` with extra environment, waits
// until /readyz answers 200, and kills it (printing its logs on failure) when the test ends.
func startServer(t *testing.T, mode string, env []string, args ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	cmd, logs := startProc(t, mode, env, append([]string{mode, "--http-addr", addr}, args...)...)
	s := &server{cmd: cmd, base: "http://" + addr, logs: logs}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := http.Get(s.base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 30 s", mode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
