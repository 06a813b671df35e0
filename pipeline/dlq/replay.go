package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/sluice-dev/sluice/schemas"
)

// Replay defaults and bounds.
const (
	// DefaultRate is the replay rate, in messages per second, when ReplayRequest.Rate is 0.
	DefaultRate = 100
	// MaxRate is the largest ReplayRequest.Rate.
	MaxRate = 10000
	// DefaultMaxReplays is the per-entry replay limit when ReplayRequest.MaxReplays is 0.
	DefaultMaxReplays = 3
	// DefaultReplayLimit is how many entries one Replay by filter handles when
	// ReplayRequest.Limit is 0; MaxReplayLimit is the largest Limit and the most IDs.
	DefaultReplayLimit = 1000
	MaxReplayLimit     = 10000
)

// Reasons a replay skips an entry (ReplaySkip.Reason).
const (
	// ReasonLimit: the entry was replayed MaxReplays times already (loop guard).
	ReasonLimit = "replay limit reached"
	// ReasonNotFound: no entry has the id (already replayed or deleted, or never existed).
	ReasonNotFound = "not found"
	// ReasonInProgress: this process is replaying the entry right now.
	ReasonInProgress = "replay already in progress"
	// ReasonDuplicate: JetStream already had the replayed message (another process replayed
	// the entry within the duplicate window); the entry is removed.
	ReasonDuplicate = "already replayed"
	// ReasonNoSubject: the entry's original subject is unknown or a DLQ subject.
	ReasonNoSubject = "original subject cannot be replayed"
)

// ReplayRequest selects dead letters to replay. Exactly one of IDs and Filter must be set.
type ReplayRequest struct {
	// IDs lists envelope ids, at most MaxReplayLimit.
	IDs []string `json:"ids,omitempty"`
	// Filter selects entries stored before Replay started; at most Limit are handled.
	Filter *Filter `json:"filter,omitempty"`
	// DryRun reports what would be replayed and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Rate is the most messages republished per second. Optional; 0 means DefaultRate;
	// negative or above MaxRate is invalid.
	Rate float64 `json:"rate,omitempty"`
	// MaxReplays skips entries already replayed this many times. Optional; 0 means
	// DefaultMaxReplays; negative is invalid.
	MaxReplays int `json:"max_replays,omitempty"`
	// Limit bounds the entries a Replay by Filter handles. Optional; 0 means
	// DefaultReplayLimit; negative or above MaxReplayLimit is invalid.
	Limit int `json:"limit,omitempty"`
}

