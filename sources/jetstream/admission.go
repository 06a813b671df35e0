package jetstream

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ServerMaxAtomicInflight is nats-server's default limit on atomic batches open at once per
// stream (jetstream { limits { max_batch_inflight_per_stream } }); one more is refused with
// error 10210 "atomic publish too many inflight".
const ServerMaxAtomicInflight = 50

// AdmissionConfig configures an Admission.
type AdmissionConfig struct {
	// MaxInFlight bounds the atomic batches this process has open on the broker at once,
	// across every writer. Default 32: below the server's per-stream limit of 50
	// (ServerMaxAtomicInflight) with room for another process's batches. With several
	// publishing processes on one broker, keep their sum near the server's limit: a batch the
	// server refuses anyway (10210) is retried with backoff.
	MaxInFlight int
	// MaxQueued is how many batches may wait for a slot before Busy reports true, so that an
	// API refuses new jobs (503 with Retry-After) instead of queueing without bound. Default
	// 8 × MaxInFlight. Writers already admitted keep waiting their turn: their job is open.
	MaxQueued int
	// MaxWait makes Busy report true, too, when a batch arriving now would wait longer than
	// this for its slot: the batches waiting × the recent time a batch holds its slot ÷
	// MaxInFlight. Default 500 ms, so that an accepted job's publish waits about that long at
	// most and the rest is refused at once (503 with Retry-After), rather than every upload
	// waiting many seconds (job submissions p99 10–18 s under 1,000 clients with MaxQueued
	// alone). Negative disables it.
	MaxWait time.Duration
	// BatchTarget is the time a batch should take from asking for its slot to giving it back
	// (queueing, publishing, the broker's synced write). Admit adapts how many jobs may publish
	// at once to it: a batch slower than the target cuts the limit by a quarter (at most once
	// per target), a faster one raises it by one over the limit's size, between MinJobs and
	// MaxJobs. Checking a queue when a job starts is not enough: every job admitted at once
	// passed an empty queue, and under 1,000 clients the accepted jobs then waited 3–17 s in
	// it (issue 12). Default 100 ms, so that a job of a few batches, its open and its seal
	// finish within about a second. Negative disables the job limit.
	BatchTarget time.Duration
	// MinJobs and MaxJobs bound the job limit. Defaults 2 and 8 × MaxInFlight; it starts at
	// MaxInFlight.
	MinJobs, MaxJobs int
}

// Admission is the publish scheduler one process shares between all of its writers (loads,
// HTTP jobs, commands): each atomic batch takes one of MaxInFlight slots before it opens on
// the broker and gives it back once committed or abandoned. Waiting writers are served in
// order of arrival, batch by batch, so a large upload cannot starve a small one. Without it,
// 1,000 concurrent uploads each kept up to 4 batches open and the server refused half of them
// with 10210 (issue 12). Safe for concurrent use; the zero value is not usable, use
// NewAdmission. A nil *Admission admits everything at once.
type Admission struct {
	cfg    AdmissionConfig
	slots  chan struct{}
	queued atomic.Int64
	inUse  atomic.Int64
	// held is the moving average of how long a batch holds its slot, in nanoseconds
	// (exponential, weight 1/8 for each new batch).
	held atomic.Int64

	jobs     atomic.Int64 // jobs admitted and not yet done
	jobLimit atomic.Int64 // what Admit lets run at once
	mu       sync.Mutex   // guards limit and lastCut
	limit    float64
	lastCut  time.Time
}

// NewAdmission returns a scheduler with cfg's bounds.
func NewAdmission(cfg AdmissionConfig) *Admission {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 32
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = 8 * cfg.MaxInFlight
	}
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 500 * time.Millisecond
	}
	if cfg.BatchTarget == 0 {
		cfg.BatchTarget = 100 * time.Millisecond
	}
	if cfg.MinJobs <= 0 {
		cfg.MinJobs = 2
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 8 * cfg.MaxInFlight
	}
	cfg.MaxJobs = max(cfg.MaxJobs, cfg.MinJobs)
	a := &Admission{cfg: cfg, slots: make(chan struct{}, cfg.MaxInFlight)}
	a.limit = float64(min(max(cfg.MaxInFlight, cfg.MinJobs), cfg.MaxJobs))
	a.jobLimit.Store(int64(a.limit))
	return a
}

// Acquire waits for a slot, in order of arrival, and returns the function that gives it
// back (call it once). It returns ctx's error if ctx ends first.
func (a *Admission) Acquire(ctx context.Context) (release func(), err error) {
	if a == nil {
		return func() {}, nil
	}
	asked := time.Now()
	a.queued.Add(1)
	defer a.queued.Add(-1)
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	a.inUse.Add(1)
	start := time.Now()
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			now := time.Now()
			a.observe(now.Sub(start))
			a.adapt(now, now.Sub(asked))
			a.inUse.Add(-1)
			<-a.slots
		}
	}, nil
}

