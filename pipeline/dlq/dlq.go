// Package dlq is all of dead-lettering: it sends dead letters for the workers (Sender, which
// writes them through Writer: the message whole, or its payload by reference when too large),
// lists, fetches, deletes, purges and replays the entries of the DLQ stream
// (schemas.StreamDLQ), and captures the JetStream
// advisories of messages that hit their consumer's max deliveries or were terminated, so that
// every such message has a dead letter (DESIGN.md invariant 8).
//
// Entries are read with batched direct gets (the DLQ stream has AllowDirect), filtered by subject
// on the server where possible and by header (job, error class) on the client. Pages run oldest
// first; a cursor is the DLQ stream sequence of the last entry a page covered.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/synadia-io/orbit.go/jetstreamext"

	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Header names the dead-letter path uses beyond those in schemas.
const (
	// HeaderErrorClass is set on each DLQ message to its error class, so entries can be
	// filtered without decoding them.
	HeaderErrorClass = "Sluice-Error-Class"
	// HeaderReplay is set on a replayed message to its replay count (1 for the first replay).
	// A message that dead-letters again carries it in its envelope's headers.
	HeaderReplay = "Sluice-Replay"
	// HeaderReplayOf is set on a replayed message to the Nats-Msg-Id the message was first
	// published with, so later replays derive their ids from it.
	HeaderReplayOf = "Sluice-Replay-Of"
)

// Limits on one List call.
const (
	// DefaultLimit is the page size when Limit is 0.
	DefaultLimit = 100
	// MaxLimit is the largest page size.
	MaxLimit = 1000
)

// ErrNotFound is returned (wrapped) by Get and Delete when no entry has the id.
var ErrNotFound = errors.New("dead letter not found")

// ErrInvalid is wrapped by errors caused by the caller's input: a malformed cursor, limit, id,
// filter or replay request. The text says what was wrong and contains no internals.
var ErrInvalid = errors.New("invalid dead-letter request")

// DefaultAdvisoryStreams returns the streams Sluice's workers consume — chunks, jobs, graph
// batches and commands — whose advisories a capture turns into dead letters by default.
func DefaultAdvisoryStreams() []string { return sjs.DefaultAdvisoryStreams() }

// Config configures a Store.
type Config struct {
	// JS is the JetStream context used to read, publish and delete. Required.
	JS jetstream.JetStream
	// Stream is the DLQ stream (sources/jetstream.Provisioned.DLQ). Required; it must allow
	// direct gets (Provision sets AllowDirect).
	Stream jetstream.Stream
	// MaxScan bounds the DLQ messages one List call reads while filtering; a page then ends
	// early with a cursor to continue from. Optional; 0 means 10000; negative is invalid.
	MaxScan int
	// AdvisoryStreams names the streams whose max-deliveries and terminated advisories
	// CaptureAdvisories turns into dead letters. Optional; nil means every stream Sluice
	// consumes (DefaultAdvisoryStreams).
	AdvisoryStreams []string
	// Provision says whether SubscribeAdvisories may create the advisory stream and its
	// consumer (sources/jetstream.ProvisionAdvisories). Optional; the zero value creates
	// what is missing and changes nothing that exists.
	Provision sjs.ProvisionConfig
	// Logger receives warnings (advisories that could not be captured). Optional; nil discards.
	Logger *slog.Logger
	// Registerer receives the replay metric (sluice_dead_letter_replays_total). Optional.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.MaxScan == 0 {
		c.MaxScan = 10000
	}
	if c.AdvisoryStreams == nil {
		c.AdvisoryStreams = DefaultAdvisoryStreams()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem in c at once.
func (c Config) Validate() error {
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("JS is required"))
	}
	if c.Stream == nil {
		errs = append(errs, errors.New("Stream is required"))
	} else if ci := c.Stream.CachedInfo(); ci == nil || ci.Config.Name == "" {
		errs = append(errs, errors.New("Stream has no cached info (use the handle Provision or JetStream.Stream returned)"))
	}
	if c.MaxScan < 0 {
		errs = append(errs, fmt.Errorf("MaxScan %d is negative", c.MaxScan))
	}
	for i, s := range c.AdvisoryStreams {
		if s == "" || strings.ContainsAny(s, ".*> \t") {
			errs = append(errs, fmt.Errorf("AdvisoryStreams[%d] %q is not a stream name", i, s))
		}
	}
	return errors.Join(errs...)
}

