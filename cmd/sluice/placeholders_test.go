package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// deployments/compose.env.example ships change-me placeholders for the NATS passwords, the
// command key and the AstraDB token. Copied unchanged to .env, the stack would run with secrets
// anyone can read in this repository; every command that opens the broker refuses them, names
// the variable (never the value), and leaves nothing behind.
func TestExamplePlaceholdersRefused(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct{ env, value string }{
		{"NATS_PASSWORD", "change-me-nats-api"},
		{"SLUICE_COMMAND_KEY", "change-me-command-key-0123456789abcdef"},
		{"ASTRA_DB_APPLICATION_TOKEN", " Change-Me-AstraCS-token"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			dir := filepath.Join(t.TempDir(), "data")
			for _, args := range [][]string{
				{"load", "--data-dir", dir, "../../testdata/chunks/passA_chunks.json"},
				{"worker", "--data-dir", dir, "--drain-timeout", "1s"},
			} {
				var stdout, stderr bytes.Buffer
				err := run(context.Background(), args, &stdout, &stderr, log)
				if err == nil || !strings.Contains(err.Error(), tc.env+" is the example placeholder") {
					t.Fatalf("%s: err = %v, want the placeholder named", args[0], err)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tc.value)) {
					t.Fatalf("%s: the error shows the secret: %v", args[0], err)
				}
				if _, serr := os.Stat(dir); !os.IsNotExist(serr) {
					t.Fatalf("%s: the data directory was created (%v)", args[0], serr)
				}
			}
		})
	}
	// A secret that merely contains the words is a secret.
	if err := refuseExamples(config{CommandKey: "my-key-not-change-me-0123456789abcdef"}); err != nil {
		t.Fatalf("refuseExamples: %v", err)
	}
}
