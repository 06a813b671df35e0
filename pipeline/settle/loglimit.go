package settle

import (
	"sync"
	"time"
)

// logEvery is how often a line of one kind (a retry, a dead letter, a failed dead letter, per
// error class and sink) is logged at most; the lines in between are counted, and the count is
// logged with the next one as "suppressed". A 20 s sink outage logged one WARN line per
// message per retry: 98,988 lines (issue 11).
const logEvery = time.Second

// LogLimiter lets one line per key through per logEvery and counts the rest. The zero value is
// ready to use; safe for concurrent use. Its keys come from a small fixed set (kinds × fault
// classes × sinks), so the map stays small.
type LogLimiter struct {
	mu   sync.Mutex // guards keys
	keys map[string]*limitState
	now  func() time.Time // nil means time.Now
}

type limitState struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line of key may be logged now and, if so, how many lines of key
// were suppressed since the last one logged.
func (l *LogLimiter) Allow(key string) (ok bool, suppressed int) {
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.keys == nil {
		l.keys = map[string]*limitState{}
	}
	st, seen := l.keys[key]
	if !seen {
		st = &limitState{}
		l.keys[key] = st
	}
	if seen && now.Sub(st.last) < logEvery {
		st.suppressed++
		return false, 0
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return true, n
}
