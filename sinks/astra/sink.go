// Package astra is the chunk sink for AstraDB: Sink writes the pipeline's chunk documents
// to Data API collections through a dataapi.Client (sinks/astra/dataapi), one unordered
// insertMany per batch with per-document outcomes and idempotent redelivery
// (DOCUMENT_ALREADY_EXISTS on our own ids is resolved by comparing versions and content),
// and rolls a job's documents back.
//
// sink.go holds the Sink, its collections and WriteDocs; prepare.go checks and builds each
// document before it is sent; resolve.go settles DOCUMENT_ALREADY_EXISTS by the version
// rules; rollback.go deletes a job's documents and keeps PrevJobsField.
package astra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/document"
)

// VersionField is the document field in which Sink stores document.Doc.Version, as a JSON
// number. A body's own field of that name is replaced.
const VersionField = "sluice_version"

// SinkConfig configures a Sink. Zero fields take the defaults given in their comments.
type SinkConfig struct {
	// Client sends the commands. Required. The Sink does not close it.
	Client *dataapi.Client
	// DisableCreate turns off creating a collection on its first use. By default (false)
	// the Sink sends an idempotent createCollection once per collection before writing to
	// it: a vector collection when Vector is set, and always with indexing denied on
	// "embedding".
	DisableCreate bool
	// Vector says the collections are vector collections: a document's top-level
	// "embedding" array (VectorDimension numbers) is stored as "$vector". Otherwise the
	// array is stored as "embedding", unindexed, so it never meets the 1000-element limit.
	Vector bool
	// VectorDimension is the $vector length of a vector collection. Default 1024.
	VectorDimension int
	// VectorMetric is the similarity metric of a created vector collection: cosine,
	// dot_product or euclidean. Optional; "" means the server default (cosine).
	VectorMetric string
	// Limits are checked before a document is sent, so a document the server would reject
	// fails at once with a precise reason. Optional; zero fields take the Data API defaults
	// (with "embedding" unindexed, matching the collections the Sink creates).
	Limits document.Limits
	// ResolveConcurrency bounds the documents whose DOCUMENT_ALREADY_EXISTS conflicts one
	// WriteDocs call resolves at the same time. Default 8.
	ResolveConcurrency int
	// Logger receives debug records and warnings. Optional; nil discards them.
	Logger *slog.Logger
}

const (
	defaultVectorDimension    = 1024
	defaultResolveConcurrency = 8
	// maxResolveRounds bounds the read-compare-replace loop of one conflicting document
	// when other writers keep changing it.
	maxResolveRounds = 8
	// unindexedField is the field the created collections exclude from indexing.
	unindexedField = "embedding"
)

func (c *SinkConfig) setDefaults() {
	if c.VectorDimension == 0 {
		c.VectorDimension = defaultVectorDimension
	}
	if c.ResolveConcurrency == 0 {
		c.ResolveConcurrency = defaultResolveConcurrency
	}
}

// Validate reports every problem with c at once, judging zero fields by their defaults.
func (c SinkConfig) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("astra sink config: Client is required"))
	}
	if c.VectorDimension < 0 || c.VectorDimension > 4096 {
		errs = append(errs, fmt.Errorf("astra sink config: VectorDimension must be 1..4096, got %d", c.VectorDimension))
	}
	switch c.VectorMetric {
	case "", "cosine", "dot_product", "euclidean":
	default:
		errs = append(errs, fmt.Errorf("astra sink config: VectorMetric must be cosine, dot_product or euclidean, got %q", c.VectorMetric))
	}
	if c.ResolveConcurrency < 0 {
		errs = append(errs, fmt.Errorf("astra sink config: ResolveConcurrency must not be negative, got %d", c.ResolveConcurrency))
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("astra sink config: %w", err))
	}
	return errors.Join(errs...)
}

// Sink writes chunk documents to Data API collections. It implements pipeline.DocSink with
// the upsert and version rules of the embedded store (sinks/docstore): a higher Version
// always replaces, the same Version (or 0) replaces only changed content, a lower Version is
// skipped and reported as success. It is safe for concurrent use and holds no goroutines
// between calls.
type Sink struct {
	cfg SinkConfig
	c   *dataapi.Client
	log *slog.Logger

	mu    sync.Mutex
	colls map[string]*collInit // guarded by mu: collections created, or being created
}

