package jobs

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// CacheConfig bounds the job cache (Store.RunCache).
type CacheConfig struct {
	// MaxEntries bounds the keys held (job records, their issues, idempotency keys). Default
	// 16,384: every job a busy hour of uploads touches, the ones clients poll.
	MaxEntries int
	// MaxBytes bounds the values held. Default 64 MiB: a job record is a few hundred bytes, a
	// sealed job's issues up to ≈200 KiB (schemas.MaxIssues reasons).
	MaxBytes int64
	// MaxAge is how long an entry is served without the broker confirming it (a watch update
	// or a read). Default 1 minute. Updates arrive through the watch within milliseconds; the
	// age is the safety net for what a watch cannot see (an operator purging the bucket's
	// stream) and bounds how long such a change goes unseen.
	MaxAge time.Duration
	// StallCheck is how often the watch is checked against the bucket (one stream-info
	// request), and StallAfter how long it may owe a revision the bucket held before it is
	// taken for stalled and restarted, the cache serving nothing meanwhile (checkWatch).
	// Defaults 1 s and 3 s: a live watch delivers within milliseconds, and a client that lost
	// its watch's broker node noticed only after 20 to 30 s.
	StallCheck, StallAfter time.Duration
}

func (c *CacheConfig) setDefaults() {
	if c.MaxEntries <= 0 {
		c.MaxEntries = 16384
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 64 << 20
	}
	if c.MaxAge <= 0 {
		c.MaxAge = time.Minute
	}
	if c.StallCheck <= 0 {
		c.StallCheck = time.Second
	}
	if c.StallAfter <= 0 {
		c.StallAfter = 3 * time.Second
	}
}

// jobCache holds the latest value of recently changed or read keys of the jobs bucket, by
// revision: a value never replaces one of a later revision, so the watch, the store's own
// writes and reads may fill it in any order. It serves nothing while no watch runs (live is
// false): without the watch an entry could miss a change made elsewhere. Safe for concurrent
// use; every method is O(1) under one mutex.
type jobCache struct {
	cfg CacheConfig
	now func() time.Time

	mu        sync.Mutex
	live      bool
	lru       *list.List // of *cacheEntry, most recently used at the front
	byKey     map[string]*list.Element
	bytes     int64
	evictions uint64 // grows with every eviction and reset; see fill
}

type cacheEntry struct {
	key     string
	rev     uint64
	value   []byte // nil for a deleted key
	deleted bool
	seen    time.Time // when the broker last confirmed it
}

func newJobCache(cfg CacheConfig, now func() time.Time) *jobCache {
	cfg.setDefaults()
	return &jobCache{cfg: cfg, now: now, lru: list.New(), byKey: map[string]*list.Element{}}
}

// get returns key's cached value: hit reports whether the cache answers at all, found
// whether the key exists (false for a deleted key).
func (c *jobCache) get(key string) (value []byte, rev uint64, found, hit bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		return nil, 0, false, false
	}
	el, ok := c.byKey[key]
	if !ok {
		return nil, 0, false, false
	}
	e := el.Value.(*cacheEntry)
	if c.now().Sub(e.seen) > c.cfg.MaxAge {
		c.remove(el)
		return nil, 0, false, false
	}
	c.lru.MoveToFront(el)
	return e.value, e.rev, !e.deleted, true
}

// put records key at rev unless a later revision is held. The watch and the store's own
// writes call it: both know the value is the key's latest at rev.
func (c *jobCache) put(key string, rev uint64, value []byte, deleted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live {
		c.putLocked(key, rev, value, deleted)
	}
}

// mark returns the eviction count before a read of the broker, for fill.
func (c *jobCache) mark() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evictions
}

// fill records what a read of the broker returned, unless an entry was evicted (or the cache
// reset) since mark: the watch may have delivered a later revision of key meanwhile, and had
// that entry been evicted, the older value read would stay cached as if it were the latest.
// Not caching is always safe; the next read tries again.
func (c *jobCache) fill(mark uint64, key string, rev uint64, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.live && c.evictions == mark {
		c.putLocked(key, rev, value, false)
	}
}

func (c *jobCache) putLocked(key string, rev uint64, value []byte, deleted bool) {
	if el, ok := c.byKey[key]; ok {
		e := el.Value.(*cacheEntry)
		if rev < e.rev {
			return
		}
		c.bytes += int64(len(value)) - int64(len(e.value))
		e.rev, e.value, e.deleted, e.seen = rev, value, deleted, c.now()
		c.lru.MoveToFront(el)
	} else {
		c.byKey[key] = c.lru.PushFront(&cacheEntry{key: key, rev: rev, value: value, deleted: deleted, seen: c.now()})
		c.bytes += int64(len(value))
	}
	for c.lru.Len() > c.cfg.MaxEntries || (c.bytes > c.cfg.MaxBytes && c.lru.Len() > 1) {
		c.remove(c.lru.Back())
	}
}

func (c *jobCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.byKey, e.key)
	c.bytes -= int64(len(e.value))
	c.evictions++
}

// setLive empties the cache and starts (live) or stops serving from it.
func (c *jobCache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Init()
	clear(c.byKey)
	c.bytes = 0
	c.evictions++
	c.live = live
}

