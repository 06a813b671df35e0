// Package commands carries requirement and feature-request mutations from the HTTP API to
// the requirement store and the graph. The Client validates and signs a command, publishes it
// on its key's partition (sluice.v1.commands.p.{n}) and waits for its outcome on the change
// feed; the Worker holds up to 32 pending commands per partition (pinned to one worker),
// applies them in stream order as chains, one command per key per round, sharing the store,
// graph (projectOutcome) and change-feed writes across partitions, and acks each command only
// after its outcome is stored. A refusal is an outcome, never a dead letter; a failure is
// retried in place, and the key's later commands wait for it.
package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"go.opentelemetry.io/otel/trace"

	"go.opentelemetry.io/otel/trace/noop"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/instrument"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// GraphApplier is the graph store the command worker projects into (sinks/graph's SQLite or
// PostgreSQL store, as the chunk worker's pipeline.GraphStore): idempotent by msgID, a batch
// whose msgID was applied before changes nothing. It must be safe for concurrent use.
type GraphApplier interface {
	// ApplyBatch applies b to env's graph in one transaction, all or nothing, and records
	// msgID in env so that the same message applied again changes nothing. Errors are
	// classified with pipeline/fault.
	ApplyBatch(ctx context.Context, env string, b graph.Batch, msgID string) (graph.Result, error)
}

// GraphBatchApplier is the optional capability of a GraphApplier to apply many marked
// batches in one transaction, each with its own apply marker and its own result
// (graph.Store.ApplyBatches). When Graph has it, the command worker projects the commands
// its partitions hand over at once in one graph transaction; otherwise one ApplyBatch each.
// It must be safe for concurrent use.
type GraphBatchApplier interface {
	ApplyBatches(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult
}

// WorkerConfig configures a Worker.
type WorkerConfig struct {
	// JS is the JetStream context (dead letters, change feed). Required.
	JS jetstream.JetStream
	// Streams is what sources/jetstream.ProvisionCommands returned. Required.
	Streams *sjs.CommandStreams
	// Store keeps requirements, feature requests and their audit trail. Required.
	Store requirements.Store
	// Key verifies each command's signature (schemas.HeaderSignature) before anything else:
	// a command the API did not sign, its actor set by whoever published it, is dead-lettered
	// (class auth) and changes nothing. The API's Client must hold the same key.
	// Required.
	Key *sign.Key
	// Graph receives each applied command's projection (projectOutcome). Optional; nil
	// skips the projection. A GraphBatchApplier (graph.Store is one) gets the projections of
	// commands handed over at once in one transaction.
	Graph GraphApplier
	// GraphEnv is the graph (dev, test or prod) the projections go to. Requirements and
	// feature requests are not kept per env (one store, one command stream), so they are
	// projected into one env's graph, the one the requirement nodes are read from.
	// Optional; "" means graph.DefaultEnv (dev), where every projection made before graphs
	// were kept per env was migrated. Another value is refused by Validate.
	GraphEnv string
	// Validator decodes commands. Optional; nil compiles the embedded schemas.
	Validator *requirements.Validator
	// Retry spaces redeliveries of transiently failed commands.
	Retry settle.RetryPolicy
	// DrainTimeout bounds a graceful stop. Optional; 0 means 30 s.
	DrainTimeout time.Duration
	// Registerer receives the worker's metrics (commands settled and in flight, store and
	// graph writes, commands per store transaction). Optional; the message and sink families
	// are shared with the chunk worker's when both use one registry (pipeline/instrument).
	Registerer prometheus.Registerer
	// Logger, nil discards.
	Logger *slog.Logger
}

// Validate reports every missing required field at once.
func (c WorkerConfig) Validate() error {
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("command worker: JS is required"))
	}
	if c.Streams == nil || len(c.Streams.Consumers) == 0 {
		errs = append(errs, errors.New("command worker: Streams (from ProvisionCommands) is required"))
	}
	if c.Store == nil {
		errs = append(errs, errors.New("command worker: Store is required"))
	}
	if c.Key == nil {
		errs = append(errs, errors.New("command worker: Key is required (commands are verified)"))
	}
	if c.GraphEnv != "" && !schemas.ValidEnv(c.GraphEnv) {
		errs = append(errs, fmt.Errorf("command worker: GraphEnv %q is not dev, test or prod", c.GraphEnv))
	}
	return errors.Join(errs...)
}

