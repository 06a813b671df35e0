package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/bench"
)

// TestBenchAstra runs the real binary's bench astra with small numbers: every mode reports
// a rate and every run's documents were counted in the double; bad command lines are usage
// errors that say what is wrong.
func TestBenchAstra(t *testing.T) {
	sluice := func(args ...string) (stdout, stderr string, code int) {
		t.Helper()
		return runBench(t, args...)
	}

	out, errOut, code := sluice("bench", "astra", "--chunks", "100", "--latency", "1ms", "--runs", "2", "--json")
	if code != 0 {
		t.Fatalf("bench astra: exit %d\n%s%s", code, out, errOut)
	}
	var res bench.AstraResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("bench astra --json: %v\n%s", err, out)
	}
	if len(res.Modes) != 4 || res.Chunks != 100 || res.Runs != 2 {
		t.Fatalf("bench astra --json = %s", out)
	}
	for i, want := range []string{"seed", "astrapy", "sluice", "jetstream"} {
		if m := res.Modes[i]; m.Mode != want || m.Runs != 2 || m.Stored != 100 || m.DocsPerSec <= 0 {
			t.Errorf("mode %d = %+v, want %s with 2 runs, 100 stored, docs/s > 0", i, m, want)
		}
	}
	if res.SluiceVsSeed <= 0 || res.SluiceVsAstrapy <= 0 || res.SluiceVsAstrapyCeiling <= 0 {
		t.Errorf("ratios missing: %s", out)
	}

	// Without --json: the table with its CPU split and the ratios of the modes that ran
	// (bundles against one chunk per message; no seed, so no c/a).
	out, errOut, code = sluice("bench", "astra", "--chunks", "20", "--latency", "0", "--runs", "1", "--modes", "astrapy,sluice,sluice-single")
	for _, want := range []string{"docs/s", "cpu ms", "broker", "client", "sluice-single", "c/b = ", "c/b with one chunk per message (sluice-single) = ",
		"sluice / sluice-single (bundles over one chunk per message) = "} {
		if code != 0 || !strings.Contains(out, want) || strings.Contains(out, "c/a") {
			t.Fatalf("bench astra: exit %d, want %q in the output\n%s%s", code, want, out, errOut)
		}
	}

	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no scenario", []string{"bench"}, "name a scenario: astra"},
		{"unknown scenario", []string{"bench", "mongo"}, `unknown scenario "mongo" (scenarios: astra, api, backlog)`},
		{"unknown mode", []string{"bench", "astra", "--modes", "seed,turbo"}, `unknown mode "turbo"`},
		{"no chunks", []string{"bench", "astra", "--chunks", "0"}, "--chunks must be at least 1"},
		{"an argument", []string{"bench", "astra", "extra"}, "takes no arguments"},
	} {
		if _, errOut, code := sluice(tt.args...); code != exitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%s: exit %d, want %d saying %q; stderr:\n%s", tt.name, code, exitUsage, tt.want, errOut)
		}
	}
}
