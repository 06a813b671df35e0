//go:build unix

package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/bench"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/files"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The shapes of the end-to-end comparison (issue 12's goal: Sluice on the embedded default at
// least as fast as the one-chunk-per-message raw pipeline).
const (
	// shapeRaw is the raw pipeline: a hand-written nats.go path with none of Sluice's job,
	// validation, progress or dead-letter work — the records published one per message in
	// atomic batches (sources/jetstream.BatchWriter, a Nats-Msg-Id each, as the loader), a
	// pull consumer, batches of up to rawBatch messages (rawLinger to fill), the same document
	// build, the same SQLite group commit (docstore.WriteDocs) rawWriters at once, then an ack
	// per message.
	shapeRaw = "raw-single"
	// shapeSingle and shapeBundled are Sluice's loader and worker, one chunk per message and
	// chunk bundles (the default).
	shapeSingle  = "sluice-single"
	shapeBundled = "sluice-bundled"
)

// The raw pipeline's batching: the worker's defaults (BatcherConfig.MaxBatch, its Concurrency
// without a sink pool, WorkerConfig.Linger), so that it differs from Sluice only in what it
// leaves out.
const (
	rawBatch   = 100
	rawWriters = 10
	rawLinger  = 5 * time.Millisecond
)

// rusageCPU returns the process's user + system CPU time so far.
func rusageCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// e2eResult is what one end-to-end run measured.
type e2eResult struct {
	elapsed time.Duration
	cpu     time.Duration // the process's user + system CPU (getrusage)
	split   *bench.PartsCPU
}

// writeRecordsFile writes n Pass C sized records (500 characters of content) to
// dir/<prefix>.jsonl, their chunk ids <prefix>_<n>.
func writeRecordsFile(tb testing.TB, dir, prefix string, n int) string {
	tb.Helper()
	path := filepath.Join(dir, prefix+".jsonl")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	text := "The quick brown fox jumps over the lazy dog while the wizard casts a spell of 3rd level. "
	for len(text) < 500 {
		text += text
	}
	for i := range n {
		fmt.Fprintf(f, `{"chunk_id":"%s_%08d","content":%q,"stage":"raw","source_id":"job_bench","page_number":%d,"metadata":{"part_index":1,"page_start":1,"page_end":49}}`+"\n", prefix, i, text[:500], i%49)
	}
	return path
}

// runEndToEnd loads n chunks from a file into SQLite on the embedded default (its own
// nats-server, syncing every write, and its own store) in shape, and measures it from the
// first read of the file to the last chunk written: wall time, the process's CPU and, unless
// another CPU profile runs, its split between the broker and the client (bench.InPart). The
// consumer (worker or raw) runs before the clock starts, as `sluice serve` would. It fails tb
// unless every chunk is written exactly once.
func runEndToEnd(tb testing.TB, shape string, n int) e2eResult {
	tb.Helper()
	dir := tb.TempDir()
	path := writeRecordsFile(tb, dir, "e2e", n)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var srv *embedded.Server
	var err error
	bench.InPart(bench.PartBroker, func() { srv, err = embedded.Start(embedded.Config{DataDir: filepath.Join(dir, "data")}) })
	if err != nil {
		tb.Fatal(err)
	}
	defer srv.Shutdown()

	var res e2eResult
	bench.InPart(bench.PartClient, func() {
		nc, err := sjs.Connect(ctx, sjs.ConnConfig{URL: srv.ClientURL(), User: embedded.User, Password: srv.Endpoint().Password})
		if err != nil {
			tb.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			tb.Fatal(err)
		}
		store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(dir, "documents.db")})
		if err != nil {
			tb.Fatal(err)
		}
		defer store.Close()

		var run func() error
		if shape == shapeRaw {
			r := startRaw(ctx, tb, js, store, n)
			defer r.stop()
			run = func() error { return r.run(ctx, path) }
		} else {
			run = sluiceRun(ctx, tb, js, store, dir, path, shape == shapeSingle, n)
		}

		prof, perr := bench.StartCPUProfile()
		cpu0 := rusageCPU(tb)
		start := time.Now()
		err = run()
		res.elapsed, res.cpu = time.Since(start), rusageCPU(tb)-cpu0
		if perr == nil {
			split, serr := prof.Stop()
			if serr != nil {
				tb.Fatal(serr)
			}
			p := bench.PerChunk(split, n)
			res.split = &p
		}
		if err != nil {
			tb.Fatalf("%s: %v", shape, err)
		}
		if got, err := store.CountDocs(ctx, "ttrpg_chunks_dev"); err != nil || got != int64(n) {
			tb.Fatalf("%s: %d documents stored (%v), want %d", shape, got, err, n)
		}
	})
	return res
}

