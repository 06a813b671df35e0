package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
)

// run returned the exit status itself (an int); it now returns the error and main maps it.
// The statuses and what is said on stderr must be the ones it gave.
func TestExitStatus(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		want    int
		wantOut string
	}{
		{"ok", nil, 0, ""},
		{"usage", usageError{"load: name at least one FILE"}, 2, "sluice: load: name at least one FILE\n"},
		{"usage said already", usageError{""}, 2, ""},
		{"rejected", fmt.Errorf("wait: %w", errRejected), 3, ""},
		{"interrupted", errInterrupted, 130, ""},
		{"failure", errors.New("open graph store: boom"), 1, "sluice: open graph store: boom\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w bytes.Buffer
			if got := exitStatus(&w, tc.err); got != tc.want || w.String() != tc.wantOut {
				t.Fatalf("exitStatus(%v) = %d, said %q; want %d, %q", tc.err, got, w.String(), tc.want, tc.wantOut)
			}
		})
	}
}

// Cobra's own refusals (unknown command, bad flag) come back from run as usage errors.
func TestRunRefusalsAreUsageErrors(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, args := range [][]string{{"nosuch"}, {"version", "--nosuch-flag"}, {}, {"jobs", "nosuch"}} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr, log)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("run(%q) = %v (%T), want a usageError", args, err, err)
		}
	}
	var stdout bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &stdout, io.Discard, log); err != nil || !bytes.HasPrefix(stdout.Bytes(), []byte("sluice ")) {
		t.Fatalf("run(version) = %v, printed %q", err, stdout.String())
	}
}
