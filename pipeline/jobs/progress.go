package jobs

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/sourcegraph/conc/pool"
)

// ProgressConfig configures a Progress recorder.
type ProgressConfig struct {
	// Store is the job store. Required.
	Store *Store
	// Linger is how long a flush waits to gather more marks when the recorder was idle; marks
	// queued while a flush ran are flushed right after it. Default 2 ms.
	Linger time.Duration
	// QueueSize bounds requests waiting to be flushed (a request is one caller's marks of one
	// job); Record and RecordAll block when it is full. Default 8192.
	QueueSize int
	// Concurrency is how many jobs are updated at once in a flush. Default 8.
	Concurrency int
	// OnJob, if set, is called after each flush with every job it changed. It runs on the
	// flushing goroutine and must not block.
	OnJob func(Job)
	// Conn is the connection behind Store. Optional: when set, record calls under way when it
	// reconnects are cancelled and made again at once. A request sent just before a broker
	// restart or a network cut is never answered; without this it held every message of its
	// batch for the full call timeout (30 s, every worker stalled; issue 11).
	Conn *nats.Conn
}

// reconnectPoll is how often Progress looks at Conn's reconnect count.
const reconnectPoll = 100 * time.Millisecond

// Progress records item outcomes in the job store in batches: one compare-and-set per job per
// flush instead of one round trip per message. Record blocks until its mark is durable, so a
// handler acks only after its progress is recorded: a crash can make an outcome be recorded
// twice (harmless: records are sets), never lost.
//
// NewProgress starts a goroutine (two with Conn); Close stops them. Safe for concurrent use.
type Progress struct {
	cfg     ProgressConfig
	reqs    chan *markReq
	closing chan struct{}
	done    chan struct{}
	once    sync.Once

	emu      sync.Mutex // guards ectx, ecancel and gen
	ectx     context.Context
	ecancel  context.CancelFunc
	gen      uint64 // the connection's reconnect count when ectx was made
	watching chan struct{}
}

// epoch returns the context record calls derive from, cancelled when Conn reconnects, and
// the reconnect count it belongs to.
func (p *Progress) epoch() (context.Context, uint64) {
	p.emu.Lock()
	defer p.emu.Unlock()
	return p.ectx, p.gen
}

// watchReconnects replaces the epoch context, cancelling the old one, whenever Conn's
// reconnect count changes, until Close.
func (p *Progress) watchReconnects() {
	defer close(p.watching)
	t := time.NewTicker(reconnectPoll)
	defer t.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-t.C:
		}
		n := p.cfg.Conn.Stats().Reconnects
		p.emu.Lock()
		if n != p.gen {
			p.ecancel()
			p.ectx, p.ecancel = context.WithCancel(context.Background())
			p.gen = n
		}
		p.emu.Unlock()
	}
}

// markReq is one job's marks from one caller.
type markReq struct {
	job   string
	marks []Mark
	err   error
	done  chan struct{}
}

var errClosedProgress = errors.New("progress: closed")