// Admit admits a job that is about to publish, unless the scheduler is Busy or as many jobs
// as the adaptive limit (see BatchTarget) are admitted and not yet done: then it returns
// false and the job should be refused before anything of it exists (503 with Retry-After).
// Call done once when the job's publishing ends, whatever its outcome. It does not block.
func (a *Admission) Admit() (done func(), ok bool) {
	if a == nil {
		return func() {}, true
	}
	if a.Busy() {
		return nil, false
	}
	if a.cfg.BatchTarget > 0 {
		for {
			n := a.jobs.Load()
			if n >= a.jobLimit.Load() {
				return nil, false
			}
			if a.jobs.CompareAndSwap(n, n+1) {
				break
			}
		}
	} else {
		a.jobs.Add(1)
	}
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			a.jobs.Add(-1)
		}
	}, true
}

// adapt moves the job limit after a batch that took d from asking for its slot to giving it
// back: additive increase while batches are fast, multiplicative decrease when they are not.
func (a *Admission) adapt(now time.Time, d time.Duration) {
	if a.cfg.BatchTarget <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if d > a.cfg.BatchTarget {
		if now.Sub(a.lastCut) < a.cfg.BatchTarget {
			return // one cut per target: the batches already under way are not news
		}
		a.lastCut = now
		a.limit = max(float64(a.cfg.MinJobs), a.limit*3/4)
	} else {
		a.limit = min(float64(a.cfg.MaxJobs), a.limit+1/a.limit)
	}
	a.jobLimit.Store(int64(a.limit))
}

// observe folds one batch's slot time into the moving average.
func (a *Admission) observe(d time.Duration) {
	for {
		old := a.held.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/8
		}
		if a.held.CompareAndSwap(old, next) {
			return
		}
	}
}

// ExpectedWait is how long a batch arriving now would wait for a slot, estimated from the
// batches waiting and the recent time a batch holds its slot.
func (a *Admission) ExpectedWait() time.Duration {
	if a == nil {
		return 0
	}
	return time.Duration(a.queued.Load() * a.held.Load() / int64(a.cfg.MaxInFlight))
}

// Busy reports whether more batches wait for a slot than MaxQueued, or a batch arriving now
// would wait longer than MaxWait: new work should be refused (503 with Retry-After) rather
// than queued. It does not block.
func (a *Admission) Busy() bool {
	if a == nil {
		return false
	}
	return a.queued.Load() > int64(a.cfg.MaxQueued) || (a.cfg.MaxWait > 0 && a.ExpectedWait() > a.cfg.MaxWait)
}

// Stats returns the batches open and waiting now, for metrics.
func (a *Admission) Stats() (inFlight, queued int64) {
	if a == nil {
		return 0, 0
	}
	return a.inUse.Load(), a.queued.Load()
}

// Jobs returns the jobs admitted and not yet done, and the job limit now.
func (a *Admission) Jobs() (admitted, limit int64) {
	if a == nil {
		return 0, 0
	}
	return a.jobs.Load(), a.jobLimit.Load()
}

// publishRetryFor bounds how long a publish refused for a passing reason (the server's batch
// limit, JetStream unavailable, no answer in time) is tried again, with backoff from 50 ms
// doubling to 2 s: a little over the server's batch timeout (10 s), after which the batches
// of a publisher that vanished no longer count against the limit.
const publishRetryFor = 15 * time.Second

// transientPublish reports whether err refused a publish for a reason that passes: the
// server's atomic batch limit (10210, 10211, both HTTP-429 style), JetStream unavailable
// (503), or no answer in time. A publish retried after a lost answer is safe: every message has a Nats-Msg-Id,
// and a batch with one already stored falls back to one by one (PublishAtomic).
func transientPublish(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode == jsErrCodeAtomicTooManyInflight || apiErr.ErrorCode == jsErrCodeBatchTooManyInflight ||
			apiErr.Code == 429 || apiErr.Code == 503
	}
	// No responders is left out: it means no stream stores the subject.
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, context.DeadlineExceeded)
}

// nats-server's error codes for a batch over its in-flight limits (orbit.go names none).
const (
	jsErrCodeAtomicTooManyInflight jetstream.ErrorCode = 10210 // atomic publish too many inflight
	jsErrCodeBatchTooManyInflight  jetstream.ErrorCode = 10211 // batch publish too many inflight
)

// withRetry runs publish until it succeeds, fails for a reason that does not pass, has been
// tried for publishRetryFor, or ctx ends.
func withRetry(ctx context.Context, publish func() error) error {
	delay := 50 * time.Millisecond
	for deadline := time.Now().Add(publishRetryFor); ; {
		err := publish()
		if err == nil || !transientPublish(err) || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(delay/2 + time.Duration(jitter(int64(delay/2)+1)))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(2*delay, 2*time.Second)
	}
}
