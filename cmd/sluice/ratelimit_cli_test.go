package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Against a real sluice serve whose replay rate is one a second, burst one: the second
// `sluice dlq replay` right after the first got 429 and failed; it now waits and succeeds.
func TestCLIWaitsOutTheServersRateLimit(t *testing.T) {
	s := startServer(t, "serve", []string{"SLUICE_API_RATE_LIMITS=replay=0.5:1"}, "--data-dir", filepath.Join(t.TempDir(), "data"))
	for i := range 2 {
		cmd := exec.Command(binary, "dlq", "replay", "--dry-run", "--job", "j-none")
		cmd.Env = append(os.Environ(), "SLUICE_API_URL="+s.base)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("replay %d: %v\nstdout: %s\nstderr: %s", i+1, err, stdout.String(), stderr.String())
		}
		waited := strings.Contains(stderr.String(), "429 Too Many Requests") && strings.Contains(stderr.String(), "sending again in")
		if i == 0 && waited || i == 1 && !waited {
			t.Fatalf("replay %d: waited %v; stderr: %s", i+1, waited, stderr.String())
		}
		if i == 1 && time.Since(start) < time.Second {
			t.Fatalf("replay 2 took %s: it did not wait for the bucket", time.Since(start))
		}
		if !strings.Contains(stdout.String(), "would replay 0") {
			t.Fatalf("replay %d printed %q", i+1, stdout.String())
		}
	}
}
