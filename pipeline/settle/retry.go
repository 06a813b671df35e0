package settle

import (
	"errors"
	"math/rand/v2"
	"time"
)

// RetryPolicy spaces broker redeliveries of transiently failed messages: exponential from
// Base, doubling, capped at Max, with jitter on the upper half. The last allowed delivery
// (the consumer's MaxDeliver) is dead-lettered instead of retried.
type RetryPolicy struct {
	// Base delay after the first failure. Default 1 s.
	Base time.Duration
	// Max delay. Default 60 s.
	Max time.Duration
}

// Delay returns the delay before delivery attempt+1.
func (p RetryPolicy) Delay(attempt uint64) time.Duration {
	base, maxD := p.Base, p.Max
	if base <= 0 {
		base = time.Second
	}
	if maxD <= 0 {
		maxD = time.Minute
	}
	d := base
	for i := uint64(1); i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// StoppingRetryDelay is how long a message handed back by a stopping worker waits before it is
// delivered again: past a drain, so another worker (or this one restarted) gets it.
const StoppingRetryDelay = 5 * time.Second

// ErrStopped is what await returns once the breaker's prober has stopped (the worker
// is draining): a held message goes back to the broker.
var ErrStopped = errors.New("sink unavailable and the worker is stopping")