// Worker applies requirement and feature-request commands. Each command partition is
// consumed by one goroutine (see partition) that holds up to sjs.CommandBatch of the
// partition's pending commands — the consumer pins the partition to one worker process at a
// time — and applies them in stream order as one chain (applyChain), so the commands of one
// key apply in publish order while partitions run in parallel, and a partition with a queue
// pays one round of writes for many commands instead of one each.
//
// Each of the three writes (store, graph, change feed) is grouped with the same write of the
// chains other partitions hand over at the same moment (see group, runChains): one store
// transaction, one graph transaction, one atomic publish of events, each command still with its
// own result, so a command whose write fails is retried alone (with what follows it of its
// key).
type Worker struct {
	cfg     WorkerConfig
	log     *slog.Logger
	v       *requirements.Validator
	settler *settle.Settler // retries, dead letters
	dlq     *dlq.Sender

	messages *instrument.Messages
	sinks    *instrument.Sinks
	// parts are the running partitions (nil outside Run), read by the in-flight gauge.
	parts atomic.Pointer[[]*partition]

	// Grouped writes, shared by the partitions (see group): the store transaction, the graph
	// transaction (nil without Graph) and the change-feed events of commands that arrive
	// together.
	applies  *group[[]keyed[requirements.PendingCommand], []chainResult[requirements.BatchResult]]
	projects *group[[]keyed[graph.MarkedBatch], []chainResult[graph.BatchResult]]
	events   *group[[]keyed[*nats.Msg], []chainResult[error]]
}

// NewWorker checks cfg and returns a Worker; nothing runs until Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.GraphEnv == "" {
		cfg.GraphEnv = graph.DefaultEnv
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	v := cfg.Validator
	if v == nil {
		var err error
		if v, err = requirements.NewValidator(); err != nil {
			return nil, fmt.Errorf("command worker: %w", err)
		}
	}
	maxDeliver := uint64(10)
	if ci := cfg.Streams.Consumers[0].CachedInfo(); ci != nil && ci.Config.MaxDeliver > 0 {
		maxDeliver = uint64(ci.Config.MaxDeliver)
	}
	dlq := dlq.NewSender(cfg.JS)
	parts := len(cfg.Streams.Consumers)
	m, err := newMetrics(cfg.Registerer, cfg.Graph != nil)
	if err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, log: log, v: v, dlq: dlq, messages: m.messages, sinks: m.sinks,
		settler: &settle.Settler{DLQ: dlq, Retry: cfg.Retry, MaxDeliver: maxDeliver, Log: log, Kind: "command",
			Retried: func(stream string) { m.messages.Add(stream, instrument.OutcomeRetried, 1) },
			Dead:    func(stream string) { m.messages.Add(stream, instrument.OutcomeDeadLettered, 1) },
		},
		applies: chainGroup(parts, m.measureApply(applyGroup(cfg.Store)), func(r requirements.BatchResult) bool { return r.Err != nil }),
		events:  chainGroup(parts, publishGroup(cfg.JS), func(err error) bool { return err != nil }),
	}
	if cfg.Graph != nil {
		w.projects = chainGroup(parts, m.measureProject(projectGroup(cfg.Graph)), func(r graph.BatchResult) bool { return r.Err != nil })
	}
	m.messages.InFlight(sjs.StreamCommands, func() float64 { return float64(w.held()) })
	return w, nil
}

