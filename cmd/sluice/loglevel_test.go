package main

import (
	"errors"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
)

// An invalid SLUICE_LOG_LEVEL silently became info (issue 16): an operator asking for debug
// logs during an incident got none without a word. It is now refused at start-up, exit 2,
// naming the variable and what it takes.
func TestLogLevelRefusedWhenInvalid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want slog.Level
		ok   bool
	}{
		{"", slog.LevelInfo, true},
		{"debug", slog.LevelDebug, true},
		{" WARN ", slog.LevelWarn, true},
		{"error", slog.LevelError, true},
		{"warn+2", slog.LevelWarn + 2, true},
		{"verbose", 0, false},
		{"debg", 0, false},
		{"3", 0, false},
	} {
		got, err := parseLogLevel(tc.in)
		var ue usageError
		switch {
		case tc.ok && (err != nil || got != tc.want):
			t.Errorf("parseLogLevel(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		case !tc.ok && (!errors.As(err, &ue) || !strings.Contains(err.Error(), "SLUICE_LOG_LEVEL")):
			t.Errorf("parseLogLevel(%q) = %v, %v; want a usage error naming SLUICE_LOG_LEVEL", tc.in, got, err)
		}
	}
	// The binary itself: exit 2 and the reason, before anything starts.
	cmd := exec.Command(binary, "version")
	cmd.Env = append(cmd.Environ(), "SLUICE_LOG_LEVEL=verbose")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `SLUICE_LOG_LEVEL "verbose": want debug, info, warn or error`) {
		t.Fatalf("sluice version with SLUICE_LOG_LEVEL=verbose: %v\n%s", err, out)
	}
}
