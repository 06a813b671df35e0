package pipeline_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
)

// gatedSink holds every write until open is called, then passes writes to the sink inside.
type gatedSink struct {
	pipeline.DocSink
	gate chan struct{}
	once sync.Once
}

func newGatedSink(inner pipeline.DocSink) *gatedSink {
	return &gatedSink{DocSink: inner, gate: make(chan struct{})}
}

func (s *gatedSink) open() { s.once.Do(func() { close(s.gate) }) }

func (s *gatedSink) WriteDocs(ctx context.Context, collection string, docs []document.Doc) ([]error, error) {
	select {
	case <-s.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.DocSink.WriteDocs(ctx, collection, docs)
}

// chunksOut waits until the worker's chunk consumer has handed out the same messages for
// 300 ms (none acked: the sink holds every write) and returns how many messages and chunks —
// a bundle's Sluice-Items, 1 for a single chunk — are out.
func (e *testEnv) chunksOut(t *testing.T) (msgs, chunks int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(20 * time.Second)
	last, since := uint64(0), time.Now()
	for {
		info, err := e.streams.ChunkConsumer.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream != 0 {
			t.Fatalf("ack floor %d: the gated sink let a write through", info.AckFloor.Stream)
		}
		if d := info.Delivered.Stream; d != last {
			last, since = d, time.Now()
		} else if d > 0 && time.Since(since) >= 300*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chunk consumer never settled (delivered up to %d)", last)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for seq := uint64(1); seq <= last; seq++ {
		m, err := e.streams.Chunks.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs++
		if n, err := strconv.Atoi(m.Header.Get(schemas.HeaderItems)); err == nil && m.Header.Get(schemas.HeaderSchema) == string(schemas.ChunkBundle) {
			chunks += n
		} else {
			chunks++
		}
	}
	return msgs, chunks
}

// Issue 12: the worker bounded its chunk messages in flight in messages only — (Handlers+2) ×
// Batch.MaxBatch of them — so with bundles of 100 chunks it held 220,000 chunks, and a
// 1,000,000-chunk backlog drain peaked at 213 MiB with the broker in process (139 MiB as a
// client). Now it holds about MaxInFlightChunks chunks however they are packed — 40 here,
// where the message bound, (Handlers+2) × Batch.MaxBatch = (2+2) × 10, allows 40 messages; by
// default 4 × that. The sink holds every write, and the chunks the consumer handed out are
// counted.
func TestWorkerBoundsChunksInFlight(t *testing.T) {
	const bound = 40
	big := strings.Repeat("big ", 1000) // too large to share a 2 KiB bundle: a single-chunk message
	tests := []struct {
		name   string
		chunks int
		mod    func(*intake.LoaderConfig)
		edit   func(i int, rec map[string]any)
		// MaxInFlightChunks; 0 leaves the default.
		chunksBound int
		// The bound the chunks out must keep, and the fewest messages that fill it.
		most, leastMsgs int
	}{
		// 40 bundles of 10: the default, 4 × 40 chunks, holds 16 of them.
		{name: "default bound", chunks: 400, mod: func(c *intake.LoaderConfig) { c.BundleItems = 10 }, most: 4 * bound, leastMsgs: 16},
		// 30 bundles of 10: four fit (held exactly: one size).
		{name: "bundles of one size", chunks: 300, mod: func(c *intake.LoaderConfig) { c.BundleItems = 10 }, chunksBound: bound, most: bound, leastMsgs: 4},
		// 3 bundles of 50, each larger than the whole bound: one at a time, never stuck.
		{name: "bundles larger than the bound", chunks: 150, mod: func(c *intake.LoaderConfig) { c.BundleItems = 50 }, chunksBound: bound, most: 50, leastMsgs: 1},
		// Single chunks are held up to the same bound as before.
		{name: "single chunks", chunks: 100, mod: func(c *intake.LoaderConfig) { c.SingleChunkMessages = true }, chunksBound: bound, most: bound, leastMsgs: bound},
		// Every fifth chunk is too large for a bundle: bundles of 4 and single chunks
		// alternate, and a pull sized by their mean weight may bring one message more
		// than fits. The worst case in general is one pull of the heaviest messages; for
		// weights 1 and 4 with their mean between, it stays well under one bound and a half.
		{name: "bundles and single chunks mixed", chunks: 200,
			mod: func(c *intake.LoaderConfig) { c.BundleItems = 10; c.BundleBytes = 2 << 10 },
			edit: func(i int, rec map[string]any) {
				if i%5 == 4 {
					rec["content"] = big
				}
			},
			chunksBound: bound, most: bound + bound/2, leastMsgs: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			sink := newGatedSink(e.store)
			defer sink.open() // before the cleanups drain the worker
			e.startWorker(t, sink, func(c *pipeline.WorkerConfig) {
				c.Handlers = 2
				c.Batch.MaxBatch = 10
				c.MaxInFlightChunks = tt.chunksBound
			})
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			res, err := e.bundleLoader(t, tt.mod).Load(ctx, intake.LoadRequest{Env: "dev", Path: bundleFile(t, tt.chunks, "inflight_%04d", tt.edit)})
			if err != nil {
				t.Fatal(err)
			}
			msgs, chunks := e.chunksOut(t)
			t.Logf("held %d messages, %d chunks", msgs, chunks)
			if chunks > tt.most || msgs < tt.leastMsgs {
				t.Fatalf("the worker holds %d chunks in %d messages; want at most %d chunks, in at least %d messages",
					chunks, msgs, tt.most, tt.leastMsgs)
			}
			sink.open()
			job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
			if err != nil {
				t.Fatalf("wait for the job: %v", err)
			}
			if job.State != jobs.JobCompleted || job.Written != int64(tt.chunks) || job.DeadLettered != 0 {
				t.Fatalf("job %s written %d dead-lettered %d, want completed with %d written", job.State, job.Written, job.DeadLettered, tt.chunks)
			}
			if got := e.count(t); got != int64(tt.chunks) {
				t.Fatalf("%d documents stored, want %d", got, tt.chunks)
			}
			for _, i := range []int{0, tt.chunks / 2, tt.chunks - 1} {
				if id := fmt.Sprintf("inflight_%04d", i); e.doc(t, id) == nil {
					t.Fatalf("chunk %s not stored", id)
				}
			}
		})
	}
}
