package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
)

// benchFile writes n Pass C sized records (500 characters of content) and returns its path.
func benchFile(b *testing.B, n int) string {
	b.Helper()
	return writeRecordsFile(b, b.TempDir(), "bench", n)
}

// BenchmarkChunkPath measures the chunk path on the embedded default (SQLite store), one op
// per chunk, in three cuts:
//   - publish: the loader alone (read, validate, atomic batch publish to JetStream);
//   - consume: workers alone draining a pre-filled stream (JetStream -> group commit into
//     SQLite -> progress -> ack);
//   - end-to-end: both at once in one process, as `sluice load` runs.
//
// Each runs with the broker syncing every write (the default) and lazily (opt-in).
func BenchmarkChunkPath(b *testing.B) {
	for _, sync := range []bool{true, false} {
		mode := map[bool]string{true: "sync=always", false: "sync=lazy"}[sync]
		for _, cut := range []string{"publish", "consume", "end-to-end"} {
			b.Run(mode+"/"+cut, func(b *testing.B) {
				e := newEnv(b, envOpts{syncAlways: sync})
				n := max(b.N, 1000)
				path := benchFile(b, n)
				ctx := context.Background()
				if cut == "end-to-end" {
					e.startWorker(b, e.store, nil)
				}
				b.ResetTimer()
				start := time.Now()
				res, err := e.loader(b).Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
				if err != nil {
					b.Fatal(err)
				}
				if cut == "consume" {
					start = time.Now()
					e.startWorker(b, e.store, nil)
				}
				if cut != "publish" {
					job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
					if err != nil || job.Written != int64(n) {
						b.Fatalf("written %d of %d: %v", job.Written, n, err)
					}
				}
				elapsed := time.Since(start)
				b.StopTimer()
				b.ReportMetric(float64(n)/elapsed.Seconds(), "docs/s")
				b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/doc")
			})
		}
	}
}
