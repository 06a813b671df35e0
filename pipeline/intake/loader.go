// Package intake turns a chunk or graph file into a job: it spools the upload (in memory up to a
// bound, else on disk), hashes it into the job id, opens the job, reads and checks every item
// (sources/files), publishes the valid ones in file order as bundles on the job's subject
// (an atomic batch per window, ids chained so a resubmission is deduplicated), records the
// rejected ones, and seals the job with its item count. The workers (package pipeline) write
// what it published; Loader.Rollback asks them to undo a job.
package intake

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/files"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// ErrBadInput wraps load errors caused by the input itself (unknown env, not a chunk file,
// a file that cannot be parsed): retrying the same input cannot help.
var ErrBadInput = errors.New("bad input")

// ErrBusy is returned by Load, before any job is opened, when the process's publish scheduler
// does not admit another job now (sources/jetstream.Admission.Admit: too many batches waiting,
// or as many jobs publishing as its adaptive limit lets finish in time): the caller should
// come back shortly (the API answers 503 with Retry-After).
var ErrBusy = errors.New("too many publishes waiting; retry shortly")

// LoaderConfig configures a Loader.
type LoaderConfig struct {
	// JS is the JetStream context. Required.
	JS jetstream.JetStream
	// Jobs is the job store, to recognise a resubmitted job. Required.
	Jobs *jobs.Store
	// Document is the document configuration the workers use; the loader validates every item
	// with it, so an item that can never be written is rejected at intake with its index.
	Document document.Config
	// Batch configures atomic publishing. Its Admission, shared by every loader of the process
	// (and its commands), bounds the atomic batches open on the broker; when too many wait,
	// Load refuses new jobs with ErrBusy.
	Batch sjs.BatchWriterConfig
	// MaxMessageBytes is the largest chunk payload published. Default
	// schemas.DefaultMaxMessageBytes less room for headers.
	MaxMessageBytes int
	// MaxGraphMessageBytes is the largest graph batch message published. Default 256 KiB
	// (DefaultMaxGraphMessageBytes): a graph batch is applied in one transaction, so a smaller
	// one holds the graph consumer for less time, and its dead letter (the payload in base64,
	// ≈4/3 of it, plus the envelope) stays far below the broker's 1 MiB limit. At most
	// MaxMessageBytes; a single node or edge over it is refused at intake.
	MaxGraphMessageBytes int
	// SingleChunkMessages publishes one chunk per message (schemas.Chunk) instead of bundles.
	// Optional, default false: chunks go in bundles (schemas.ChunkBundle), which cost the
	// broker a third of one message per chunk (issue 12). For comparison and for workers that
	// predate bundles.
	SingleChunkMessages bool
	// BundleItems is the most chunks in one bundle. Default 100: the broker's CPU per chunk
	// falls from ≈46 µs at 1 per message to ≈15 at 10 and ≈14 at 100, so more gains nothing
	// while a bundle retried for one item's transient failure holds more items back. At most
	// schemas.MaxBundleItems.
	BundleItems int
	// BundleBytes closes a bundle once its payload would exceed it. Default 256 KiB
	// (DefaultBundleBytes), a quarter of the broker's max payload: a bundle's dead letter (if
	// the bundle as a whole is malformed) and the worker's in-flight bytes stay small. At most
	// MaxMessageBytes. A chunk too large to share a bundle under it is published alone as a
	// single-chunk message.
	BundleBytes int
	// SpoolDir holds uploads while they are hashed and published, those not held in memory
	// (MemSpoolBytes). Default os.TempDir().
	SpoolDir string
	// MemSpoolBytes is the largest upload held in memory instead of a spool file. Default
	// DefaultMemSpoolBytes (1 MiB); negative: every upload goes to a file.
	MemSpoolBytes int64
	// MemSpoolTotal bounds the bytes of all uploads held in memory at once; an upload that
	// would pass it goes on in a file. Default DefaultMemSpoolTotal (64 MiB).
	MemSpoolTotal int64
	// Key signs rollback events (the workers refuse unsigned ones). Optional: without it
	// Rollback fails.
	Key *sign.Key
	// NoPreviousVersions says the workers' document store keeps no previous versions
	// (AstraDB), so RollbackWith refuses RestorePrevious at once with ErrRestoreUnsupported.
	// Optional: false lets the request through, and a worker whose store cannot restore
	// records the rollback failed with the reason, deleting nothing.
	NoPreviousVersions bool
	// MaxDecompressedBytes bounds what a gzip or zstd file unpacks to; past it Load fails
	// with ErrBadInput wrapping files.ErrTooLarge before any job is opened. Default
	// files.DefaultMaxDecompressedBytes (1 GiB, the API's default upload limit). An upload
	// whose Body reports its own limit (a MaxBytes() int64 method, as the API's upload bodies
	// have) is bounded by that instead: a compressed upload never unpacks to more than an
	// uncompressed one may hold.
	MaxDecompressedBytes int64
}

