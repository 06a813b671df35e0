package settle

import (
	"testing"
	"time"
)

// Issue 11, finding 8: a 20 s sink outage logged one WARN line per message per retry (98,988
// lines). One line per key per second passes; the next one carries the count of the rest.
func TestLogLimiterOneLinePerKeyPerInterval(t *testing.T) {
	now := time.Unix(1000, 0)
	l := LogLimiter{now: func() time.Time { return now }}
	if ok, n := l.Allow("retry/transient/astra"); !ok || n != 0 {
		t.Fatalf("first line: %v, %d", ok, n)
	}
	for range 5000 {
		if ok, _ := l.Allow("retry/transient/astra"); ok {
			t.Fatal("a line passed within the interval")
		}
	}
	if ok, _ := l.Allow("dead/validation/"); !ok {
		t.Fatal("another key is limited on its own")
	}
	now = now.Add(logEvery)
	if ok, n := l.Allow("retry/transient/astra"); !ok || n != 5000 {
		t.Fatalf("after the interval: %v, %d suppressed; want true, 5000", ok, n)
	}
	if ok, _ := l.Allow("retry/transient/astra"); ok {
		t.Fatal("a second line passed in the new interval")
	}
}