// sluiceRun provisions Sluice's streams on js, starts a worker into store (stopped when tb
// ends) and returns the timed part: the loader publishing path as a job, then the wait until
// the job reports all n chunks written.
func sluiceRun(ctx context.Context, tb testing.TB, js jetstream.JetStream, store *docstore.Store, dir, path string, single bool, n int) func() error {
	tb.Helper()
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	jobStore := jobs.NewStore(streams.JobsKV)
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{JS: js, Streams: streams, Sink: store, SinkName: "docstore"})
	if err != nil {
		tb.Fatal(err)
	}
	wctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	tb.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			tb.Errorf("worker: %v", err)
		}
	})
	l, err := intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: jobStore, SpoolDir: filepath.Join(dir, "spool"), SingleChunkMessages: single})
	if err != nil {
		tb.Fatal(err)
	}
	return func() error {
		res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
		if err != nil {
			return err
		}
		job, err := jobs.Wait(ctx, jobStore, res.JobID, nil)
		if err != nil {
			return err
		}
		if job.Written != int64(n) {
			return fmt.Errorf("job %s: %d of %d written", res.JobID, job.Written, n)
		}
		return nil
	}
}

// rawPipeline is the raw pipeline's consumer side, running until stop.
type rawPipeline struct {
	js      jetstream.JetStream
	n       int64
	written atomic.Int64
	done    chan struct{} // closed once n documents are written
	failed  chan error    // the first write or ack failure
	it      jetstream.MessagesContext
	wg      sync.WaitGroup
}

const (
	rawStream  = "RAW_CHUNKS"
	rawSubject = "raw.chunks"
)

// startRaw creates the raw pipeline's stream (configured as Sluice's chunk stream) and
// consumer, and starts its reader and writers into store; the caller must call stop.
func startRaw(ctx context.Context, tb testing.TB, js jetstream.JetStream, store *docstore.Store, n int) *rawPipeline {
	tb.Helper()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: rawStream, Subjects: []string{rawSubject},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, AllowAtomicPublish: true,
	}); err != nil {
		tb.Fatal(err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, rawStream, jetstream.ConsumerConfig{
		Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute,
		MaxAckPending: (rawWriters + 2) * rawBatch, // as the worker's MaxInFlight
	})
	if err != nil {
		tb.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages((rawWriters + 2) * rawBatch))
	if err != nil {
		tb.Fatal(err)
	}
	builder, err := document.NewBuilder(document.Config{Env: "dev"})
	if err != nil {
		tb.Fatal(err)
	}
	r := &rawPipeline{js: js, n: int64(n), done: make(chan struct{}), failed: make(chan error, 1), it: it}
	batches := make(chan []jetstream.Msg, rawWriters) // bounded: the reader waits for a writer
	r.wg.Go(func() { r.read(batches) })
	for range rawWriters {
		r.wg.Go(func() { r.write(ctx, store, builder, batches) })
	}
	return r
}

// fail records err as the pipeline's failure unless one is recorded already.
func (r *rawPipeline) fail(err error) {
	select {
	case r.failed <- err:
	default:
	}
}

// read cuts the messages into batches of up to rawBatch, each sent once full or after
// rawLinger without a message, until the iterator stops; then it closes batches.
func (r *rawPipeline) read(batches chan<- []jetstream.Msg) {
	defer close(batches)
	var batch []jetstream.Msg
	for {
		m, err := r.it.Next(jetstream.NextMaxWait(rawLinger))
		switch {
		case errors.Is(err, nats.ErrTimeout):
		case err != nil:
			return // stopped
		default:
			batch = append(batch, m)
			if len(batch) < rawBatch {
				continue
			}
		}
		if len(batch) > 0 {
			batches <- batch
			batch = nil
		}
	}
}

