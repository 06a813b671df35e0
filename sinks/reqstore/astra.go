package reqstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// DefaultAstraCollection is AstraConfig.Collection's default.
const DefaultAstraCollection = "sluice_requirements"

// defaultConflictRetries is AstraConfig.ConflictRetries' default.
const defaultConflictRetries = 8

// Document kinds: every document of the collection carries one in its "kind" field.
const (
	kindFeature = "feature_request"
	kindVersion = "requirements_version"
	kindAudit   = "audit"
	kindMarker  = "marker"
)

// astraIndexDeny lists the fields no query filters or sorts on: free text and whole documents,
// which may exceed the Data API's 8000-byte limit for indexed strings and would only cost
// index space. Changing it changes the collection's options, so an existing collection then
// fails OpenAstra with EXISTING_COLLECTION_DIFFERENT_SETTINGS.
var astraIndexDeny = []string{"title", "description", "rejection_reason", "reason", "document", "outcome", "audit"}

// errConflict is a conditional write that found another writer's document: re-read and retry.
var errConflict = errors.New("requirements: concurrent writer")

// AstraConfig configures an AstraStore. The zero value of each optional field means its
// default.
type AstraConfig struct {
	// Client sends the Data API commands. Required. The store does not close it.
	Client *dataapi.Client
	// Collection is the one collection holding every document (feature requests, requirements
	// versions, audit entries, apply markers). Optional; "" means DefaultAstraCollection.
	Collection string
	// Validator checks every command in ApplyCommand. Optional; nil compiles the embedded
	// schemas at open.
	Validator *requirements.Validator
	// Now is the clock for apply markers' applied_at and the audit entries' append order.
	// Optional; nil means time.Now.
	Now func() time.Time
	// ConflictRetries is how many times ApplyCommand re-reads and re-applies after a
	// conditional write lost to a concurrent writer of the same key, before it returns a
	// transient error. Optional; 0 means 8; negative is invalid.
	ConflictRetries int
}

// Validate reports every problem with c at once. It does not contact the server.
func (c AstraConfig) Validate() error {
	var errs []error
	if c.Client == nil {
		errs = append(errs, errors.New("requirements: AstraConfig.Client is required"))
	}
	if c.ConflictRetries < 0 {
		errs = append(errs, fmt.Errorf("requirements: AstraConfig.ConflictRetries is %d, want >= 0", c.ConflictRetries))
	}
	return errors.Join(errs...)
}

// AstraStore is the Store on one AstraDB collection, through the Data API. Every record is a
// document with a "kind" and a deterministic _id:
//
//	feature_request       _id = request_id
//	requirements_version  _id = "rv:<version_id>"
//	audit                 _id = "audit:<request_id>:<seq, 10 digits>"   (insert only)
//	marker                _id = "cmd:<command_id>" and "marker:<message id>"
//
// The Data API has no multi-document transactions. ApplyCommand is exactly-once in effect
// anyway: the record's document (feature request or requirements version) is the commit
// point, written with a conditional single-document write, and carries the command id and the
// audit entry it adds; the audit document and the apply markers are derived from it and
// written after it, idempotently, so a retry after a crash at any point completes them. See
// README.md ("AstraDB").
//
// It is safe for concurrent use, from goroutines and from processes sharing the collection.
type AstraStore struct {
	c               *dataapi.Client
	coll            string
	v               *requirements.Validator
	now             func() time.Time
	conflictRetries int

	closed atomic.Bool

	mu       sync.Mutex // guards lastLine
	lastLine int64
}

// OpenAstra returns a store on cfg.Collection, creating the collection when it is missing
// (idempotent; an existing collection with other indexing options is an error). It blocks
// for the round trip and honours ctx. Close marks the store closed; cfg.Client stays the
// caller's.
func OpenAstra(ctx context.Context, cfg AstraConfig) (*AstraStore, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Collection == "" {
		cfg.Collection = DefaultAstraCollection
	}
	if cfg.ConflictRetries == 0 {
		cfg.ConflictRetries = defaultConflictRetries
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Validator == nil {
		v, err := requirements.NewValidator()
		if err != nil {
			return nil, err
		}
		cfg.Validator = v
	}
	if err := cfg.Client.CreateCollection(ctx, cfg.Collection, dataapi.CollectionOptions{IndexingDeny: slices.Clone(astraIndexDeny)}); err != nil {
		return nil, fmt.Errorf("requirements: open astra store: %w", err)
	}
	return &AstraStore{c: cfg.Client, coll: cfg.Collection, v: cfg.Validator, now: cfg.Now, conflictRetries: cfg.ConflictRetries}, nil
}

// Close marks the store closed: later calls return ErrClosed. It does not wait for calls
// already running and does not close the Client. It is idempotent and returns nil.
func (s *AstraStore) Close() error {
	s.closed.Store(true)
	return nil
}

func (s *AstraStore) check() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}
