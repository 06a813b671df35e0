package main

import (
	"log/slog"
	"os"
	"runtime"
)

// procsPerCPU is how many Go processors (GOMAXPROCS) the long-running commands run per CPU
// the runtime would use by default (the machine's, or the container's CPU limit).
//
// A serve or worker process spends much of its time in system calls that wait for the disk:
// the embedded broker syncs every write (file writes, consumer state written with O_SYNC and a
// rename), SQLite syncs each commit, uploads create spool files. A goroutine in such a call
// keeps its processor until the runtime's monitor hands it on, so with one processor per CPU
// both are often held by calls that wait while runnable goroutines — API reads among them —
// queue. Measured with `sluice bench api` (1,000 clients, 2 CPUs, docs/benchmarks.md): two
// per CPU served more requests with a shorter tail, the CPU used rising from about 1.3 to 1.5
// of the two.
const procsPerCPU = 2

// setProcs raises GOMAXPROCS to procsPerCPU per CPU for the commands that run pipelines (serve,
// worker, api). GOMAXPROCS in the environment, when set, wins. It returns the value in force.
func setProcs(log *slog.Logger, args []string) int {
	if os.Getenv("GOMAXPROCS") != "" || len(args) == 0 {
		return runtime.GOMAXPROCS(0)
	}
	switch args[0] {
	case "serve", "worker", "api":
	default:
		return runtime.GOMAXPROCS(0)
	}
	n := runtime.GOMAXPROCS(0) * procsPerCPU
	runtime.GOMAXPROCS(n)
	log.Debug("GOMAXPROCS set", "procs", n, "per_cpu", procsPerCPU)
	return n
}