// write builds each batch's documents, writes them into store and acks the batch, until
// batches is closed or a step fails (recorded with fail); it closes done once n are written.
func (r *rawPipeline) write(ctx context.Context, store *docstore.Store, builder *document.Builder, batches <-chan []jetstream.Msg) {
	for batch := range batches {
		docs := make([]document.Doc, 0, len(batch))
		for _, m := range batch {
			meta, err := m.Metadata()
			if err != nil {
				r.fail(err)
				return
			}
			d, err := builder.Build(m.Data(), document.Meta{Version: meta.Sequence.Stream})
			if err != nil {
				r.fail(err)
				return
			}
			docs = append(docs, d...)
		}
		errs, err := store.WriteDocs(ctx, "ttrpg_chunks_dev", docs)
		if err = errors.Join(append(errs, err)...); err != nil {
			r.fail(err)
			return
		}
		for _, m := range batch {
			_ = m.Ack() // fire and forget, as the worker acks
		}
		if r.written.Add(int64(len(batch))) == r.n {
			close(r.done)
		}
	}
}

// run publishes the file's records one per message and waits until all are written.
func (r *rawPipeline) run(ctx context.Context, path string) error {
	f, err := files.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := sjs.NewBatchWriter(ctx, r.js, sjs.BatchWriterConfig{})
	for {
		item, err := f.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil {
			err = item.Err
		}
		if err != nil {
			_ = w.Close()
			return err
		}
		m := nats.NewMsg(rawSubject)
		m.Data = item.Record
		m.Header.Set(nats.MsgIdHdr, "raw/"+item.ID)
		if err := w.Add(m); err != nil {
			_ = w.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	select {
	case <-r.done:
		return nil
	case err := <-r.failed:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%d of %d written: %w", r.written.Load(), r.n, ctx.Err())
	}
}

// stop stops the reader and waits for the writers.
func (r *rawPipeline) stop() {
	r.it.Stop()
	r.wg.Wait()
}

// BenchmarkEndToEndVsRaw compares, on the embedded default (broker syncing every write, SQLite),
// end to end from the file to the last chunk written, one op per chunk: the raw
// one-chunk-per-message nats.go pipeline (shapeRaw) against Sluice with one chunk per message
// and with bundles. Besides docs/s it reports the process's CPU per chunk (getrusage) and its
// sampled split: the broker's, the client's, and broker + client with the unlabeled runtime
// work (GC) — there is no double here, so that is the whole process.
func BenchmarkEndToEndVsRaw(b *testing.B) {
	for _, shape := range []string{shapeRaw, shapeSingle, shapeBundled} {
		b.Run(shape, func(b *testing.B) {
			n := max(b.N, 1000)
			res := runEndToEnd(b, shape, n)
			b.ReportMetric(float64(n)/res.elapsed.Seconds(), "docs/s")
			b.ReportMetric(float64(res.cpu.Microseconds())/float64(n), "cpu-µs/doc")
			if s := res.split; s != nil {
				b.ReportMetric(s.Broker, "broker-µs/doc")
				b.ReportMetric(s.Client, "client-µs/doc")
				b.ReportMetric(s.BrokerAndClient, "b+c-µs/doc")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestEndToEndVsRawShort is BenchmarkEndToEndVsRaw in small, for CI: every shape writes every
// chunk exactly once and is measured. It asserts no timing (the machine is shared); it logs
// the figures.
func TestEndToEndVsRawShort(t *testing.T) {
	const n = 500
	for _, shape := range []string{shapeRaw, shapeSingle, shapeBundled} {
		t.Run(shape, func(t *testing.T) {
			res := runEndToEnd(t, shape, n)
			if res.elapsed <= 0 {
				t.Fatalf("elapsed %v", res.elapsed)
			}
			if s := res.split; s != nil {
				if s.BrokerAndClient < s.Broker+s.Client {
					t.Errorf("split %+v", *s)
				}
				t.Logf("%s: %.0f docs/s, %.1f cpu-µs/doc; sampled broker %.1f, client %.1f, b+c %.1f µs/doc (%d samples)",
					shape, n/res.elapsed.Seconds(), float64(res.cpu.Microseconds())/n, s.Broker, s.Client, s.BrokerAndClient, s.Samples)
			}
		})
	}
}