// bodyLimit is an upload body that knows the most bytes it may hold (LoaderConfig.
// MaxDecompressedBytes).
type bodyLimit interface{ MaxBytes() int64 }

// DefaultBundleBytes is LoaderConfig.BundleBytes's default.
const DefaultBundleBytes = 256 << 10

// DefaultBundleItems is LoaderConfig.BundleItems's default.
const DefaultBundleItems = 100

// DefaultMaxGraphMessageBytes is LoaderConfig.MaxGraphMessageBytes's default.
const DefaultMaxGraphMessageBytes = 256 << 10

// Loader publishes chunk files as jobs: an open event, every valid item in chunk bundles (or
// one message each with SingleChunkMessages; in atomic batches, stored in file order, so of
// two items with one id the later wins), then a seal event with the totals and every rejected
// item. Safe for concurrent use.
type Loader struct {
	cfg LoaderConfig
	mem *ByteBudget // of the uploads spooled in memory
}

// NewLoader checks cfg and returns a Loader.
func NewLoader(cfg LoaderConfig) (*Loader, error) {
	var errs []error
	if cfg.JS == nil {
		errs = append(errs, errors.New("loader: JS is required"))
	}
	if cfg.Jobs == nil {
		errs = append(errs, errors.New("loader: Jobs is required"))
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = schemas.DefaultMaxMessageBytes - 8<<10
	}
	if cfg.MaxGraphMessageBytes <= 0 {
		cfg.MaxGraphMessageBytes = DefaultMaxGraphMessageBytes
	}
	cfg.MaxGraphMessageBytes = min(cfg.MaxGraphMessageBytes, cfg.MaxMessageBytes)
	if cfg.BundleItems <= 0 {
		cfg.BundleItems = DefaultBundleItems
	}
	cfg.BundleItems = min(cfg.BundleItems, schemas.MaxBundleItems)
	if cfg.BundleBytes <= 0 {
		cfg.BundleBytes = DefaultBundleBytes
	}
	cfg.BundleBytes = min(cfg.BundleBytes, cfg.MaxMessageBytes)
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = os.TempDir()
	}
	if cfg.MemSpoolBytes == 0 {
		cfg.MemSpoolBytes = DefaultMemSpoolBytes
	}
	if cfg.MemSpoolTotal <= 0 {
		cfg.MemSpoolTotal = DefaultMemSpoolTotal
	}
	if cfg.MaxDecompressedBytes <= 0 {
		cfg.MaxDecompressedBytes = files.DefaultMaxDecompressedBytes
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &Loader{cfg: cfg, mem: NewByteBudget(cfg.MemSpoolTotal)}, nil
}

// LoadRequest is one file to load as one job. Set Path or Body.
type LoadRequest struct {
	// Env is dev, test or prod. Required.
	Env string
	// Path of a chunk file on disk: JSON or JSONL, plain or gzip or zstd compressed
	// (recognised by content).
	Path string
	// Body is a chunk file streamed in (an upload), in any form Path may be; it is spooled
	// to SpoolDir first.
	Body io.Reader
	// File is the name recorded for the job. Default: the base name of Path.
	File string
	// Format is a format hint ("jsonl" for NDJSON uploads); empty sniffs the content.
	Format files.Format
	// Force loads the file as a new job even if the same content was loaded before.
	Force bool
	// IdempotencyKey, if set, names this submission: a later request with the same key gets
	// the job of the first one and publishes nothing.
	IdempotencyKey string
}