// Store reads and acts on the DLQ stream. Its methods are safe for concurrent use, also with
// other processes working on the same stream: every decision is re-checked against the stream.
type Store struct {
	cfg    Config
	js     jetstream.JetStream
	stream jetstream.Stream
	name   string
	log    *slog.Logger

	// scanMu serialises index refreshes.
	scanMu sync.Mutex
	// mu guards index and indexedTo.
	mu sync.Mutex
	// index maps an envelope id to the DLQ sequences holding it (normally one).
	index map[string][]uint64
	// indexedTo is the last DLQ sequence the index has seen.
	indexedTo uint64

	// payloads is the payload bucket (BucketDLQPayloads), opened on first use.
	payloads payloadBucket

	// replayMu guards replaying.
	replayMu sync.Mutex
	// replaying holds ids being replayed by this Store right now.
	replaying map[string]bool

	// replays counts the entries Replay handled, by result (replayed, skipped, failed).
	replays *prometheus.CounterVec
}

// New checks cfg and returns a Store. It starts nothing and does no I/O; the id index is built
// lazily by the first Get, Delete or Replay by id.
func New(cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dead-letter store config: %w", err)
	}
	cfg.AdvisoryStreams = append([]string(nil), cfg.AdvisoryStreams...)
	replays, err := instrument.Register(cfg.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_dead_letter_replays_total",
		Help: "Dead letters handled by replay requests of this process, by result (replayed, skipped, failed); dry runs are not counted.",
	}, []string{"result"}))
	if err != nil {
		return nil, fmt.Errorf("dead-letter store: %w", err)
	}
	for _, r := range []string{"replayed", "skipped", "failed"} {
		replays.WithLabelValues(r)
	}
	return &Store{
		cfg:       cfg,
		js:        cfg.JS,
		stream:    cfg.Stream,
		name:      cfg.Stream.CachedInfo().Config.Name,
		log:       cfg.Logger,
		index:     map[string][]uint64{},
		replaying: map[string]bool{},
		replays:   replays,
	}, nil
}

// Filter selects dead letters. Zero fields match everything; set fields must all match.
type Filter struct {
	// Job matches the original Sluice-Job header exactly.
	Job string `json:"job,omitempty"`
	// Subject matches the original subject; NATS wildcards (* and >) are allowed, e.g.
	// "sluice.v1.chunks.*". It is applied on the server.
	Subject string `json:"subject,omitempty"`
	// ErrorClass matches the envelope's error class exactly (validation, limit, rejected,
	// auth, transient, exhausted).
	ErrorClass string `json:"error_class,omitempty"`
	// Since and Until bound when the dead letter was stored in the DLQ (Entry.StoredAt):
	// Since inclusive, Until exclusive.
	Since time.Time `json:"since,omitzero"`
	Until time.Time `json:"until,omitzero"`
}

// IsZero reports whether f matches every entry.
func (f Filter) IsZero() bool {
	return f.Job == "" && f.Subject == "" && f.ErrorClass == "" && f.Since.IsZero() && f.Until.IsZero()
}

