package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"sync"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/files"
)

// Run makes runs timed runs of mode, which NewAstra must have set up. Each run starts from an
// empty collection and ends with a check that the double holds exactly Chunks documents;
// neither is timed. It blocks until the runs end or ctx ends, and returns the first error,
// naming the mode and the run.
func (a *Astra) Run(ctx context.Context, mode string, runs int) (ModeResult, error) {
	res := ModeResult{Mode: mode, Runs: runs, Chunks: a.cfg.Chunks}
	if !slices.Contains(a.cfg.Modes, mode) {
		return res, fmt.Errorf("bench astra: mode %q was not set up (modes: %s)", mode, strings.Join(a.cfg.Modes, ", "))
	}
	if runs < 1 {
		return res, fmt.Errorf("bench astra: runs must be at least 1, got %d", runs)
	}
	var run func(context.Context) error
	untrace := func() {}
	var spans *dropExporter
	defer func() { untrace() }()
	switch mode {
	case ModeSeed:
		run = a.runSeed
	case ModeAstrapy:
		run = a.runAstrapy
	case ModeSluice:
		run = func(ctx context.Context) error { return a.runSluice(ctx, a.loader) }
	case ModeSluiceSingle:
		run = func(ctx context.Context) error { return a.runSluice(ctx, a.single) }
	case ModeJetStream:
		run = a.runJetStream
	case ModeSluiceTrace1, ModeSluiceTrace100:
		ratio := 0.01
		if mode == ModeSluiceTrace100 {
			ratio = 1
		}
		spans = &dropExporter{}
		untrace = sync.OnceFunc(traceGlobally(ratio, spans))
		run = func(ctx context.Context) error { return a.runSluice(ctx, a.loader) }
	}
	var split CPUSplit
	profiled := true
	for i := range runs {
		var err error
		if mode == ModeJetStream {
			err = a.floor.Purge(ctx)
		} else {
			_, err = a.client.DeleteMany(ctx, collection, nil)
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: start empty: %w", mode, i+1, err)
		}
		prof, perr := StartCPUProfile()
		cpu0, cpuOK := processCPU()
		start := time.Now()
		InPart(PartClient, func() { err = run(ctx) })
		res.Elapsed += time.Since(start)
		if cpu1, ok := processCPU(); ok && cpuOK {
			res.CPUPerRun += cpu1 - cpu0
		}
		if perr != nil {
			profiled = false
		} else if s, serr := prof.Stop(); serr != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, serr)
		} else {
			split.Add(s)
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, err)
		}
		if mode == ModeJetStream {
			res.Stored, err = a.verifyFloor(ctx)
		} else {
			res.Stored, err = a.verify()
		}
		if err != nil {
			return res, fmt.Errorf("bench astra %s, run %d: %w", mode, i+1, err)
		}
	}
	if spans != nil {
		untrace() // flushes the spans still batched
		res.Spans = spans.n.Load()
	}
	res.DocsPerSec = float64(a.cfg.Chunks*runs) / res.Elapsed.Seconds()
	res.CPUPerRun /= time.Duration(runs)
	if profiled {
		p := PerChunk(split, a.cfg.Chunks*runs)
		res.CPU = &p
	}
	return res, nil
}

// verify checks that the double holds exactly Chunks documents and saw no request a correct
// client would not send, and returns the count.
func (a *Astra) verify() (int, error) {
	n := len(a.double.Documents(keyspace, collection))
	if n != a.cfg.Chunks {
		return n, fmt.Errorf("the Data API double holds %d documents, want %d", n, a.cfg.Chunks)
	}
	if v := a.double.Stats().Violations; len(v) > 0 {
		return n, fmt.Errorf("Data API protocol violations: %s", strings.Join(v, "; "))
	}
	return n, nil
}

// verifyFloor checks that the jetstream mode's stream holds exactly Chunks records, in
// bundles, and returns the count.
func (a *Astra) verifyFloor(ctx context.Context) (int, error) {
	c, err := a.js.OrderedConsumer(ctx, floorStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", floorStream, err)
	}
	info, err := a.floor.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", floorStream, err)
	}
	n := 0
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			return n, fmt.Errorf("stream %s: read back: %w", floorStream, err)
		}
		var b schemas.ChunkBundlePayload
		if err := json.Unmarshal(m.Data(), &b); err != nil {
			return n, fmt.Errorf("stream %s: read back: %w", floorStream, err)
		}
		n += len(b.Items)
	}
	if n != a.cfg.Chunks {
		return n, fmt.Errorf("stream %s holds %d records in %d messages, want %d", floorStream, n, info.State.Msgs, a.cfg.Chunks)
	}
	return n, nil
}

// readDocs reads the chunk file and builds its documents, as the Python loaders read their
// file before writing.
func (a *Astra) readDocs() ([]document.Doc, error) {
	r, err := files.Open(a.path)
	if err != nil {
		return nil, fmt.Errorf("read chunk file: %w", err)
	}
	defer r.Close()
	docs := make([]document.Doc, 0, a.cfg.Chunks)
	for {
		item, err := r.Next()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read chunk file: %w", err)
		}
		if item.Err != nil {
			return nil, fmt.Errorf("read chunk file: %w", item.Err)
		}
		d, err := a.builder.Build(item.Record, document.Meta{})
		if err != nil {
			return nil, fmt.Errorf("build document of item %d: %w", item.Index, err)
		}
		docs = append(docs, d...)
	}
}