// LoadResult is what Load published.
type LoadResult struct {
	JobID      string           `json:"job_id"`
	Env        string           `json:"env"`
	File       string           `json:"file,omitempty"`
	State      jobs.State       `json:"state"`
	Total      int64            `json:"total"`
	Published  int64            `json:"published"`
	Rejected   int64            `json:"rejected"`
	Rejections []jobs.ItemIssue `json:"rejections,omitempty"`
	// RejectionsOmitted counts the rejected items Rejections leaves out: it lists at most
	// schemas.MaxIssues (1,000).
	RejectionsOmitted int64            `json:"rejections_omitted,omitempty"`
	Warnings          []jobs.ItemIssue `json:"warnings,omitempty"`
	// Existing is true when the same content was already loaded as this job: nothing was
	// published again.
	Existing bool `json:"existing"`

	opened bool   // this call opened (or resumed) the job: a failure after it fails the job
	msgJob string // the job id in its messages' Nats-Msg-Id (generationID)
}

// generationID is the job id a job's messages carry in their Nats-Msg-Id: the job id for its
// first load, "{job}@{generation}" for a load again after a rollback, so that the stream's
// duplicate window does not drop a generation's messages as copies of the one before ('@'
// never occurs in a job id, so no generation's ids can meet another's).
func generationID(jobID string, generation int) string {
	if generation == 0 {
		return jobID
	}
	return jobID + "@" + strconv.Itoa(generation)
}

// Load publishes one file as one job and returns once every item is stored in JetStream and the
// job is sealed. Workers write the items asynchronously; Wait follows the job to its end. A
// file whose content was loaded before (same env) returns the existing job with Existing set,
// publishing nothing, unless Force is set. A job interrupted mid-publish (no seal) is resumed:
// messages already stored are deduplicated by their Nats-Msg-Id.
func (l *Loader) Load(ctx context.Context, req LoadRequest) (res LoadResult, err error) {
	// The job's span: the parent of every message span its items get in the workers (their
	// messages carry its traceparent), under the API request's span when there is one.
	ctx, span := telemetry.Tracer(telemetry.ScopeLoad).Start(ctx, "load job",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(telemetry.AttrMessagingSystem.String("nats"), attribute.String("sluice.env", req.Env)))
	defer func() {
		span.SetAttributes(telemetry.AttrJobID.String(res.JobID), attribute.Int64("sluice.items", res.Published))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "load failed")
		}
		span.End()
	}()
	return l.loadOnce(ctx, req)
}

// traceHeader returns the W3C trace context of ctx as NATS headers, or nil when ctx carries no
// span: computed once per job, copied onto each of its messages.
func traceHeader(ctx context.Context) nats.Header {
	h := nats.Header{}
	telemetry.Inject(ctx, h)
	if len(h) == 0 {
		return nil
	}
	return h
}

// loadOnce is Load under its span.
func (l *Loader) loadOnce(ctx context.Context, req LoadRequest) (LoadResult, error) {
	if !schemas.ValidEnv(req.Env) {
		return LoadResult{}, fmt.Errorf("%w: env %q is not dev, test or prod", ErrBadInput, req.Env)
	}
	if req.IdempotencyKey != "" {
		id, err := l.cfg.Jobs.IdempotentJob(ctx, req.IdempotencyKey)
		if err != nil {
			return LoadResult{}, err
		}
		if id != "" {
			return l.existing(ctx, id, req)
		}
	}
	res, err := l.load(ctx, req)
	if err != nil && res.opened {
		l.failJob(ctx, res.JobID, err)
	}
	if err != nil || req.IdempotencyKey == "" {
		return res, err
	}
	first, err := l.cfg.Jobs.RememberIdempotent(ctx, req.IdempotencyKey, res.JobID)
	if err != nil {
		return res, err
	}
	if first != res.JobID {
		// A concurrent request with the same key got there first.
		return l.existing(ctx, first, req)
	}
	return res, nil
}

// failJob records that publishing job id failed after it was opened, so that it does not
// stay pending for ever (1,000 concurrent uploads left half of their jobs pending with total
// 0, issue 12). It runs even when ctx ended (the client left), bounded by a few seconds; if
// it cannot be recorded, the reaper (RunJobReaper) fails the job later.
func (l *Loader) failJob(ctx context.Context, id string, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, _ = l.cfg.Jobs.Fail(ctx, id, "publishing stopped before the job was sealed: "+cause.Error())
}