// len returns the entries held and their bytes.
func (c *jobCache) len() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.bytes
}

// RunCache keeps the jobs most recently changed or read in memory while it runs, so that Get
// (GET /v1/jobs/{id}, which pollers call most) and the read before each change cost no broker
// round trip: under 1,000 clients a read waited behind the bucket's synced writes (p99 0.3 s,
// issue 12). A watch on the whole bucket applies every change, from any process, within
// milliseconds; this store's own writes are applied as they succeed, so a submitter reads
// what it wrote at once. Nothing is served from memory until the watch runs, nor after it
// fails; it is then restarted after a second. RunCache blocks until ctx ends and returns
// nil; onErr (optional) hears each watch failure. Run it once per store.
func (s *Store) RunCache(ctx context.Context, cfg CacheConfig, onErr func(error)) error {
	c := newJobCache(cfg, s.now)
	if !s.cache.CompareAndSwap(nil, c) {
		return errors.New("job cache: already running")
	}
	defer s.cache.Store(nil)
	for {
		err := s.watchInto(ctx, c)
		c.setLive(false)
		if ctx.Err() != nil {
			return nil
		}
		if onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// watchInto runs one watch of the bucket into c until ctx ends or the watch fails.
func (s *Store) watchInto(ctx context.Context, c *jobCache) error {
	w, err := s.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("job cache: watch %s: %w", s.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	// Live from here: every change committed after the watch's consumer started is delivered,
	// and anything read from the broker from now on is at least as new as the watch's start.
	c.setLive(true)
	tick := time.NewTicker(c.cfg.StallCheck)
	defer tick.Stop()
	var seen uint64 // the highest revision the watch delivered
	var owed stallMark
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-tick.C:
			if err := s.checkWatch(ctx, c.cfg, seen, &owed, now); err != nil {
				return err
			}
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("job cache: watch %s stopped", s.kv.Bucket())
			}
			if e == nil {
				continue
			}
			seen = max(seen, e.Revision())
			del := e.Operation() != jetstream.KeyValuePut
			var v []byte
			if !del {
				v = e.Value()
			}
			c.put(e.Key(), e.Revision(), v, del)
		}
	}
}

// stallMark is a revision the bucket held at a time, which the watch owes until it has
// delivered it.
type stallMark struct {
	rev uint64
	at  time.Time
}

// errWatchStalled ends a watch that has not delivered, within CacheConfig.StallAfter, a
// revision the bucket already held.
var errWatchStalled = errors.New("job cache: the watch stalled")

// checkWatch compares what the watch delivered (seen) with the bucket's last revision. A watch
// whose consumer was on a broker node that went away delivers nothing until the client notices
// and recreates it, tens of seconds later, while the cache went on serving what it held: after
// a node loss GET /v1/jobs/{id} answered the same progress for 20 to 30 s while the job went
// on (issue 15, the three-node proof). The watch owes the revision the bucket held at a tick;
// not delivered after StallAfter, the watch is ended, and the cache serves nothing until a new
// one runs (reads go to the broker). A status the broker cannot give (an election) decides
// nothing. One stream-info request a tick.
func (s *Store) checkWatch(ctx context.Context, cfg CacheConfig, seen uint64, owed *stallMark, now time.Time) error {
	if owed.rev > 0 && seen >= owed.rev {
		*owed = stallMark{}
	}
	if owed.rev > 0 && now.Sub(owed.at) >= cfg.StallAfter {
		return fmt.Errorf("%w: revision %d of %s not delivered %s after the bucket held it (delivered up to %d)",
			errWatchStalled, owed.rev, s.kv.Bucket(), now.Sub(owed.at).Round(time.Millisecond), seen)
	}
	if owed.rev > 0 {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.StallCheck)
	defer cancel()
	st, err := s.kv.Status(sctx)
	if err != nil {
		return nil
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok || bs.StreamInfo() == nil {
		return nil
	}
	if last := bs.StreamInfo().State.LastSeq; last > seen {
		*owed = stallMark{rev: last, at: now}
	}
	return nil
}

// readMode says how Store.get uses the cache.
type readMode int

const (
	readCached readMode = iota // from the cache when it holds the key, else the broker (filling it)
	readFresh                  // from the broker, filling the cache: a compare-and-set retry after a conflict
	readBypass                 // from the broker only: a scan of every job, which would evict the polled ones
)

// get reads key as how says; the cache is used only while RunCache runs. It returns
// jetstream.ErrKeyNotFound for a missing or deleted key.
func (s *Store) get(ctx context.Context, key string, how readMode) ([]byte, uint64, error) {
	c := s.cache.Load()
	if how == readBypass {
		c = nil
	}
	var mark uint64
	if c != nil {
		if how == readCached {
			if v, rev, found, hit := c.get(key); hit {
				if !found {
					return nil, 0, jetstream.ErrKeyNotFound
				}
				return v, rev, nil
			}
		}
		mark = c.mark()
	}
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	if c != nil {
		c.fill(mark, key, e.Revision(), e.Value())
	}
	return e.Value(), e.Revision(), nil
}

// wrote records this store's own successful write of key at rev in the cache.
func (s *Store) wrote(key string, rev uint64, value []byte) {
	if c := s.cache.Load(); c != nil {
		c.put(key, rev, value, false)
	}
}
