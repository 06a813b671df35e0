package main

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
)

// setProcs doubles GOMAXPROCS for the pipeline commands only, and leaves it alone when the
// environment sets it.
func TestSetProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(before)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Setenv("GOMAXPROCS", "")
	for _, args := range [][]string{nil, {"load", "x.jsonl"}, {"bench", "api"}, {"jobs"}} {
		if got := setProcs(log, args); got != before || runtime.GOMAXPROCS(0) != before {
			t.Errorf("%q: GOMAXPROCS %d, want %d unchanged", args, got, before)
		}
	}
	for _, cmd := range []string{"serve", "worker", "api"} {
		if got := setProcs(log, []string{cmd}); got != before*procsPerCPU || runtime.GOMAXPROCS(0) != got {
			t.Errorf("%s: GOMAXPROCS %d (in force %d), want %d", cmd, got, runtime.GOMAXPROCS(0), before*procsPerCPU)
		}
		runtime.GOMAXPROCS(before)
	}
	t.Setenv("GOMAXPROCS", "3")
	if got := setProcs(log, []string{"serve"}); got != before {
		t.Errorf("serve with GOMAXPROCS set: %d, want %d unchanged", got, before)
	}
}