// loaderTouchEvery is how often a loader marks a job it is still publishing as alive, far
// within the reaper's default 10 minutes.
const loaderTouchEvery = time.Minute

// toucher marks a job alive every loaderTouchEvery while it is published.
type toucher struct {
	jobs *jobs.Store
	id   string
	last time.Time
}

// touch updates the job if loaderTouchEvery passed since the last time. A failed update is
// left for the next one.
func (t *toucher) touch(ctx context.Context) {
	if time.Since(t.last) < loaderTouchEvery {
		return
	}
	t.last = time.Now()
	_ = t.jobs.Touch(ctx, t.id)
}

// existing reports job id as an earlier submission's job.
func (l *Loader) existing(ctx context.Context, id string, req LoadRequest) (LoadResult, error) {
	job, err := l.cfg.Jobs.Get(ctx, id)
	if err != nil {
		return LoadResult{}, fmt.Errorf("look up job %s: %w", id, err)
	}
	return LoadResult{
		JobID: id, Env: job.Env, File: job.File, State: job.State, Total: job.Total,
		Published: job.Published, Rejected: job.Rejected, Rejections: job.Rejections,
		RejectionsOmitted: job.RejectionsOmitted, Warnings: job.Warnings, Existing: true,
	}, nil
}

func (l *Loader) load(ctx context.Context, req LoadRequest) (LoadResult, error) {
	if req.File == "" && req.Path != "" {
		req.File = filepath.Base(req.Path)
	}
	src, sum, maxDec, err := l.source(req)
	if err != nil {
		return LoadResult{}, err
	}
	defer src.release()
	jobID := jobs.JobID(req.Env, sum)
	res := LoadResult{JobID: jobID, Env: req.Env, File: req.File}
	job, done, existing, err := l.admit(ctx, jobID, req)
	if existing != nil {
		return *existing, err
	}
	if err != nil {
		return res, err
	}
	defer done()
	res.msgJob = generationID(jobID, job.Generation)

	f, err := src.open()
	if err != nil {
		return res, fmt.Errorf("open %s: %w", req.File, err)
	}
	defer f.Close()
	r, err := files.NewReader(f, files.Options{Name: req.File, Format: req.Format, MaxDecompressedBytes: maxDec})
	if errors.Is(err, files.ErrNoChunks) {
		return l.loadGraph(ctx, req, src, jobID, res)
	}
	if err != nil {
		return res, fmt.Errorf("%w: %s: %w", ErrBadInput, req.File, err)
	}
	defer r.Close()
	dc := l.cfg.Document
	dc.Env = req.Env
	builder, err := document.NewBuilder(dc)
	if err != nil {
		return res, err
	}
	// The first item decides the format; open the job only once the file is known to be a
	// chunk file, so that a wrong file leaves no job behind.
	first, ferr := r.Next()
	if errors.Is(ferr, files.ErrNoChunks) {
		// Not a chunk file: maybe a graph file.
		return l.loadGraph(ctx, req, src, jobID, res)
	}
	if ferr != nil && !errors.Is(ferr, io.EOF) {
		return res, fmt.Errorf("%w: %s: %w", ErrBadInput, req.File, ferr)
	}
	if ferr == nil && first.Err != nil && isEdgeRecord(first.Record) {
		return res, fmt.Errorf("%w: %s holds graph edges (Pass E relationship_edges.jsonl), not chunks: load graph_snapshot.json, which has the same edges with their nodes", ErrBadInput, req.File)
	}
	open := schemas.JobOpen{
		JobID: jobID, Env: req.Env, File: req.File, Format: string(r.Format()),
		SourceJobID: r.SourceJobID(), CreatedAt: time.Now().UTC(),
	}
	if err := l.openJob(ctx, open, &res); err != nil {
		return res, err
	}
	if err := l.publishItems(ctx, r, first, ferr, builder, req, &res); err != nil {
		return res, err
	}
	seal := schemas.JobSeal{
		JobID: jobID, Env: req.Env, Total: res.Total, Published: res.Published, Rejected: res.Rejected,
		RejectionsTruncated: int64(len(res.Rejections)) < res.Rejected, SealedAt: time.Now().UTC(),
	}
	seal.Rejections, seal.Warnings = res.Rejections, res.Warnings
	if err := l.sealJob(ctx, seal, res.msgJob); err != nil {
		return res, err
	}
	res.RejectionsOmitted = res.Rejected - int64(len(res.Rejections))
	res.State = jobs.JobRunning
	if res.Published == 0 {
		res.State = jobs.JobCompletedWithErrors
	}
	return res, nil
}