// Validate reports every problem in r at once, each wrapping ErrInvalid.
func (r ReplayRequest) Validate() error {
	var errs []error
	switch {
	case len(r.IDs) == 0 && r.Filter == nil:
		errs = append(errs, fmt.Errorf("%w: give ids or a filter", ErrInvalid))
	case len(r.IDs) > 0 && r.Filter != nil:
		errs = append(errs, fmt.Errorf("%w: give ids or a filter, not both", ErrInvalid))
	}
	if len(r.IDs) > MaxReplayLimit {
		errs = append(errs, fmt.Errorf("%w: %d ids, more than %d", ErrInvalid, len(r.IDs), MaxReplayLimit))
	}
	for i, id := range r.IDs {
		if id == "" {
			errs = append(errs, fmt.Errorf("%w: ids[%d] is empty", ErrInvalid, i))
		}
	}
	if r.Filter != nil {
		if err := r.Filter.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Rate < 0 || r.Rate > MaxRate || r.Rate != r.Rate {
		errs = append(errs, fmt.Errorf("%w: rate %v is outside 0..%d messages per second", ErrInvalid, r.Rate, MaxRate))
	}
	if r.MaxReplays < 0 {
		errs = append(errs, fmt.Errorf("%w: max_replays %d is negative", ErrInvalid, r.MaxReplays))
	}
	if r.Limit < 0 || r.Limit > MaxReplayLimit {
		errs = append(errs, fmt.Errorf("%w: limit %d is outside 0..%d", ErrInvalid, r.Limit, MaxReplayLimit))
	}
	return errors.Join(errs...)
}

// Replayed is one entry Replay republished (or, in a dry run, would republish).
type Replayed struct {
	ID string `json:"id"`
	// Subject is the original subject the message went (would go) to.
	Subject string `json:"subject"`
	// MsgID is the Nats-Msg-Id of the republished message.
	MsgID string `json:"msg_id"`
	// Replay is the message's replay count (its Sluice-Replay header).
	Replay int `json:"replay"`
	// Seq is the republished message's stream sequence; 0 in a dry run.
	Seq uint64 `json:"seq,omitempty"`
}

// Skipped is one entry Replay left alone, and why.
type Skipped struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// Failed is one entry whose replay failed; the entry remains in the DLQ.
type Failed struct {
	ID    string `json:"id"`
	Error string `json:"error"`
}

// ReplayResult reports what Replay did.
type ReplayResult struct {
	Replayed []Replayed `json:"replayed"`
	Skipped  []Skipped  `json:"skipped"`
	Failed   []Failed   `json:"failed"`
	DryRun   bool       `json:"dry_run"`
	// Truncated is true when a Replay by filter stopped at its Limit with more entries left.
	Truncated bool `json:"truncated"`
}

// Replay republishes dead letters to their original subjects, with their original headers and
// payload (read back from the payload bucket when stored by reference, and removed from it with
// the entry), a new Nats-Msg-Id ("<first msg id>/replay<n>/<entry id>") and Sluice-Replay: n,
// at most req.Rate per second. Only after JetStream acknowledged a republish is the entry deleted; a
// message that fails again comes back as a new entry carrying its replay count, and entries
// replayed req.MaxReplays times are skipped (ReasonLimit). Replaying is idempotent: a second
// replay of the same entry finds it in progress or gone, and a republish racing another
// process is dropped by JetStream's duplicate window (same Nats-Msg-Id).
//
// A dry run reports the entries that would be replayed and changes nothing. Replay blocks
// until done (honouring ctx and the rate) and handles entries one at a time. Input errors wrap
// ErrInvalid; a failed republish or delete is reported per entry in Failed; other errors end
// the call and are returned with the result so far.
func (s *Store) Replay(ctx context.Context, req ReplayRequest) (ReplayResult, error) {
	res := ReplayResult{DryRun: req.DryRun, Replayed: []Replayed{}, Skipped: []Skipped{}, Failed: []Failed{}}
	if err := req.Validate(); err != nil {
		return res, err
	}
	run := &replayRun{
		s:          s,
		lim:        rate.NewLimiter(rate.Limit(cmp.Or(req.Rate, DefaultRate)), 1),
		maxReplays: cmp.Or(req.MaxReplays, DefaultMaxReplays),
		dry:        req.DryRun,
		res:        res,
	}
	var err error
	if req.Filter == nil {
		err = run.byIDs(ctx, req.IDs)
	} else {
		err = run.byFilter(ctx, *req.Filter, cmp.Or(req.Limit, DefaultReplayLimit))
	}
	if !req.DryRun {
		s.replays.WithLabelValues("replayed").Add(float64(len(run.res.Replayed)))
		s.replays.WithLabelValues("skipped").Add(float64(len(run.res.Skipped)))
		s.replays.WithLabelValues("failed").Add(float64(len(run.res.Failed)))
	}
	return run.res, err
}

// replayRun is one Replay call: the request's settings with defaults applied, and the result
// so far. It is used by that call's goroutine only.
type replayRun struct {
	s          *Store
	lim        *rate.Limiter
	maxReplays int
	dry        bool
	res        ReplayResult
}

// byIDs replays the entries ids names, each once however often it is named.
func (r *replayRun) byIDs(ctx context.Context, ids []string) error {
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if err := r.claimed(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// byFilter replays up to limit entries that f selects, only those stored before it started, so
// messages that fail again during this call are not replayed again by it. It sets
// res.Truncated when it stops at limit with entries left.
func (r *replayRun) byFilter(ctx context.Context, f Filter, limit int) error {
	info, err := r.s.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("replay dead letters: stream info: %w", err)
	}
	upTo := info.State.LastSeq
	handled := 0
	var after uint64
	for upTo > 0 {
		page, err := r.s.list(ctx, f, after, min(MaxLimit, limit-handled+1), upTo)
		if err != nil {
			return fmt.Errorf("replay dead letters: %w", err)
		}
		for _, e := range page.Entries {
			if handled == limit {
				r.res.Truncated = true
				return nil
			}
			handled++
			// claimed re-reads the entry: it may have gone since it was listed.
			if err := r.claimed(ctx, e.Envelope.ID); err != nil {
				return err
			}
		}
		if page.NextCursor == "" {
			break
		}
		if after, err = ParseCursor(page.NextCursor); err != nil {
			return err
		}
	}
	return nil
}

// claimed replays entry id while holding this Store's claim on it: an id another call is
// replaying is skipped (ReasonInProgress), one with no entry too (ReasonNotFound). Its error
// ends the Replay.
func (r *replayRun) claimed(ctx context.Context, id string) error {
	if !r.s.claim(id) {
		r.res.Skipped = append(r.res.Skipped, Skipped{ID: id, Reason: ReasonInProgress})
		return nil
	}
	defer r.s.release(id)
	es, err := r.s.locate(ctx, id)
	if err != nil {
		return err
	}
	if len(es) == 0 {
		r.res.Skipped = append(r.res.Skipped, Skipped{ID: id, Reason: ReasonNotFound})
		return nil
	}
	return r.s.replayOne(ctx, &r.res, r.lim, r.maxReplays, r.dry, id, es)
}

// claim marks id as being replayed by this Store; false when it already is.
func (s *Store) claim(id string) bool {
	s.replayMu.Lock()
	defer s.replayMu.Unlock()
	if s.replaying[id] {
		return false
	}
	s.replaying[id] = true
	return true
}

func (s *Store) release(id string) {
	s.replayMu.Lock()
	delete(s.replaying, id)
	s.replayMu.Unlock()
}

// replayOne replays the newest copy of entry id (es holds every copy) and deletes all copies.
func (s *Store) replayOne(ctx context.Context, res *ReplayResult, lim *rate.Limiter, maxReplays int, dry bool, id string, es []Entry) error {
	e := es[len(es)-1]
	env := e.Envelope
	if env.Replays >= maxReplays {
		res.Skipped = append(res.Skipped, Skipped{ID: id, Reason: ReasonLimit})
		return nil
	}
	if env.Subject == "" || strings.HasPrefix(env.Subject, "sluice.dlq.") || !validSubject(env.Subject) || strings.ContainsAny(env.Subject, "*>") {
		res.Skipped = append(res.Skipped, Skipped{ID: id, Reason: ReasonNoSubject})
		return nil
	}
	n := env.Replays + 1
	msg := replayMsg(env, n)
	item := Replayed{ID: id, Subject: env.Subject, MsgID: msg.Header.Get(nats.MsgIdHdr), Replay: n}
	if dry {
		res.Replayed = append(res.Replayed, item)
		return nil
	}
	if err := lim.Wait(ctx); err != nil {
		return fmt.Errorf("replay %s: wait for rate limit: %w", id, err)
	}
	if env.PayloadRef != nil || env.HeadersRef != nil {
		// The original went by reference: republish its bytes, not the empty inline field.
		payload, headers, err := s.Original(ctx, env)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("replay %s: %w", id, ctx.Err())
			}
			res.Failed = append(res.Failed, Failed{ID: id, Error: fmt.Sprintf("read the original stored by reference: %v", err)})
			return nil
		}
		env.Payload, env.Headers = payload, headers
		msg = replayMsg(env, n)
	}
	var opts []jetstream.PublishOpt
	if env.Stream != "" {
		opts = append(opts, jetstream.WithExpectStream(env.Stream))
	}
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("replay %s: %w", id, ctx.Err())
		}
		res.Failed = append(res.Failed, Failed{ID: id, Error: fmt.Sprintf("republish to %s: %v", env.Subject, err)})
		return nil
	}
	// Acknowledged: now, and only now, remove the entry.
	for _, c := range es {
		if _, err := s.deleteSeq(ctx, id, c.Seq); err != nil {
			res.Failed = append(res.Failed, Failed{ID: id, Error: fmt.Sprintf("republished (seq %d) but could not remove the entry; replaying it again is deduplicated for the stream's duplicate window: %v", ack.Sequence, err)})
			return nil
		}
	}
	s.dropObjects(ctx, env)
	if ack.Duplicate {
		res.Skipped = append(res.Skipped, Skipped{ID: id, Reason: ReasonDuplicate})
		return nil
	}
	item.Seq = ack.Sequence
	res.Replayed = append(res.Replayed, item)
	return nil
}

// replayMsg builds the republished message of env as replay n.
func replayMsg(env schemas.DeadLetterEnvelope, n int) *nats.Msg {
	m := nats.NewMsg(env.Subject)
	m.Data = env.Payload
	for k, vs := range env.Headers {
		// Publish expectations and batch markers of the first publish must not apply again.
		if strings.HasPrefix(k, "Nats-Expected-") || strings.HasPrefix(k, "Nats-Batch-") {
			continue
		}
		m.Header[k] = append([]string(nil), vs...)
	}
	first := m.Header.Get(HeaderReplayOf)
	if first == "" {
		first = m.Header.Get(nats.MsgIdHdr)
		if first != "" {
			m.Header.Set(HeaderReplayOf, first)
		}
	}
	id := "replay" + strconv.Itoa(n) + "/" + env.ID
	if first != "" {
		id = first + "/" + id
	}
	m.Header.Set(nats.MsgIdHdr, id)
	m.Header.Set(HeaderReplay, strconv.Itoa(n))
	return m
}
