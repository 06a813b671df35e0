package main

import (
	"log/slog"
	"math"
	"runtime/debug"
	"testing"
)

// GOMEMLIMIT set by the operator wins over the cgroup; without either, no limit is set.
func TestSetMemoryLimitKeepsGOMEMLIMIT(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	t.Setenv("GOMEMLIMIT", "300MiB")
	debug.SetMemoryLimit(300 << 20) // what the runtime read from GOMEMLIMIT at start
	if got := setMemoryLimit(slog.New(slog.DiscardHandler)); got != 300<<20 {
		t.Fatalf("with GOMEMLIMIT=300MiB the limit is %d", got)
	}
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("AUTOMEMLIMIT", "off")
	debug.SetMemoryLimit(math.MaxInt64)
	if got := setMemoryLimit(slog.New(slog.DiscardHandler)); got != math.MaxInt64 {
		t.Fatalf("with AUTOMEMLIMIT=off the limit is %d", got)
	}
}