// source returns the file req names or the upload it carries, spooled (release it when done),
// with its content digest (a nonce appended when req.Force) and the decompressed-size limit
// that applies. A compression bomb or corrupt data is refused here, before any job exists.
func (l *Loader) source(req LoadRequest) (src *spooled, sum []byte, maxDec int64, err error) {
	src = &spooled{path: req.Path}
	maxDec = l.cfg.MaxDecompressedBytes
	if req.Body != nil {
		if b, ok := req.Body.(bodyLimit); ok && b.MaxBytes() > 0 {
			maxDec = b.MaxBytes()
		}
		if src, sum, err = l.spool(req.Body); err != nil {
			return nil, nil, 0, err
		}
	}
	if sum, err = contentSum(src, req.File, sum, maxDec); err != nil {
		src.release()
		return nil, nil, 0, err
	}
	if req.Force {
		nonce := make([]byte, 16)
		_, _ = rand.Read(nonce)
		sum = append(sum, nonce...)
	}
	return src, sum, maxDec, nil
}

// admit decides whether job jobID loads now. It returns the existing job's result when the
// same content was loaded before (existing, nothing to do), ErrBusy when the job is being
// rolled back or admission refuses a new job, else the job's record (reopened as its next
// generation when it was rolled back or superseded) and done, which ends the admission.
func (l *Loader) admit(ctx context.Context, jobID string, req LoadRequest) (job jobs.Job, done func(), existing *LoadResult, err error) {
	job, err = l.cfg.Jobs.Get(ctx, jobID)
	found := err == nil
	switch {
	case err != nil && !errors.Is(err, jobs.ErrJobNotFound):
		return job, nil, nil, fmt.Errorf("look up job %s: %w", jobID, err)
	case found && job.Rollback != nil && job.Rollback.State == "requested":
		// Loading now would race the rollback's deletes; once it is done the file loads again.
		return job, nil, nil, fmt.Errorf("%w: job %s is being rolled back; submit it again once the rollback is done", ErrBusy, jobID)
	case found && job.Sealed && !job.State.Reloadable():
		res, err := l.existing(ctx, jobID, req)
		return job, nil, &res, err
	}
	// Admission before a job exists: refused now, the caller retries and nothing is left
	// behind. Once opened, a job's batches wait their turn.
	done, ok := l.cfg.Batch.Admission.Admit()
	if !ok {
		return job, nil, nil, ErrBusy
	}
	if found && job.Sealed {
		// Rolled back or superseded: the same content loads again as the job's next
		// generation, under message ids of its own (the stream's duplicate window would drop
		// the first generation's), counted from nothing.
		if job, err = l.cfg.Jobs.Reopen(ctx, jobID); err != nil {
			done()
			return job, nil, nil, fmt.Errorf("reopen job %s: %w", jobID, err)
		}
		if job.Sealed { // reopened and loaded meanwhile by another submission
			done()
			res, err := l.existing(ctx, jobID, req)
			return job, nil, &res, err
		}
	}
	return job, done, nil, nil
}

