package jobs

import (
	"fmt"
	"testing"
	"time"
)

// A value never replaces a later revision, whichever path delivers it (the watch, the store's
// own write, a read), and a deleted key is answered as missing.
func TestJobCacheKeepsTheLatestRevision(t *testing.T) {
	c := newJobCache(CacheConfig{}, time.Now)
	c.setLive(true)
	c.put("j1", 5, []byte("five"), false)
	c.put("j1", 3, []byte("three"), false) // a late delivery of an older write
	if v, rev, found, hit := c.get("j1"); !hit || !found || rev != 5 || string(v) != "five" {
		t.Fatalf("got %q rev %d found %v hit %v; want five at 5", v, rev, found, hit)
	}
	c.fill(c.mark(), "j1", 4, []byte("four")) // a read that raced the watch
	if v, _, _, _ := c.get("j1"); string(v) != "five" {
		t.Fatalf("a read of revision 4 replaced revision 5: %q", v)
	}
	c.put("j1", 6, nil, true)
	if _, _, found, hit := c.get("j1"); !hit || found {
		t.Fatalf("deleted key: found %v hit %v; want a hit that says missing", found, hit)
	}
}

// Nothing is served while no watch runs: a change made elsewhere could be missed.
func TestJobCacheServesNothingWhenNotLive(t *testing.T) {
	c := newJobCache(CacheConfig{}, time.Now)
	c.put("j1", 1, []byte("x"), false)
	c.fill(c.mark(), "j1", 1, []byte("x"))
	if _, _, _, hit := c.get("j1"); hit {
		t.Fatal("served before it was live")
	}
	c.setLive(true)
	c.put("j1", 1, []byte("x"), false)
	c.setLive(false)
	if _, _, _, hit := c.get("j1"); hit {
		t.Fatal("served after the watch stopped")
	}
	if n, b := c.len(); n != 0 || b != 0 {
		t.Fatalf("held %d entries, %d bytes after stopping; want none", n, b)
	}
}

// The bounds hold at their edges: entries and bytes, least recently used evicted first, and
// one value larger than MaxBytes is still held alone.
func TestJobCacheBounds(t *testing.T) {
	c := newJobCache(CacheConfig{MaxEntries: 3, MaxBytes: 100}, time.Now)
	c.setLive(true)
	for i := range 3 {
		c.put(fmt.Sprintf("k%d", i), 1, make([]byte, 10), false)
	}
	c.get("k0") // k1 is now the least recently used
	c.put("k3", 1, make([]byte, 10), false)
	if _, _, _, hit := c.get("k1"); hit {
		t.Fatal("k1 (least recently used) was not evicted at MaxEntries")
	}
	for _, k := range []string{"k0", "k2", "k3"} {
		if _, _, _, hit := c.get(k); !hit {
			t.Fatalf("%s evicted; want only k1 gone", k)
		}
	}
	c.put("big", 1, make([]byte, 95), false) // 10+10+95 > 100: the two oldest go
	if n, b := c.len(); n != 1 || b != 95 {
		t.Fatalf("%d entries, %d bytes; want the big one alone (95 bytes)", n, b)
	}
	c.put("huge", 1, make([]byte, 500), false)
	if n, b := c.len(); n != 1 || b != 500 {
		t.Fatalf("%d entries, %d bytes; want one value over MaxBytes held alone", n, b)
	}
	c.put("huge", 2, make([]byte, 20), false)
	if n, b := c.len(); n != 1 || b != 20 {
		t.Fatalf("%d entries, %d bytes after the value shrank; want 1 and 20", n, b)
	}
}

// A read that took place while an entry was evicted is not cached: the evicted entry may have
// been a later revision of the same key, delivered by the watch while the read was under way.
func TestJobCacheFillAfterEvictionIsDropped(t *testing.T) {
	c := newJobCache(CacheConfig{MaxEntries: 1}, time.Now)
	c.setLive(true)
	m := c.mark()
	c.put("j1", 9, []byte("nine"), false)  // the watch delivers revision 9 ...
	c.put("j2", 1, []byte("other"), false) // ... which is evicted at once
	c.fill(m, "j1", 8, []byte("eight"))    // the read, begun before, returns revision 8
	if _, _, _, hit := c.get("j1"); hit {
		t.Fatal("a read overlapping an eviction was cached; it may be older than what was evicted")
	}
	c.fill(c.mark(), "j1", 9, []byte("nine"))
	if v, _, _, hit := c.get("j1"); !hit || string(v) != "nine" {
		t.Fatalf("a read with no eviction since was not cached: %q %v", v, hit)
	}
}

// An entry the broker has not confirmed for MaxAge is read again.
func TestJobCacheMaxAge(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newJobCache(CacheConfig{MaxAge: time.Minute}, func() time.Time { return now })
	c.setLive(true)
	c.put("j1", 1, []byte("x"), false)
	now = now.Add(time.Minute)
	if _, _, _, hit := c.get("j1"); !hit {
		t.Fatal("expired at exactly MaxAge; want served up to it")
	}
	now = now.Add(time.Millisecond)
	if _, _, _, hit := c.get("j1"); hit {
		t.Fatal("served past MaxAge")
	}
	if n, _ := c.len(); n != 0 {
		t.Fatalf("%d entries after expiry; want the expired one dropped", n)
	}
}