// NewProgress returns a running recorder. The caller must Close it.
func NewProgress(cfg ProgressConfig) (*Progress, error) {
	if cfg.Store == nil {
		return nil, errors.New("progress: Store is required")
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 2 * time.Millisecond
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 8192
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	p := &Progress{cfg: cfg, reqs: make(chan *markReq, cfg.QueueSize), closing: make(chan struct{}), done: make(chan struct{}),
		watching: make(chan struct{})}
	p.ectx, p.ecancel = context.WithCancel(context.Background())
	if cfg.Conn != nil {
		p.gen = cfg.Conn.Stats().Reconnects
	}
	go p.run()
	if cfg.Conn != nil {
		go p.watchReconnects()
	} else {
		close(p.watching)
	}
	return p, nil
}

// Record durably records m and returns nil, or the error that prevented it.
func (p *Progress) Record(ctx context.Context, m Mark) error {
	return p.RecordAll(ctx, []Mark{m})
}

// RecordAll durably records marks (of one job or several) and returns nil, or the first
// error that prevented it; then some of the marks may be recorded (recording is idempotent).
// A batch handler records a whole batch with one call.
func (p *Progress) RecordAll(ctx context.Context, marks []Mark) error {
	reqs := make([]*markReq, 0, 1)
	for _, m := range marks {
		var r *markReq
		for _, have := range reqs {
			if have.job == m.Job {
				r = have
				break
			}
		}
		if r == nil {
			r = &markReq{job: m.Job, marks: make([]Mark, 0, len(marks)), done: make(chan struct{})}
			reqs = append(reqs, r)
		}
		r.marks = append(r.marks, m)
	}
	select {
	case <-p.closing:
		return errClosedProgress
	default:
	}
	for _, r := range reqs {
		select {
		case p.reqs <- r:
		case <-ctx.Done():
			return ctx.Err()
		case <-p.closing:
			// Those already queued are still recorded by Close.
			return errClosedProgress
		}
	}
	for _, r := range reqs {
		select {
		case <-r.done:
			if r.err != nil {
				return r.err
			}
		case <-p.done:
			// Closed while it was being queued: recorded only if the last flush took it.
			select {
			case <-r.done:
				if r.err != nil {
					return r.err
				}
			default:
				return errClosedProgress
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (p *Progress) run() {
	defer close(p.done)
	for {
		var first *markReq
		select {
		case first = <-p.reqs:
		case <-p.closing:
			// Finish what is queued.
			for {
				select {
				case r := <-p.reqs:
					p.flush([]*markReq{r})
				default:
					return
				}
			}
		}
		batch := []*markReq{first}
		if len(p.reqs) > 0 {
			// Requests queued while the last flush ran: they have waited long enough.
			for len(batch) < cap(p.reqs) && len(p.reqs) > 0 {
				batch = append(batch, <-p.reqs)
			}
			p.flush(batch)
			continue
		}
		timer := time.NewTimer(p.cfg.Linger)
	gather:
		for len(batch) < cap(p.reqs) {
			select {
			case r := <-p.reqs:
				batch = append(batch, r)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		p.flush(batch)
	}
}

// recordTimeout bounds one job's record call; it takes milliseconds, but seconds on a broker
// behind a slow, busy network (5 s timed out there again and again, and the retries kept the
// network busy). A call lost in a reconnect is not left to time out: see ProgressConfig.Conn.
const recordTimeout = 30 * time.Second

// maxRecordAttempts bounds how often one flush calls record for a job whose call was cut
// short by a reconnect.
const maxRecordAttempts = 3

func (p *Progress) flush(batch []*markReq) {
	byJob := map[string][]*markReq{}
	for _, r := range batch {
		byJob[r.job] = append(byJob[r.job], r)
	}
	var mu sync.Mutex
	var changed []Job
	wp := pool.New().WithMaxGoroutines(p.cfg.Concurrency)
	for id, reqs := range byJob {
		wp.Go(func() {
			var marks []Mark
			for _, r := range reqs {
				marks = append(marks, r.marks...)
			}
			var job Job
			var err error
			for attempt := 1; ; attempt++ {
				base, gen := p.epoch()
				ctx, cancel := context.WithTimeout(base, recordTimeout)
				job, err = p.cfg.Store.record(ctx, id, marks)
				cancel()
				if _, now := p.epoch(); err == nil || now == gen || attempt == maxRecordAttempts {
					break
				}
				// The connection reconnected during the call: its request may be lost and
				// never answered. Call again (recording is idempotent).
			}
			for _, r := range reqs {
				r.err = err
				close(r.done)
			}
			if err == nil {
				mu.Lock()
				changed = append(changed, job)
				mu.Unlock()
			}
		})
	}
	wp.Wait()
	if p.cfg.OnJob != nil {
		for _, j := range changed {
			p.cfg.OnJob(j)
		}
	}
}

// Close records what is queued and stops the recorder. It is idempotent.
func (p *Progress) Close() error {
	p.once.Do(func() { close(p.closing) })
	<-p.done
	<-p.watching
	p.emu.Lock()
	p.ecancel()
	p.emu.Unlock()
	return nil
}