// Validate reports every problem in f at once, each wrapping ErrInvalid.
func (f Filter) Validate() error {
	var errs []error
	if f.Subject != "" && !validSubject(f.Subject) {
		errs = append(errs, fmt.Errorf("%w: subject %q is not a NATS subject (dot-separated tokens; * and > as whole tokens, > last)", ErrInvalid, f.Subject))
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Until.After(f.Since) {
		errs = append(errs, fmt.Errorf("%w: until %s is not after since %s", ErrInvalid, f.Until.Format(time.RFC3339Nano), f.Since.Format(time.RFC3339Nano)))
	}
	return errors.Join(errs...)
}

func validSubject(s string) bool {
	if len(s) > 1024 || strings.ContainsAny(s, " \t\r\n") {
		return false
	}
	toks := strings.Split(s, ".")
	for i, t := range toks {
		switch {
		case t == "":
			return false
		case t == ">" && i != len(toks)-1:
			return false
		case t != "*" && t != ">" && strings.ContainsAny(t, "*>"):
			return false
		}
	}
	return true
}

// dlqSubject is the DLQ subject filter for f.
func (f Filter) dlqSubject() string {
	if f.Subject == "" {
		return schemas.DLQSubjects
	}
	return schemas.DLQSubject(f.Subject)
}

// matchRaw applies the header and time parts of f to a raw DLQ message.
func (f Filter) matchRaw(m *jetstream.RawStreamMsg) bool {
	if f.Job != "" && m.Header.Get(schemas.HeaderJob) != f.Job {
		return false
	}
	if f.ErrorClass != "" && m.Header.Get(HeaderErrorClass) != f.ErrorClass {
		return false
	}
	if !f.Since.IsZero() && m.Time.Before(f.Since) {
		return false
	}
	return true
}

// Entry is one dead letter as stored in the DLQ stream. It is a value: callers own it.
type Entry struct {
	// Envelope is the dead letter. Its Replays is the larger of the stored field and the
	// Sluice-Replay header of the original message, so it is right even when the writer did
	// not copy the header.
	Envelope schemas.DeadLetterEnvelope
	// Seq is the entry's sequence in the DLQ stream.
	Seq uint64
	// StoredAt is when the DLQ stream stored the entry.
	StoredAt time.Time
}

// Page is one page of List.
type Page struct {
	// Entries are oldest first (ascending DLQ sequence).
	Entries []Entry
	// NextCursor continues the listing; empty when the end of the stream was reached. A page
	// may hold fewer than the limit while NextCursor is set (the scan bound was reached).
	NextCursor string
}

// decode turns a raw DLQ message into an Entry.
func decode(m *jetstream.RawStreamMsg) (Entry, error) {
	var env schemas.DeadLetterEnvelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		return Entry{}, fmt.Errorf("decode dead letter at DLQ sequence %d: %w", m.Sequence, err)
	}
	if vals := env.Headers[HeaderReplay]; len(vals) > 0 {
		if n, err := strconv.Atoi(vals[len(vals)-1]); err == nil && n > env.Replays {
			env.Replays = n
		}
	}
	return Entry{Envelope: env, Seq: m.Sequence, StoredAt: m.Time.UTC()}, nil
}

// ParseCursor parses a cursor returned in Page.NextCursor. "" is the start.
func ParseCursor(cursor string) (uint64, error) {
	if cursor == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(cursor, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: cursor %q is not one this API returned", ErrInvalid, cursor)
	}
	return n, nil
}

// scanBatch is how many DLQ messages one direct-get batch asks for, and scanBatchBytes bounds
// its size, so a scan holds at most this much at once.
const (
	scanBatch      = 256
	scanBatchBytes = 8 << 20
)

// scan calls fn with the raw DLQ messages on subject from sequence from (or, when from is 0
// and since is set, from the first message stored at or after since), in order, until fn
// returns false, the end of the stream is reached, or maxScan messages (0: no bound) were read.
// It returns the last sequence fn was called with and whether that was the end of the stream
// at the time.
func (s *Store) scan(ctx context.Context, subject string, from uint64, since time.Time, maxScan int, fn func(*jetstream.RawStreamMsg) (bool, error)) (last uint64, end bool, err error) {
	seen := 0
	first := true
	for {
		if err := ctx.Err(); err != nil {
			return last, false, err
		}
		opts := []jetstreamext.GetBatchOpt{jetstreamext.GetBatchSubject(subject), jetstreamext.GetBatchMaxBytes(scanBatchBytes)}
		if first && from <= 1 && !since.IsZero() {
			opts = append(opts, jetstreamext.GetBatchStartTime(since))
		} else {
			opts = append(opts, jetstreamext.GetBatchSeq(max(from, 1)))
		}
		first = false
		batch := scanBatch
		if maxScan > 0 {
			batch = min(batch, maxScan-seen)
		}
		it, err := jetstreamext.GetBatch(ctx, s.js, s.name, batch, opts...)
		if err != nil {
			return last, false, fmt.Errorf("read DLQ stream %s from sequence %d: %w", s.name, from, err)
		}
		got := 0
		pending := uint64(1)
		var iterErr error
		stop := false
		// The iterator must be drained: it holds a subscription until it ends.
		for m, err := range it {
			if stop {
				continue
			}
			if err != nil {
				if !errors.Is(err, jetstreamext.ErrNoMessages) {
					iterErr = err
				}
				stop = true
				continue
			}
			got++
			seen++
			last = m.Sequence
			from = m.Sequence + 1
			pending = 1
			if p, perr := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64); perr == nil {
				pending = p
			}
			cont, ferr := fn(m)
			if ferr != nil {
				iterErr = ferr
			}
			if ferr != nil || !cont {
				stop = true
			}
		}
		switch {
		case iterErr != nil:
			return last, false, fmt.Errorf("read DLQ stream %s: %w", s.name, iterErr)
		case got == 0:
			if err := ctx.Err(); err != nil {
				return last, false, err
			}
			return last, true, nil
		case stop || pending == 0:
			return last, pending == 0, nil
		case maxScan > 0 && seen >= maxScan:
			return last, false, nil
		}
	}
}