// Run applies commands until ctx ends, then drains (a chain being applied gets DrainTimeout to
// finish; what each partition holds besides goes back to the server in stream order) and
// returns; nil after a clean drain. Call it once.
func (w *Worker) Run(ctx context.Context) error {
	for _, g := range []interface{ Start() }{w.applies, w.events} {
		g.Start()
	}
	// Stopped once every partition returned: no one submits any more.
	defer w.events.Stop()
	defer w.applies.Stop()
	if w.projects != nil {
		w.projects.Start()
		defer w.projects.Stop()
	}
	// A chain being applied when ctx ends is let finish, for up to DrainTimeout.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.NewTimer(w.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-work.Done():
		}
	})
	defer stopDrain()

	parts := make([]*partition, len(w.cfg.Streams.Consumers))
	for i, c := range w.cfg.Streams.Consumers {
		parts[i] = &partition{w: w, name: sjs.CommandConsumerName(i), cons: c, work: work}
	}
	w.parts.Store(&parts)
	defer w.parts.Store(nil)
	every := 10 * time.Second / 3
	if ci := w.cfg.Streams.Consumers[0].CachedInfo(); ci != nil && ci.Config.AckWait > 0 {
		every = ci.Config.AckWait / 3
	}
	extendDone := make(chan struct{})
	stopExtend := make(chan struct{})
	go func() {
		defer close(extendDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				for _, p := range parts {
					p.extend(every)
				}
			case <-stopExtend:
				return
			}
		}
	}()
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		wg.Go(func() { errs[i] = p.run(ctx) })
	}
	wg.Wait()
	close(stopExtend)
	<-extendDone
	// Let another worker take the partitions over now rather than after the pin's TTL.
	unpin, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, p := range parts {
		if p.pin == "" {
			continue
		}
		if err := w.cfg.Streams.Commands.UnpinConsumer(unpin, p.name, sjs.CommandPriorityGroup); err != nil {
			w.log.Debug("unpin command partition", "consumer", p.name, "err", err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("command worker: %w", err)
	}
	return nil
}

// held returns the commands the running partitions hold (pulled, not yet settled).
func (w *Worker) held() int {
	parts := w.parts.Load()
	if parts == nil {
		return 0
	}
	n := 0
	for _, p := range *parts {
		p.mu.Lock()
		n += len(p.held)
		p.mu.Unlock()
	}
	return n
}

// Health returns nil, or an error saying that commands could neither be applied nor
// dead-lettered in the last 10 minutes; see Worker.Health. It does no I/O and is safe for
// concurrent use.
func (w *Worker) Health() error { return w.dlq.Health() }

// graphMarker is the graph store's apply marker of a command's projection. It is keyed by the
// command id, not the message id, so a command published twice (a client retry outside the
// duplicate window) is projected once, like it is applied once.
func graphMarker(commandID string) string { return "command:" + commandID }

// chainItem is one held command on its way through applyChain.
type chainItem struct {
	h    *heldCommand
	orig originalSubjectMsg
	meta *jetstream.MsgMetadata // h's, NumDelivered counting the tries in place
	// mctx is the command message's context: its span, continuing the trace of its headers
	// (the API request that submitted it); its retries and dead letter are events on it.
	mctx context.Context
	cmd  requirements.Command
	out  requirements.Outcome
	ev   *nats.Msg
	// err is why the item is not done (nil: not reached, or done); sink names where. dead:
	// the message itself is bad (forged, invalid), so it is dead-lettered at once.
	err  error
	sink string
	dead bool
	// skipped: not run, an earlier command of its key failed.
	skipped bool
	done    bool
}

// heldDisposer settles a held command for the settler: a retry stays held and is tried again
// in place after delay; a terminated command is settled.
type heldDisposer struct {
	h       *heldCommand
	settled map[*heldCommand]bool
}

func (d heldDisposer) Retry(delay time.Duration) {
	d.h.attempts++
	d.h.retryAt = time.Now().Add(delay)
}

func (d heldDisposer) Term(reason string) {
	_ = d.h.m.TermWithReason(reason)
	d.settled[d.h] = true
}

// applyChain applies the commands partition p holds, in stream order, as one chain, and
// settles the settled prefix. Per command: verify the API's signature (a command without a
// valid one is dead-lettered with class auth: its actor may be forged), decode and validate
// (an invalid payload is dead-lettered), Store.ApplyCommand keyed by the message id
// "<stream>:<seq>", the graph projection keyed by the command id, the change-feed event
// (MutationEvent: the outcome, which is also what the API's waiters read), then the ack. Each
// write is shared with the chains other partitions hand over at the same moment (runChains):
// one store transaction, one graph transaction, one atomic publish, a partition's commands of
// one key in order. A refusal is an outcome: recorded, reported and acked, never
// dead-lettered. The commands are acked in order up to the first one not done; a transient
// failure of that one is retried in place after a delay, with what follows it (a redelivery
// finds the apply markers and completes the missing steps without applying anything twice); a
// permanent failure, or the last allowed try, is dead-lettered.
func (w *Worker) applyChain(ctx context.Context, p *partition) {
	held := p.snapshot()
	settled := map[*heldCommand]bool{}
	defer p.drop(settled)
	items := make([]*chainItem, 0, len(held))
	for _, h := range held {
		meta := *h.meta
		meta.NumDelivered = h.attempts
		it := &chainItem{h: h, orig: originalSubjectMsg{Msg: h.m}, meta: &meta}
		it.mctx, _ = telemetry.StartMessage(ctx, telemetry.ScopePipeline, h.m, &meta)
		defer trace.SpanFromContext(it.mctx).End()
		items = append(items, it)
		// The actor in the payload becomes approved_by and the audit's admin: only a command
		// the API signed (after setting it from the caller's token) may reach the store.
		if err := w.cfg.Key.VerifyMsg(sign.Command, h.m.Headers(), h.m.Data()); err != nil {
			it.err, it.dead = fmt.Errorf("command refused: %w", err), true
			continue
		}
		cmd, err := w.v.DecodeCommand(h.m.Data())
		if err != nil {
			it.err, it.dead = err, true
			continue
		}
		if want := cmd.Subject(); want != it.orig.Subject() {
			// Published on another key's subject, it would be ordered with the wrong key.
			it.err, it.dead = fault.Permanentf(fault.Validation, "command %s was published on %s; its subject is %s",
				cmd.CommandID, it.orig.Subject(), want), true
			continue
		}
		it.cmd = cmd
	}
	cctx, cspan := chainSpan(ctx, items)
	w.applyItems(cctx, items)
	cspan.End()

	// Settle in order: acknowledge what is done, dead-letter what failed for good, and stop at
	// the first command that stays (retried in place, or behind one of its key that does).
	for _, it := range items {
		disp := heldDisposer{h: it.h, settled: settled}
		switch {
		case it.done:
			if err := it.h.m.Ack(); err != nil {
				w.log.WarnContext(it.mctx, "ack command", "subject", it.h.m.Subject(), "err", err)
			}
			settled[it.h] = true
			if it.out.Refusal != nil {
				w.messages.Add(it.meta.Stream, instrument.OutcomeRefused, 1)
			} else {
				w.messages.Add(it.meta.Stream, instrument.OutcomeApplied, 1)
			}
			w.dlq.Forget(it.meta)
			w.log.DebugContext(it.mctx, "command settled", "command_id", it.cmd.CommandID, "type", it.cmd.Type, "key", it.out.Key,
				"applied", it.out.Applied, "refusal", it.out.Refusal)
			continue
		case it.dead:
			_ = w.settler.DeadLetter(it.mctx, disp, it.orig, it.meta, it.err, "")
			if settled[it.h] {
				continue
			}
		case it.err != nil && !it.skipped:
			_ = w.settler.Fail(it.mctx, disp, it.orig, it.meta, it.err, it.sink)
			if settled[it.h] {
				continue
			}
		}
		return
	}
}

// applyItems runs the valid items through the store, the graph and the change feed, marking
// each done, failed (err) or skipped.
func (w *Worker) applyItems(ctx context.Context, items []*chainItem) {
	next := w.applyStore(ctx, items)
	if w.projects != nil {
		next = w.applyGraph(ctx, next)
	}
	w.publishEvents(ctx, next)
}

// applyStore applies the valid items in the store and returns those applied.
func (w *Worker) applyStore(ctx context.Context, items []*chainItem) []*chainItem {
	var chain []keyed[requirements.PendingCommand]
	var applied []*chainItem
	for _, it := range items {
		if it.err == nil {
			msgID := it.meta.Stream + ":" + strconv.FormatUint(it.meta.Sequence.Stream, 10)
			chain = append(chain, keyed[requirements.PendingCommand]{key: it.cmd.Key(), v: requirements.PendingCommand{Command: it.cmd, MsgID: msgID, Checked: true}})
			applied = append(applied, it)
		}
	}
	if len(chain) == 0 {
		return nil
	}
	res, err := w.applies.Submit(ctx, chain)
	next := applied[:0:0]
	for i, it := range applied {
		var r chainResult[requirements.BatchResult]
		if err == nil {
			r = res[i]
		}
		if it.note(err, r.skipped, r.res.Err, "apply command %s", "requirements") {
			it.out = r.res.Outcome
			it.out.AlreadyApplied = false
			next = append(next, it)
		}
	}
	return next
}

// applyGraph projects the applied items into the graph and returns those that may go on: a
// failed projection stops its command, and every later command of its key, even one without a
// projection, waits behind it.
func (w *Worker) applyGraph(ctx context.Context, next []*chainItem) []*chainItem {
	var proj []keyed[graph.MarkedBatch]
	var projected []*chainItem
	for _, it := range next {
		if b := projectOutcome(it.out); len(b.Nodes)+len(b.Edges) > 0 {
			proj = append(proj, keyed[graph.MarkedBatch]{key: it.cmd.Key(),
				v: graph.MarkedBatch{Env: w.cfg.GraphEnv, Batch: b, MsgID: graphMarker(it.cmd.CommandID)}})
			projected = append(projected, it)
		}
	}
	if len(proj) == 0 {
		return next
	}
	pres, err := w.projects.Submit(ctx, proj)
	failedKeys := map[string]bool{}
	for i, it := range projected {
		var r chainResult[graph.BatchResult]
		if err == nil {
			r = pres[i]
		}
		if !it.note(err, r.skipped, r.res.Err, "project command %s into the graph", "graph") {
			failedKeys[it.cmd.Key()] = true
		}
	}
	kept := next[:0:0]
	for _, it := range next {
		if it.err == nil && failedKeys[it.cmd.Key()] {
			it.skipped, it.err = true, errSkipped
		}
		if it.err == nil {
			kept = append(kept, it)
		}
	}
	return kept
}

// publishEvents publishes the change-feed event of each item, marking it done once stored.
func (w *Worker) publishEvents(ctx context.Context, next []*chainItem) {
	var evs []keyed[*nats.Msg]
	var published []*chainItem
	for _, it := range next {
		ev, err := mutationMsg(it.out)
		if err != nil {
			it.err, it.dead = err, true
			continue
		}
		it.ev = ev
		evs = append(evs, keyed[*nats.Msg]{key: it.cmd.Key(), v: ev})
		published = append(published, it)
	}
	if len(evs) == 0 {
		return
	}
	eres, err := w.events.Submit(ctx, evs)
	for i, it := range published {
		var r chainResult[error]
		if err == nil {
			r = eres[i]
		}
		it.done = it.note(err, r.skipped, r.res, "publish the change-feed event of %s", "")
	}
}

// note records what a write did with it — the group could not be reached (submitErr), it was
// skipped, or it failed (err) — and reports whether it passed. what is the error's prefix,
// with %s for the command id; sink names the store for the dead letter.
func (it *chainItem) note(submitErr error, skipped bool, err error, what, sink string) bool {
	switch {
	case submitErr != nil:
		err = submitErr
	case skipped:
		it.skipped, it.err = true, errSkipped
		return false
	case err == nil:
		return true
	}
	it.err, it.sink = fmt.Errorf(what+": %w", it.cmd.CommandID, err), sink
	return false
}

// errSkipped marks a command not run because an earlier one of its key failed.
var errSkipped = errors.New("command worker: an earlier command of its key failed")

// originalSubjectMsg shows a command under the subject it was published on rather than the
// partitioned subject the stream stored it under, so its dead letter replays to a subject the
// command stream captures.
type originalSubjectMsg struct{ jetstream.Msg }

func (m originalSubjectMsg) Subject() string { return sjs.OriginalCommandSubject(m.Msg.Subject()) }

// MutationEvent is the change-feed payload of one settled command, published on
// sjs.MutationEventSubject(key): what it applied, or why it was refused.
type MutationEvent struct {
	// Type is "mutation".
	Type        string                   `json:"type"`
	CommandID   string                   `json:"command_id"`
	CommandType requirements.CommandType `json:"command_type"`
	Key         string                   `json:"key"`
	Applied     bool                     `json:"applied"`
	Refusal     *requirements.Refusal    `json:"refusal,omitempty"`
	// Feature is the feature request after the command (feature commands).
	Feature *requirements.FeatureRequest `json:"feature,omitempty"`
	// Version is the new requirements version (submit_requirements).
	Version *requirements.Version    `json:"version,omitempty"`
	Audit   *requirements.AuditEntry `json:"audit,omitempty"`
}

// submitPublish publishes m through g and waits for the stream to store it.
func submitPublish(ctx context.Context, g *group[*nats.Msg, error], m *nats.Msg) error {
	err, serr := g.Submit(ctx, m)
	if serr != nil {
		return serr
	}
	return err
}

// mutationMsg returns out's change-feed event. Its Nats-Msg-Id is derived from the command
// id, so a redelivered command adds no second event within the duplicate window.
func mutationMsg(out requirements.Outcome) (*nats.Msg, error) {
	ev := MutationEvent{
		Type: "mutation", CommandID: out.CommandID, CommandType: out.Type, Key: out.Key,
		Applied: out.Applied, Refusal: out.Refusal, Feature: out.Feature, Version: out.Version, Audit: out.Audit,
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fault.Permanent(fault.Rejected, fmt.Errorf("encode mutation event %s: %w", out.CommandID, err))
	}
	m := nats.NewMsg(sjs.MutationEventSubject(out.Key))
	m.Data = body
	m.Header.Set(nats.MsgIdHdr, "mutation/"+out.CommandID)
	return m, nil
}

// chainSpan starts the span of a chain's writes (the store's, the graph's, the change
// feed's: the sinks' spans are its children), as a child of the first traced command's message
// span, linking to every command's. Untraced, it returns ctx and a no-op span.
func chainSpan(ctx context.Context, items []*chainItem) (context.Context, trace.Span) {
	var parent context.Context
	var links []trace.Link
	for _, it := range items {
		span := trace.SpanFromContext(it.mctx)
		if !span.IsRecording() {
			continue
		}
		links = append(links, trace.Link{SpanContext: span.SpanContext()})
		if parent == nil {
			parent = trace.ContextWithSpanContext(ctx, span.SpanContext())
		}
	}
	if parent == nil {
		return ctx, noop.Span{}
	}
	cctx, span := telemetry.Tracer(telemetry.ScopePipeline).Start(parent, "command chain", trace.WithLinks(links...))
	span.SetAttributes(telemetry.AttrMessagingBatchCount.Int(len(items)))
	return cctx, span
}
