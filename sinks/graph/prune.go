package graph

import (
	"context"
	"errors"
	"time"
)

// DefaultMarkerRetention is how long RunMarkerPruner keeps an apply marker by default.
//
// A marker is needed only while its message can still be redelivered. The marker commits
// with the batch, just before the message is acked, so a redelivery after it means the ack
// was lost, and the consumer redelivers at most MaxDeliver (10) times, each after AckWait
// (30 s) plus a retry delay of at most a minute: under 15 minutes in all. A DLQ replay
// republishes under a new stream sequence, hence a new message id, which no marker matches
// anyway. 24 hours is about a hundred times that bound, which also covers clock skew
// between the workers that write applied_at (each from its own clock) and the one that
// prunes, and a broker outage of most of a day holding unacked messages.
//
// Markers keyed by something a client can send again later, rather than by stream
// sequence, must not be pruned: PruneApplied and RunMarkerPruner take the prefix to prune.
const DefaultMarkerRetention = 24 * time.Hour

// DefaultMarkerPruneInterval is how often RunMarkerPruner prunes by default. Markers older
// than the retention live at most this much longer.
const DefaultMarkerPruneInterval = time.Hour

// pruneChunk bounds the rows PruneApplied deletes per statement: about 50 ms of SQLite's
// write lock or of one PostgreSQL transaction (measured on 2 shared vCPUs).
const pruneChunk = 10_000

// RunMarkerPruner deletes the apply markers of s whose id starts with prefix (see
// Store.PruneApplied) and that are older than keep, in every env (Envs, one after the
// other: a marker keyed by stream position is transport state, whichever graph it guards),
// once at the start and then every interval, until ctx ends; it returns nil then. The first
// prune does not wait for a tick, so a process restarted more often than every interval
// still prunes. every or keep of 0 or less means DefaultMarkerPruneInterval or
// DefaultMarkerRetention. Errors (except ctx ending) are reported to onErr, one call per
// env that failed; onErr may be nil and is called from this goroutine, one at a time;
// errors do not stop the pruner (the other envs are still pruned), and the next tick tries
// again. Several processes may prune one PostgreSQL database at once. It starts no
// goroutines.
func RunMarkerPruner(ctx context.Context, s Store, prefix string, every, keep time.Duration, onErr func(error)) error {
	if every <= 0 {
		every = DefaultMarkerPruneInterval
	}
	if keep <= 0 {
		keep = DefaultMarkerRetention
	}
	prune := func() {
		cut := time.Now().Add(-keep)
		for _, env := range Envs() {
			_, err := s.PruneApplied(ctx, env, prefix, cut)
			if err != nil && onErr != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				onErr(err)
			}
		}
	}
	prune()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			prune()
		}
	}
}