// List returns up to limit dead letters matching f, oldest first, starting after cursor (""
// for the beginning). limit 0 means DefaultLimit; it must be 0 to MaxLimit. It reads at most
// Config.MaxScan messages, so a selective filter may return a short page with a NextCursor;
// keep paging until NextCursor is "". It blocks on JetStream requests and honours ctx. Input
// errors wrap ErrInvalid.
func (s *Store) List(ctx context.Context, f Filter, cursor string, limit int) (Page, error) {
	if limit < 0 || limit > MaxLimit {
		return Page{}, fmt.Errorf("%w: limit %d is outside 0..%d", ErrInvalid, limit, MaxLimit)
	}
	if limit == 0 {
		limit = DefaultLimit
	}
	after, err := ParseCursor(cursor)
	if err != nil {
		return Page{}, err
	}
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	return s.list(ctx, f, after, limit, 0)
}

// list is List after validation; upTo, when not 0, ignores entries above that sequence.
func (s *Store) list(ctx context.Context, f Filter, after uint64, limit int, upTo uint64) (Page, error) {
	var page Page
	full, past := false, false
	last, end, err := s.scan(ctx, f.dlqSubject(), after+1, f.Since, s.cfg.MaxScan, func(m *jetstream.RawStreamMsg) (bool, error) {
		if (upTo > 0 && m.Sequence > upTo) || (!f.Until.IsZero() && !m.Time.Before(f.Until)) {
			past = true
			return false, nil
		}
		if !f.matchRaw(m) {
			return true, nil
		}
		e, err := decode(m)
		if err != nil {
			s.log.Warn("skipping undecodable dead letter", "stream_seq", m.Sequence, "err", err)
			return true, nil
		}
		if f.ErrorClass != "" && e.Envelope.Error.Class != f.ErrorClass {
			return true, nil
		}
		page.Entries = append(page.Entries, e)
		full = len(page.Entries) >= limit
		return !full, nil
	})
	if err != nil {
		return Page{}, err
	}
	if !end && !past && last > 0 {
		page.NextCursor = strconv.FormatUint(last, 10)
	}
	return page, nil
}

// refresh adds every DLQ message past the indexed watermark to the id index.
func (s *Store) refresh(ctx context.Context) error {
	s.scanMu.Lock()
	defer s.scanMu.Unlock()
	s.mu.Lock()
	from := s.indexedTo + 1
	s.mu.Unlock()
	_, _, err := s.scan(ctx, schemas.DLQSubjects, from, time.Time{}, 0, func(m *jetstream.RawStreamMsg) (bool, error) {
		id := idOf(m)
		s.mu.Lock()
		if id != "" && !containsSeq(s.index[id], m.Sequence) {
			s.index[id] = append(s.index[id], m.Sequence)
		}
		s.indexedTo = max(s.indexedTo, m.Sequence)
		s.mu.Unlock()
		return true, nil
	})
	return err
}

func containsSeq(seqs []uint64, seq uint64) bool {
	for _, s := range seqs {
		if s == seq {
			return true
		}
	}
	return false
}

// idOf returns the envelope id of a raw DLQ message: from its Nats-Msg-Id ("dlq/<id>") when
// present, else from the envelope.
func idOf(m *jetstream.RawStreamMsg) string {
	if id, ok := strings.CutPrefix(m.Header.Get(schemas.HeaderMsgID), "dlq/"); ok && id != "" {
		return id
	}
	var head struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(m.Data, &head)
	return head.ID
}

