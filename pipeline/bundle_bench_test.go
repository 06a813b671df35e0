//go:build unix

package pipeline_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
)

// cpuTime returns the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkBundles compares one chunk per message with chunk bundles (issue 12) on the
// embedded default, broker syncing every write: the loader alone (publish), the worker alone
// draining a full stream (consume), and both at once (end-to-end), one op per chunk. Besides
// docs/s it reports the process's CPU per chunk — broker, loader, worker and SQLite all run in
// it — which is what bundles divide.
func BenchmarkBundles(b *testing.B) {
	for _, cut := range []string{"publish", "consume", "end-to-end"} {
		for _, shape := range []string{"single", "bundled"} {
			b.Run(cut+"/"+shape, func(b *testing.B) {
				e := newEnv(b, envOpts{syncAlways: true})
				n := max(b.N, 1000)
				path := benchFile(b, n)
				ctx := context.Background()
				l := e.bundleLoader(b, func(c *intake.LoaderConfig) { c.SingleChunkMessages = shape == "single" })
				if cut == "end-to-end" {
					e.startWorker(b, e.store, nil)
				}
				b.ResetTimer()
				start, cpu := time.Now(), cpuTime(b)
				res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
				if err != nil {
					b.Fatal(err)
				}
				if cut == "consume" {
					start, cpu = time.Now(), cpuTime(b)
					e.startWorker(b, e.store, nil)
				}
				if cut != "publish" {
					job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
					if err != nil || job.Written != int64(n) {
						b.Fatalf("written %d of %d: %v", job.Written, n, err)
					}
				}
				elapsed, used := time.Since(start), cpuTime(b)-cpu
				b.StopTimer()
				b.ReportMetric(float64(n)/elapsed.Seconds(), "docs/s")
				b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/doc")
				b.ReportMetric(float64(used.Microseconds())/float64(n), "cpu-µs/doc")
			})
		}
	}
}

// BenchmarkBundlesAstra is BenchmarkBundles' end-to-end cut into the Data API double with 20 ms
// per request (the latency `sluice bench astra` defaults to): the loader and a worker with the
// Astra sink in one process, one op per chunk.
func BenchmarkBundlesAstra(b *testing.B) {
	for _, shape := range []string{"single", "bundled"} {
		b.Run(shape, func(b *testing.B) {
			e := newEnv(b, envOpts{syncAlways: true})
			srv, sink, _ := astraSink(b, nil)
			srv.SetLatency(20*time.Millisecond, 0)
			e.startWorker(b, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
			n := max(b.N, 1000)
			path := benchFile(b, n)
			ctx := context.Background()
			l := e.bundleLoader(b, func(c *intake.LoaderConfig) { c.SingleChunkMessages = shape == "single" })
			b.ResetTimer()
			start, cpu := time.Now(), cpuTime(b)
			res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
			if err != nil {
				b.Fatal(err)
			}
			job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
			if err != nil || job.Written != int64(n) {
				b.Fatalf("written %d of %d: %v", job.Written, n, err)
			}
			elapsed, used := time.Since(start), cpuTime(b)-cpu
			b.StopTimer()
			b.ReportMetric(float64(n)/elapsed.Seconds(), "docs/s")
			b.ReportMetric(float64(elapsed.Nanoseconds())/float64(n), "ns/doc")
			b.ReportMetric(float64(used.Microseconds())/float64(n), "cpu-µs/doc")
		})
	}
}