// publishItems reads every item of r from first (with ferr, the error of reading it) on,
// rejects the invalid ones into res, and publishes the others in file order, in bundles, on
// the job's subject. It returns once every message is stored, or the first publish error, or
// ErrBadInput when the rest of the file cannot be read: the job then fails (Load records it)
// and stays unsealed; fix the file and resubmit with Force, or the same content resumes it.
func (l *Loader) publishItems(ctx context.Context, r *files.Reader, first files.Item, ferr error, builder *document.Builder, req LoadRequest, res *LoadResult) error {
	jobID := res.JobID
	alive := &toucher{jobs: l.cfg.Jobs, id: jobID, last: time.Now()}
	w := sjs.NewBatchWriter(ctx, l.cfg.JS, l.cfg.Batch)
	bundler := &chunkBundler{w: w, job: jobID, msgJob: res.msgJob, subject: schemas.ChunkSubject(req.Env),
		items: l.cfg.BundleItems, bytes: l.cfg.BundleBytes, single: l.cfg.SingleChunkMessages,
		trace: traceHeader(ctx)}
	reject := func(index int, id, reason string) {
		res.Rejected++
		if len(res.Rejections) < schemas.MaxIssues {
			res.Rejections = append(res.Rejections, jobs.ItemIssue{Index: index, ID: id, Reason: reason})
		}
	}
	item, ierr := first, ferr
	for ; ierr == nil; item, ierr = r.Next() {
		res.Total++
		if item.Err != nil {
			reject(item.Index, item.ID, reasonOf(item.Err))
			continue
		}
		if _, err := builder.Build(item.Record, document.Meta{Job: jobID}); err != nil {
			reject(item.Index, item.ID, err.Error())
			continue
		}
		if len(item.Record) > l.cfg.MaxMessageBytes {
			reject(item.Index, item.ID, fmt.Sprintf("record too large: %d bytes exceeds the message limit of %d", len(item.Record), l.cfg.MaxMessageBytes))
			continue
		}
		dup := item.DuplicateOf >= 0
		if dup && len(res.Warnings) < schemas.MaxIssues {
			res.Warnings = append(res.Warnings, jobs.ItemIssue{Index: item.Index, ID: item.ID,
				Reason: fmt.Sprintf("duplicate id: item %d has the same id; the later item wins", item.DuplicateOf)})
		}
		if err := bundler.add(item.Index, item.ID, item.Record, dup); err != nil {
			_ = w.Close()
			return fmt.Errorf("publish job %s: %w", jobID, err)
		}
		res.Published++
		alive.touch(ctx)
	}
	if err := bundler.flush(); err != nil {
		_ = w.Close()
		return fmt.Errorf("publish job %s: %w", jobID, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("publish job %s: %w", jobID, err)
	}
	if !errors.Is(ierr, io.EOF) {
		return fmt.Errorf("%w: %s: %w", ErrBadInput, req.File, ierr)
	}
	return nil
}

// reasonOf returns the reason of an item error without the "item N: " prefix, which the
// rejection's index already says.
func reasonOf(err error) string {
	var ie *files.ItemError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return err.Error()
}

// openJob records the job's open in the job store and publishes its open event. The loader
// records open and seal itself, so the job is visible (and a resubmission recognised) at
// once; the events carry the same facts for the workers, which apply them idempotently
// (writing nothing when the record has them), and for producers that publish without this
// loader. Record and event are synced writes of two streams, made at once: one round trip of
// a submission's latency instead of two (issue 12). Once either may have been written the job
// counts as opened, so that a failure fails it rather than leave it pending.
func (l *Loader) openJob(ctx context.Context, open schemas.JobOpen, res *LoadResult) error {
	res.opened = true
	resumed := make(chan error, 1)
	go func() { _, err := l.cfg.Jobs.Resume(ctx, open); resumed <- err }()
	evErr := l.publishEvent(ctx, open.Env, cmp.Or(res.msgJob, open.JobID)+"/open", open)
	return errors.Join(<-resumed, evErr)
}

// sealJob publishes the job's seal event and records it in the job store, at once (see
// openJob). msgJob is the job id of its Nats-Msg-Id (generationID).
func (l *Loader) sealJob(ctx context.Context, seal schemas.JobSeal, msgJob string) error {
	sealed := make(chan error, 1)
	go func() { sealed <- l.publishEvent(ctx, seal.Env, cmp.Or(msgJob, seal.JobID)+"/seal", seal) }()
	_, recErr := l.cfg.Jobs.Seal(ctx, seal)
	return errors.Join(<-sealed, recErr)
}

func (l *Loader) publishEvent(ctx context.Context, env, msgID string, ev any) error {
	b, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode job event: %w", err)
	}
	m := nats.NewMsg(schemas.JobSubject(env))
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, msgID)
	m.Header.Set(schemas.HeaderSchema, string(schemas.JobEvent))
	telemetry.Inject(ctx, m.Header)
	if _, err := l.cfg.JS.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish job event %s: %w", msgID, err)
	}
	return nil
}

