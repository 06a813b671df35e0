package main

import (
	"log/slog"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memLimitRatio is the share of the container's memory limit given to the Go runtime as its
// soft limit: the rest covers what the runtime does not count (stacks of cgo threads, the
// page cache of SQLite and the broker's files is the kernel's).
const memLimitRatio = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit (GOMEMLIMIT) to 90% of the cgroup
// memory limit of the container the process runs in, so that the garbage collector works
// harder before the kernel kills the process — the embedded broker's buffers and the worker's
// in-flight messages share that budget (docs/operations.md, "Memory"). GOMEMLIMIT, when set,
// wins; AUTOMEMLIMIT=off turns this off; without a cgroup limit nothing changes. It returns
// the limit in force (math.MaxInt64 for none).
func setMemoryLimit(log *slog.Logger) int64 {
	limit, err := memlimit.Set(memlimit.WithRatio(memLimitRatio), memlimit.WithProvider(memlimit.FromCgroup))
	if err != nil {
		log.Debug("no memory limit from the cgroup", "err", err)
	}
	return limit
}
