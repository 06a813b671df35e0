package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// groupWriteTimeout bounds one grouped write (a store transaction, an atomic publish). The
// callers' own contexts do not reach it: a write shared by many callers is not abandoned
// because one of them left; a caller that leaves gets its ctx's error and its message is
// redelivered, which the apply markers and message ids make harmless.
const groupWriteTimeout = 30 * time.Second

// group runs the requests that callers submit at about the same moment together, with one
// call of run: the command worker's partitions each hold one command, so the commands they
// hand over at once are of different keys and may share one synced store transaction or one
// atomic publish, where each alone would pay its own. There is no linger: a group is whatever
// queued while the previous one ran, at most max. Submit blocks until its result is known;
// at most cap(in) requests wait (the partitions of one worker), so the queue is bounded.
// Start runs it; Stop ends it once no Submit is running. Safe for concurrent use.
type group[Req, Res any] struct {
	in   chan groupReq[Req, Res]
	max  int
	run  func(ctx context.Context, reqs []Req) []Res
	wg   sync.WaitGroup
	stop chan struct{}
	once sync.Once
}

type groupReq[Req, Res any] struct {
	req  Req
	done chan Res
	// span is the submitter's span (its chain's): the first request's is the parent of the
	// run's spans, whose context is the group's own.
	span trace.SpanContext
}

// newGroup returns a group of at most max requests a run; waiting is how many callers may
// queue (the number of partitions).
func newGroup[Req, Res any](waiting, max int, run func(ctx context.Context, reqs []Req) []Res) *group[Req, Res] {
	return &group[Req, Res]{in: make(chan groupReq[Req, Res], waiting), max: max, run: run, stop: make(chan struct{})}
}

// Start starts the group's goroutine.
func (g *group[Req, Res]) Start() {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			var first groupReq[Req, Res]
			select {
			case first = <-g.in:
			case <-g.stop:
				return
			}
			batch := []groupReq[Req, Res]{first}
		more:
			for len(batch) < g.max {
				select {
				case r := <-g.in:
					batch = append(batch, r)
				default:
					break more
				}
			}
			reqs := make([]Req, len(batch))
			for i, r := range batch {
				reqs[i] = r.req
			}
			ctx, cancel := context.WithTimeout(context.Background(), groupWriteTimeout)
			if first.span.IsValid() {
				ctx = trace.ContextWithSpanContext(ctx, first.span)
			}
			res := g.run(ctx, reqs)
			cancel()
			for i, r := range batch {
				r.done <- res[i] // buffered: never blocks
			}
		}
	}()
}

// Stop ends the goroutine and waits for it; call it once every Submit returned.
func (g *group[Req, Res]) Stop() {
	g.once.Do(func() { close(g.stop) })
	g.wg.Wait()
}

// errGroupStopped is returned by Submit after Stop.
var errGroupStopped = errors.New("command worker: stopped")

// Submit queues req and waits for its result, or returns ctx's error (the request may still
// run). It blocks.
func (g *group[Req, Res]) Submit(ctx context.Context, req Req) (Res, error) {
	var zero Res
	r := groupReq[Req, Res]{req: req, done: make(chan Res, 1), span: trace.SpanContextFromContext(ctx)}
	select {
	case g.in <- r:
	case <-g.stop:
		return zero, errGroupStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case res := <-r.done:
		return res, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// unbatchedConcurrency bounds the calls a group makes at once to a store without batch writes
// (AstraStore: one round trip per command). The commands of one call have pairwise different
// keys (runChains), so they may run in any order.
const unbatchedConcurrency = 16

// applyGroup applies commands through store: one ApplyCommands call when it is a
// requirements.BatchApplier, else ApplyCommand for each, up to unbatchedConcurrency at once.
func applyGroup(store requirements.Store) func(ctx context.Context, cmds []requirements.PendingCommand) []requirements.BatchResult {
	return func(ctx context.Context, cmds []requirements.PendingCommand) []requirements.BatchResult {
		if b, ok := store.(requirements.BatchApplier); ok {
			return b.ApplyCommands(ctx, cmds)
		}
		res := make([]requirements.BatchResult, len(cmds))
		p := pool.New().WithMaxGoroutines(unbatchedConcurrency)
		for i, c := range cmds {
			p.Go(func() { res[i].Outcome, res[i].Err = store.ApplyCommand(ctx, c.Command, c.MsgID) })
		}
		p.Wait()
		return res
	}
}

// projectGroup applies the graph projections of commands through g: one ApplyBatches call
// (one graph transaction, each projection in its own savepoint with its own apply marker)
// when g is a GraphBatchApplier, else ApplyBatch for each, up to unbatchedConcurrency at once.
func projectGroup(g GraphApplier) func(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult {
	if b, ok := g.(GraphBatchApplier); ok {
		return b.ApplyBatches
	}
	return func(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult {
		res := make([]graph.BatchResult, len(bs))
		p := pool.New().WithMaxGoroutines(unbatchedConcurrency)
		for i, b := range bs {
			p.Go(func() { res[i].Result, res[i].Err = g.ApplyBatch(ctx, b.Env, b.Batch, b.MsgID) })
		}
		p.Wait()
		return res
	}
}

// publishGroup publishes messages of one stream as one atomic batch (one synced write for
// all). A batch the server refuses — a stream provisioned before atomic publishing was
// enabled on it, or a failure — is published one message after another, so each message
// gets its own result.
func publishGroup(js jetstream.JetStream) func(ctx context.Context, msgs []*nats.Msg) []error {
	return func(ctx context.Context, msgs []*nats.Msg) []error {
		errs := make([]error, len(msgs))
		if len(msgs) > 1 {
			if err := sjs.PublishAtomic(ctx, js, msgs); err == nil {
				return errs
			}
		}
		for i, m := range msgs {
			sjs.ClearBatchHeaders(m)
			if _, err := js.PublishMsg(ctx, m); err != nil {
				errs[i] = fmt.Errorf("publish %s: %w", m.Subject, err)
			}
		}
		return errs
	}
}