// contentSum returns the SHA-256 of src's content uncompressed, which names its job: a file
// and its gzip or zstd copy (whatever the compressor's level or header) are the same job.
// raw, when not nil, is the sum of src's bytes as they are, already computed, and is
// returned for an uncompressed src without reading it again. A compressed src is unpacked
// once here, to its end, so that corrupt data or more than max bytes (files.ErrTooLarge) is
// refused with ErrBadInput before any job is opened. A file that cannot be opened at
// src.path is ErrBadInput too.
func contentSum(src *spooled, name string, raw []byte, max int64) ([]byte, error) {
	f, err := src.open()
	if err != nil {
		if !src.inMem && !src.temp {
			return nil, fmt.Errorf("%w: %w", ErrBadInput, err) // the caller's path
		}
		return nil, fmt.Errorf("open spooled %s: %w", name, err)
	}
	defer f.Close()
	d, err := files.Decompress(bufio.NewReaderSize(f, 64<<10), name, max)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if d.Compression() == files.Uncompressed && raw != nil {
		return raw, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, d); err != nil {
		if fault.IsPermanent(err) {
			return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return h.Sum(nil), nil
}

// ErrJobRunning is returned by Rollback for a job that has not finished loading: a rollback
// racing the job's own writes would leave some of them behind.
var ErrJobRunning = errors.New("job is still loading")

// ErrRestoreUnsupported is returned by RollbackWith when RestorePrevious is asked of a loader
// whose workers' document store keeps no previous versions (LoaderConfig.NoPreviousVersions:
// AstraDB). Nothing is requested.
var ErrRestoreUnsupported = errors.New("this document store keeps no previous versions to restore")

// RollbackOptions are the options of a rollback.
type RollbackOptions struct {
	// RestorePrevious puts back the version each document replaced instead of deleting the
	// document, where the store keeps one (the embedded store keeps up to 4 earlier versions
	// per document; a document without one is deleted). Earlier jobs whose version is
	// restored are not superseded.
	RestorePrevious bool
}

// Rollback is RollbackWith without options: it deletes what job id wrote last.
func (l *Loader) Rollback(ctx context.Context, id, by string) (jobs.Job, error) {
	return l.RollbackWith(ctx, id, by, RollbackOptions{})
}

// RollbackWith asks the workers to undo what job id wrote last: it records the request in the
// job and publishes a rollback event, and returns once the event is stored. The workers
// delete every document whose "sluice_job" is the job (or restore its previous version, with
// opts.RestorePrevious), and mark every earlier job whose documents went with them
// superseded; the job's Rollback field shows the outcome. by names who asked.
// ErrJobNotFound, ErrJobRunning, ErrRestoreUnsupported.
func (l *Loader) RollbackWith(ctx context.Context, id, by string, opts RollbackOptions) (jobs.Job, error) {
	if opts.RestorePrevious && l.cfg.NoPreviousVersions {
		return jobs.Job{}, fmt.Errorf("rollback of job %s: %w: roll back without restoring to delete the job's documents", id, ErrRestoreUnsupported)
	}
	job, err := l.cfg.Jobs.Get(ctx, id)
	if err != nil {
		return job, err
	}
	if !job.State.Done() {
		return job, fmt.Errorf("%w: job %s is %s", ErrJobRunning, id, job.State)
	}
	if l.cfg.Key == nil {
		return job, errors.New("rollback: the loader has no command key to sign it with")
	}
	job, err = l.cfg.Jobs.RequestRollback(ctx, id, by, opts.RestorePrevious)
	if err != nil {
		return job, err
	}
	now := time.Now().UTC()
	ev := schemas.JobRollback{JobID: id, Env: job.Env, RequestedBy: by, RequestedAt: now, RestorePrevious: opts.RestorePrevious}
	if err := publishSignedRollback(ctx, l.cfg.JS, l.cfg.Key, fmt.Sprintf("%s/rollback/%d", id, now.UnixNano()), ev); err != nil {
		return job, err
	}
	return job, nil
}

// isEdgeRecord reports whether a record is a graph edge rather than a chunk.
func isEdgeRecord(raw json.RawMessage) bool {
	var probe map[string]json.RawMessage
	if json.Unmarshal(raw, &probe) != nil {
		return false
	}
	has := func(keys ...string) bool {
		for _, k := range keys {
			if _, ok := probe[k]; ok {
				return true
			}
		}
		return false
	}
	return has("source", "source_id") && has("target", "target_id") && !has("content", "text")
}