// runSeed is the seed loader: one findOneAndReplace(upsert) per document, in sequence.
func (a *Astra) runSeed(ctx context.Context) error {
	docs, err := a.readDocs()
	if err != nil {
		return err
	}
	for _, d := range docs {
		if _, err := a.client.FindOneAndReplace(ctx, collection, map[string]any{"_id": d.ID}, d.Body, true); err != nil {
			return fmt.Errorf("upsert document %s: %w", d.ID, err)
		}
	}
	return nil
}

// runAstrapy is astrapy's insert_many: AstrapyBatch documents per insertMany,
// AstrapyConcurrency requests at once.
func (a *Astra) runAstrapy(ctx context.Context) error {
	docs, err := a.readDocs()
	if err != nil {
		return err
	}
	p := pool.New().WithContext(ctx).WithMaxGoroutines(AstrapyConcurrency).WithCancelOnError().WithFirstError()
	for part := range slices.Chunk(docs, AstrapyBatch) {
		p.Go(func(ctx context.Context) error {
			bodies := make([]json.RawMessage, len(part))
			for i, d := range part {
				bodies[i] = d.Body
			}
			outcomes, err := a.client.InsertMany(ctx, collection, bodies)
			if err != nil {
				return err
			}
			for i, err := range outcomes {
				if err != nil {
					return fmt.Errorf("insert document %s: %w", part[i].ID, err)
				}
			}
			return nil
		})
	}
	return p.Wait()
}

// runSluice loads the file as a job with l and waits until the worker reports every chunk
// written.
func (a *Astra) runSluice(ctx context.Context, l *intake.Loader) error {
	// A worker that stops (it should not) ends the wait instead of leaving it hanging.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(a.workerAlive, func() { cancel(context.Cause(a.workerAlive)) })
	defer stop()

	res, err := l.Load(ctx, intake.LoadRequest{Env: env, Path: a.path, Force: a.loads > 0})
	a.loads++
	if err != nil {
		return fmt.Errorf("load: %w", withCause(ctx, err))
	}
	if res.Existing {
		return fmt.Errorf("load: job %s was recognised as loaded before and not published", res.JobID)
	}
	job, err := jobs.Wait(ctx, a.jobs, res.JobID, nil)
	if err != nil {
		return fmt.Errorf("wait for job %s: %w", res.JobID, withCause(ctx, err))
	}
	if job.State != jobs.JobCompleted || job.Written != int64(a.cfg.Chunks) {
		return fmt.Errorf("job %s ended %s with %d of %d written, %d rejected, %d dead-lettered",
			res.JobID, job.State, job.Written, a.cfg.Chunks, job.Rejected, job.DeadLettered)
	}
	return nil
}

// runJetStream publishes the chunk file's records to the floor stream as the loader
// publishes chunks: in bundles (schemas.ChunkBundlePayload) of up to
// intake.DefaultBundleItems records and intake.DefaultBundleBytes, each with a Nats-Msg-Id,
// through sources/jetstream.BatchWriter with its defaults; it returns once every batch is
// stored.
func (a *Astra) runJetStream(ctx context.Context) error {
	r, err := files.Open(a.path)
	if err != nil {
		return fmt.Errorf("read chunk file: %w", err)
	}
	defer r.Close()
	a.floorRuns++
	w := sjs.NewBatchWriter(ctx, a.js, sjs.BatchWriterConfig{})
	var (
		bundle schemas.ChunkBundlePayload
		size   int
		first  string
	)
	flush := func() error {
		if len(bundle.Items) == 0 {
			return nil
		}
		m := nats.NewMsg(floorSubject)
		var err error
		if m.Data, err = json.Marshal(bundle); err != nil {
			return err
		}
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("run%d/%s", a.floorRuns, first))
		bundle.Items, size = bundle.Items[:0], 0
		return w.Add(m)
	}
	for {
		item, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			_ = w.Close()
			return fmt.Errorf("read chunk file: %w", err)
		}
		if len(bundle.Items) == intake.DefaultBundleItems || size+len(item.Record) > intake.DefaultBundleBytes {
			if err := flush(); err != nil {
				_ = w.Close()
				return fmt.Errorf("publish: %w", err)
			}
		}
		if len(bundle.Items) == 0 {
			first = item.ID
		}
		bundle.Items = append(bundle.Items, schemas.BundleItem{Index: item.Index, Chunk: item.Record})
		size += len(item.Record) + 32 // the item's index and keys
	}
	if err := flush(); err != nil {
		_ = w.Close()
		return fmt.Errorf("publish: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// withCause adds to err why ctx ended, when that is not already in err (the worker stopped).
func withCause(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w (%w)", err, cause)
	}
	return err
}

// writeChunks writes n synthetic chunks, one JSON object per line, ids "ab_000000" on, and
// returns the file's path.
func writeChunks(dir string, n int) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("chunks-%d.jsonl", n))
	var b strings.Builder
	for i := range n {
		line, err := json.Marshal(map[string]any{
			"chunk_id": fmt.Sprintf("ab_%06d", i),
			"content":  fmt.Sprintf("Chunk %d: the quick brown fox jumps over the lazy dog.", i),
			"stage":    "raw",
		})
		if err != nil {
			return "", err
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("bench astra: write chunk file: %w", err)
	}
	return path, nil
}