// locate returns the entries stored under id, refreshing the index first when id is unknown.
// Sequences whose message is gone are dropped from the index.
func (s *Store) locate(ctx context.Context, id string) ([]Entry, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty id", ErrInvalid)
	}
	s.mu.Lock()
	seqs := append([]uint64(nil), s.index[id]...)
	s.mu.Unlock()
	if len(seqs) == 0 {
		if err := s.refresh(ctx); err != nil {
			return nil, err
		}
		s.mu.Lock()
		seqs = append([]uint64(nil), s.index[id]...)
		s.mu.Unlock()
	}
	var out []Entry
	for _, seq := range seqs {
		m, err := s.stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			s.forget(id, seq)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get dead letter %s at DLQ sequence %d: %w", id, seq, err)
		}
		e, err := decode(m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Store) forget(id string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seqs := s.index[id]
	for i, v := range seqs {
		if v == seq {
			seqs = append(seqs[:i:i], seqs[i+1:]...)
			break
		}
	}
	if len(seqs) == 0 {
		delete(s.index, id)
	} else {
		s.index[id] = seqs
	}
}

// Get returns the dead letter with envelope id (e.g. "SLUICE_CHUNKS-42"), or an error wrapping
// ErrNotFound. When the same id was stored more than once it returns the newest. The first call
// for an unknown id reads the DLQ stream past what the Store has indexed (all of it after a
// restart). It blocks on JetStream requests and honours ctx.
func (s *Store) Get(ctx context.Context, id string) (Entry, error) {
	es, err := s.locate(ctx, id)
	if err != nil {
		return Entry{}, err
	}
	if len(es) == 0 {
		return Entry{}, fmt.Errorf("get dead letter %s: %w", id, ErrNotFound)
	}
	return es[len(es)-1], nil
}

// Delete removes the dead letter with envelope id (every copy of it) and the original it
// stored by reference, or returns an error wrapping ErrNotFound when there is none. It blocks
// on JetStream requests and honours ctx.
func (s *Store) Delete(ctx context.Context, id string) error {
	es, err := s.locate(ctx, id)
	if err != nil {
		return err
	}
	n := 0
	for _, e := range es {
		gone, err := s.deleteSeq(ctx, id, e.Seq)
		if err != nil {
			return err
		}
		if gone {
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("delete dead letter %s: %w", id, ErrNotFound)
	}
	s.dropObjects(ctx, es[len(es)-1].Envelope)
	return nil
}

// deleteSeq deletes one DLQ message. It reports false when the message was already gone.
func (s *Store) deleteSeq(ctx context.Context, id string, seq uint64) (bool, error) {
	err := s.stream.DeleteMsg(ctx, seq)
	if err != nil {
		// Deleted concurrently (another replay, another process)? Then that is fine.
		if _, gerr := s.stream.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
			s.forget(id, seq)
			return false, nil
		}
		return false, fmt.Errorf("delete dead letter %s at DLQ sequence %d: %w", id, seq, err)
	}
	s.forget(id, seq)
	return true, nil
}

// Purge deletes every dead letter matching f (with the originals they stored by reference)
// and returns how many it deleted. An empty filter
// purges the whole DLQ. Entries stored while Purge runs may or may not be deleted. It blocks
// (one JetStream request per entry) and honours ctx; on error it returns the count so far.
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	if err := f.Validate(); err != nil {
		return 0, err
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("purge dead letters: stream info: %w", err)
	}
	upTo := info.State.LastSeq
	if upTo == 0 {
		return 0, nil
	}
	n := 0
	var after uint64
	for {
		page, err := s.list(ctx, f, after, MaxLimit, upTo)
		if err != nil {
			return n, fmt.Errorf("purge dead letters: %w", err)
		}
		for _, e := range page.Entries {
			gone, err := s.deleteSeq(ctx, e.Envelope.ID, e.Seq)
			if err != nil {
				return n, fmt.Errorf("purge dead letters: %w", err)
			}
			if gone {
				n++
				s.dropObjects(ctx, e.Envelope)
			}
		}
		if page.NextCursor == "" {
			return n, nil
		}
		if after, err = ParseCursor(page.NextCursor); err != nil {
			return n, err
		}
	}
}