// collInit is one createCollection, shared by every caller that needs the collection
// meanwhile. err is written before done is closed.
type collInit struct {
	done chan struct{}
	err  error
}

// NewSink returns a Sink for cfg, or the errors of cfg.Validate. It does not contact the
// server: collections are created on first use.
func NewSink(cfg SinkConfig) (*Sink, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new astra sink: %w", err)
	}
	s := &Sink{cfg: cfg, c: cfg.Client, log: cfg.Logger, colls: map[string]*collInit{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// EnsureCollection creates collection coll unless it was created before by this Sink (or
// DisableCreate is set). Concurrent callers for one collection share a single
// createCollection; a failure is not cached, so the next call tries again. A collection
// that exists with other options is used as it is, with a warning.
func (s *Sink) EnsureCollection(ctx context.Context, coll string) error {
	if s.cfg.DisableCreate {
		return nil
	}
	s.mu.Lock()
	ci, ok := s.colls[coll]
	if !ok {
		ci = &collInit{done: make(chan struct{})}
		s.colls[coll] = ci
		s.mu.Unlock()
		ci.err = s.create(ctx, coll)
		close(ci.done)
		if ci.err != nil {
			s.forget(coll, ci)
		}
		return ci.err
	}
	s.mu.Unlock()
	select {
	case <-ci.done:
		return ci.err
	case <-ctx.Done():
		return ctxErr(ctx, "create collection "+coll)
	}
}

// forget drops the cached creation of coll, if it is still ci.
func (s *Sink) forget(coll string, ci *collInit) {
	s.mu.Lock()
	if s.colls[coll] == ci {
		delete(s.colls, coll)
	}
	s.mu.Unlock()
}

func (s *Sink) create(ctx context.Context, coll string) error {
	opts := dataapi.CollectionOptions{IndexingDeny: []string{unindexedField}}
	if s.cfg.Vector {
		opts.Vector = &dataapi.VectorOptions{Dimension: s.cfg.VectorDimension, Metric: s.cfg.VectorMetric}
	}
	err := s.c.CreateCollection(ctx, coll, opts)
	var ae *dataapi.APIError
	if errors.As(err, &ae) && ae.Code == dataapi.CodeExistingCollectionSettings {
		s.log.WarnContext(ctx, "astra: collection exists with other options; using it as it is",
			"collection", coll, "err", err.Error())
		return nil
	}
	if err == nil {
		s.log.DebugContext(ctx, "astra: collection ready", "collection", coll)
	}
	return err
}

// pending is one document on its way to the store.
type pending struct {
	idx     int // position in the WriteDocs input
	id      string
	version uint64
	body    json.RawMessage // as sent: VersionField added, embedding moved to $vector
}

// WriteConcurrency is how many WriteDocs calls the sink serves at once: the client's
// connection pool (pipeline.WriteConcurrencer).
func (s *Sink) WriteConcurrency() int { return s.c.MaxConns() }

// Ping checks that the Data API answers for the sink's keyspace with one findCollections
// command (pipeline.Pinger: the worker's circuit breaker probes a down sink with it). It
// blocks for one request and the client's retries; it honours ctx.
func (s *Sink) Ping(ctx context.Context) error {
	if _, err := s.c.FindCollections(ctx); err != nil {
		return fmt.Errorf("astra: ping: %w", err)
	}
	return nil
}

// WriteDocs writes docs into collection coll with unordered insertMany commands (at most
// dataapi.MaxInsertMany documents each) and returns one outcome per document, in order.
// It implements pipeline.DocSink.
//
// A document is checked before it is sent: an empty ID, a body that is not a JSON object,
// an "_id" that is not the string ID, a broken limit (SinkConfig.Limits) or, on a vector
// collection, an embedding of the wrong length gives it a permanent outcome and it is not
// sent. A document the server rejects gets a permanent outcome (fault.Limit for a limit).
// DOCUMENT_ALREADY_EXISTS is resolved by reading the stored document: a lower stored version
// (or the same version with other content) is replaced with a conditional findOneAndReplace,
// anything else is success. A document the database did not write (a retryable code) is
// sent again, up to the client's MaxAttempts; then its outcome is transient. Documents of
// one call with the same ID count as one: the highest Version, the later on a tie, wins and
// the others share its outcome.
//
// The second result is non-nil when the call failed as a whole: a cancelled ctx or a
// request that kept failing transiently (transient), refused credentials (permanent
// fault.Auth), an invalid collection name or a missing collection with DisableCreate
// (permanent fault.Rejected). Documents may then have been written; writing them again is
// safe. WriteDocs blocks for the round trips. It does not retain docs.
func (s *Sink) WriteDocs(ctx context.Context, coll string, docs []document.Doc) ([]error, error) {
	if !dataapi.ValidName(coll) {
		return nil, fault.Permanentf(fault.Rejected, "astra write to %q: invalid collection name (1-48 letters, digits or underscores)", coll)
	}
	if ctx.Err() != nil {
		return nil, ctxErr(ctx, "astra write to "+coll)
	}
	outcomes := make([]error, len(docs))
	order, winners := s.pendingDocs(docs, outcomes)
	if len(order) == 0 {
		return outcomes, nil
	}
	if err := s.EnsureCollection(ctx, coll); err != nil {
		return nil, fmt.Errorf("astra write to %s: %w", coll, err)
	}
	start := time.Now()
	conflicts, err := s.writeRounds(ctx, coll, order, outcomes)
	if err != nil {
		return nil, err
	}
	// Documents that lost to a later copy of their ID share its outcome.
	for i, d := range docs {
		if w, ok := winners[d.ID]; ok && w.idx != i && outcomes[i] == nil {
			if o := outcomes[w.idx]; o != nil {
				outcomes[i] = fmt.Errorf("document %d (%q) superseded by document %d in the same call: %w", i, d.ID, w.idx, o)
			}
		}
	}
	s.log.DebugContext(ctx, "astra: wrote documents", "collection", coll, "docs", len(docs),
		"sent", len(order), "conflicts", conflicts, "duration", time.Since(start))
	return outcomes, nil
}

// pendingDocs prepares docs for sending, writing the outcome of each one that cannot be
// sent into outcomes. Of the documents with one ID only the winner is sent: the highest
// Version, the later on a tie. It returns the winners in input order (of each ID's first
// document), and by ID.
func (s *Sink) pendingDocs(docs []document.Doc, outcomes []error) ([]*pending, map[string]*pending) {
	winners := make(map[string]*pending, len(docs))
	var order []*pending
	for i, d := range docs {
		body, err := s.prepare(d)
		if err != nil {
			outcomes[i] = fmt.Errorf("document %d (%q): %w", i, d.ID, err)
			continue
		}
		p := &pending{idx: i, id: d.ID, version: d.Version, body: body}
		if w, ok := winners[d.ID]; ok {
			if d.Version < w.version {
				continue // the earlier, higher version stands
			}
			*w = *p // replaces in place, keeping w's slot in order
			continue
		}
		winners[d.ID] = p
		order = append(order, p)
	}
	return order, winners
}

// writeRounds inserts order into coll and writes each document's outcome into outcomes:
// DOCUMENT_ALREADY_EXISTS is resolved (resolveAll), a document the database did not write
// is sent again after the client's backoff, up to its MaxAttempts rounds. It returns how
// many conflicts it resolved, or the error that failed a whole request; a collection
// dropped behind the sink's back is forgotten, to be created again on the next call.
func (s *Sink) writeRounds(ctx context.Context, coll string, order []*pending, outcomes []error) (int, error) {
	conflicts := 0
	toSend := order
	for round := 1; len(toSend) > 0; round++ {
		results, err := s.insert(ctx, coll, toSend)
		if err != nil {
			var ae *dataapi.APIError
			if errors.As(err, &ae) && ae.Code == dataapi.CodeUnknownCollection && !s.cfg.DisableCreate {
				// Dropped behind our back: create it again on the next attempt.
				s.mu.Lock()
				delete(s.colls, coll)
				s.mu.Unlock()
				return conflicts, fault.Retry(fault.Transient, fmt.Errorf("astra write to %s: %w", coll, err))
			}
			return conflicts, fmt.Errorf("astra write to %s: %w", coll, err)
		}
		var again, exists []*pending
		for i, p := range toSend {
			r := results[i]
			var ae *dataapi.APIError
			switch {
			case r == nil:
				outcomes[p.idx] = nil
			case errors.As(r, &ae) && ae.Code == dataapi.CodeDocumentAlreadyExists:
				exists = append(exists, p)
			case !fault.IsPermanent(r) && round < s.c.MaxAttempts():
				again = append(again, p)
			default:
				outcomes[p.idx] = fmt.Errorf("document %d (%q): %w", p.idx, p.id, r)
			}
		}
		if len(exists) > 0 {
			conflicts += len(exists)
			s.resolveAll(ctx, coll, exists, outcomes)
		}
		toSend = again
		if len(again) > 0 {
			if err := s.c.Backoff(ctx, round); err != nil {
				for _, p := range again {
					outcomes[p.idx] = ctxErr(ctx, fmt.Sprintf("document %d (%q)", p.idx, p.id))
				}
				break
			}
		}
	}
	return conflicts, nil
}

// insert inserts ps, in chunks of dataapi.MaxInsertMany, and returns one result per
// document. When a chunk fails as a whole for a reason that may belong to one document (the
// parser rejects a duplicate key or an over-long number for the whole request), it halves
// the chunk until the culprit stands alone, so that one bad document never fails its
// neighbours.
func (s *Sink) insert(ctx context.Context, coll string, ps []*pending) ([]error, error) {
	out := make([]error, len(ps))
	for start := 0; start < len(ps); start += dataapi.MaxInsertMany {
		end := min(start+dataapi.MaxInsertMany, len(ps))
		if err := s.insertChunk(ctx, coll, ps[start:end], out[start:end]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Sink) insertChunk(ctx context.Context, coll string, ps []*pending, out []error) error {
	bodies := make([]json.RawMessage, len(ps))
	for i, p := range ps {
		bodies[i] = p.body
	}
	res, err := s.c.InsertManyUnchecked(ctx, coll, bodies) // prepare checked every body
	if err == nil {
		copy(out, res)
		return nil
	}
	if !isolatable(err) {
		return err
	}
	if len(ps) == 1 {
		out[0] = err
		return nil
	}
	half := len(ps) / 2
	if err := s.insertChunk(ctx, coll, ps[:half], out[:half]); err != nil {
		return err
	}
	return s.insertChunk(ctx, coll, ps[half:], out[half:])
}

// isolatable reports whether a whole-request failure may be caused by one document: a
// permanent rejection that is neither about credentials nor about the collection or
// keyspace.
func isolatable(err error) bool {
	if !fault.IsPermanent(err) || fault.ClassOf(err) == fault.Auth {
		return false
	}
	var ae *dataapi.APIError
	if errors.As(err, &ae) {
		return ae.Scope != "SCHEMA" && ae.Code != dataapi.CodeUnknownCollection && ae.Code != dataapi.CodeUnknownKeyspace
	}
	var he *dataapi.HTTPError
	return errors.As(err, &he) && he.StatusCode == 413
}

// GetDoc returns the stored document with id in coll, or an error wrapping
// dataapi.ErrNotFound when there is none (or the collection does not exist). The document
// is as the Data API returns it: "_id" first, VersionField included, "$vector" left out.
// It blocks for one round trip and is safe for concurrent use.
func (s *Sink) GetDoc(ctx context.Context, coll, id string) (json.RawMessage, error) {
	doc, err := s.c.FindOne(ctx, coll, map[string]any{"_id": id}, nil)
	var ae *dataapi.APIError
	if errors.As(err, &ae) && ae.Code == dataapi.CodeUnknownCollection {
		return nil, fmt.Errorf("get %q from %s: collection does not exist: %w", id, coll, dataapi.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %q from %s: %w", id, coll, err)
	}
	return doc, nil
}

// ctxErr returns ctx's error wrapped as transient: a cancelled call is never permanent.
func ctxErr(ctx context.Context, what string) error {
	return fault.Retry(fault.Transient, fmt.Errorf("%s: %w", what, context.Cause(ctx)))
}
