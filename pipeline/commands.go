package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// GraphApplier is the GraphStore the command worker projects into: idempotent by msgID, a batch whose
// msgID was applied before changes nothing. graph.Store implements it. It must be safe for
// concurrent use.
type GraphApplier = GraphStore

// GraphBatchApplier is the optional capability of a GraphApplier to apply many marked
// batches in one transaction, each with its own apply marker and its own result
// (graph.Store.ApplyBatches). When Graph has it, the command worker projects the commands
// its partitions hand over at once in one graph transaction; otherwise one ApplyBatch each.
// It must be safe for concurrent use.
type GraphBatchApplier interface {
	ApplyBatches(ctx context.Context, bs []graph.MarkedBatch) []graph.BatchResult
}

// CommandWorkerConfig configures a CommandWorker.
type CommandWorkerConfig struct {
	// JS is the JetStream context (dead letters, change feed). Required.
	JS jetstream.JetStream
	// Streams is what sources/jetstream.ProvisionCommands returned. Required.
	Streams *sjs.CommandStreams
	// Store keeps requirements, feature requests and their audit trail. Required.
	Store requirements.Store
	// Key verifies each command's signature (schemas.HeaderSignature) before anything else:
	// a command the API did not sign, its actor set by whoever published it, is dead-lettered
	// (class auth) and changes nothing. The API's CommandClient must hold the same key.
	// Required.
	Key *sign.Key
	// Graph receives each applied command's projection (requirements.Project). Optional; nil
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
	Retry RetryPolicy
	// DrainTimeout bounds a graceful stop. Optional; 0 means 30 s.
	DrainTimeout time.Duration
	// Logger, nil discards.
	Logger *slog.Logger
}

// Validate reports every missing required field at once.
func (c CommandWorkerConfig) Validate() error {
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

// CommandWorker applies requirement and feature-request commands: one Watermill handler per
// command partition, each with one message in flight (the partition consumer's
// MaxAckPending is 1, across every process), so the commands of one key apply in publish
// order while partitions run in parallel.
//
// Per message: verify the API's signature (a command without a valid one is dead-lettered
// with class auth: its actor may be forged), decode and validate (an invalid payload is
// dead-lettered and terminated),
// Store.ApplyCommand keyed by the message id "<stream>:<seq>", the graph projection keyed by
// the command id, a change-feed event (MutationEvent: the outcome, which is also what the API's
// waiters read), then the ack. A refusal is an outcome: recorded, reported and acked, never
// dead-lettered. Transient failures are redelivered with a delay; a redelivery finds the
// store's apply marker and completes the missing steps without applying anything twice. Each
// of the three writes is grouped with the same write of the commands other partitions hand
// over at the same moment (see group): one store transaction, one graph transaction, one
// atomic publish of events, each command still with its own result, so a command whose write
// fails is retried alone.
type CommandWorker struct {
	cfg CommandWorkerConfig
	log *slog.Logger
	v   *requirements.Validator
	*settler
	dlq *deadLetterer

	// Grouped writes, shared by the partitions (see group): the store transaction, the graph
	// transaction (nil without Graph) and the change-feed events of commands that arrive
	// together.
	applies  *group[requirements.PendingCommand, requirements.BatchResult]
	projects *group[graph.MarkedBatch, graph.BatchResult]
	events   *group[*nats.Msg, error]
}

// NewCommandWorker checks cfg and returns a CommandWorker; nothing runs until Run.
func NewCommandWorker(cfg CommandWorkerConfig) (*CommandWorker, error) {
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
	dlq := newDeadLetterer(cfg.JS)
	parts := len(cfg.Streams.Consumers)
	w := &CommandWorker{cfg: cfg, log: log, v: v, dlq: dlq,
		settler: &settler{dlq: dlq, retry: cfg.Retry, maxDeliver: maxDeliver, log: log, kind: "command"},
		applies: newGroup(parts, parts, applyGroup(cfg.Store)),
		events:  newGroup(parts, parts, publishGroup(cfg.JS)),
	}
	if cfg.Graph != nil {
		w.projects = newGroup(parts, parts, projectGroup(cfg.Graph))
	}
	return w, nil
}

// Run applies commands until ctx ends, then drains (in-flight commands get DrainTimeout to
// finish) and returns; nil after a clean drain. Call it once.
func (w *CommandWorker) Run(ctx context.Context) error {
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: w.cfg.DrainTimeout},
		routerLogger(w.log))
	if err != nil {
		return err
	}
	for _, g := range []interface{ Start() }{w.applies, w.events} {
		g.Start()
	}
	// Stopped once the router returned: no handler submits any more.
	defer w.events.Stop()
	defer w.applies.Stop()
	if w.projects != nil {
		w.projects.Start()
		defer w.projects.Stop()
	}
	subs := make([]*sjs.Subscriber, 0, len(w.cfg.Streams.Consumers))
	for p, c := range w.cfg.Streams.Consumers {
		sub, err := sjs.NewSubscriber(sjs.SubscriberConfig{
			Consumer: c, MaxInFlight: 1, FetchBatch: 1, DrainTimeout: w.cfg.DrainTimeout, Logger: w.log,
		})
		if err != nil {
			return err
		}
		subs = append(subs, sub)
		name := sjs.CommandConsumerName(p)
		router.AddConsumerHandler(name, name, sub, w.handle)
	}
	runErr := router.Run(ctx)
	var cerr error
	for _, s := range subs {
		cerr = errors.Join(cerr, s.Close())
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("command worker: router: %w", runErr)
	}
	return cerr
}

// Health returns nil, or an error saying that commands could neither be applied nor
// dead-lettered in the last 10 minutes; see Worker.Health. It does no I/O and is safe for
// concurrent use.
func (w *CommandWorker) Health() error { return w.dlq.health() }

// graphMarker is the graph store's apply marker of a command's projection. It is keyed by the
// command id, not the message id, so a command published twice (a client retry outside the
// duplicate window) is projected once, like it is applied once.
func graphMarker(commandID string) string { return "command:" + commandID }

// handle applies one command message and settles it itself (SetRetry, SetTerm or ack).
func (w *CommandWorker) handle(msg *message.Message) error {
	m, meta, err := native(msg)
	if err != nil {
		return fmt.Errorf("command handler: %w", err)
	}
	ctx := msg.Context()
	orig := originalSubjectMsg{Msg: m}
	// The actor in the payload becomes approved_by and the audit's admin: only a command the
	// API signed (after setting it from the caller's token) may reach the store.
	if err := w.cfg.Key.VerifyMsg(sign.Command, m.Headers(), m.Data()); err != nil {
		return w.deadLetter(ctx, wm(msg), orig, meta, fmt.Errorf("command refused: %w", err), "")
	}
	cmd, err := w.v.DecodeCommand(m.Data())
	if err != nil {
		return w.deadLetter(ctx, wm(msg), orig, meta, err, "")
	}
	if want := cmd.Subject(); want != orig.Subject() {
		// Published on another key's subject, it would be ordered with the wrong key.
		return w.deadLetter(ctx, wm(msg), orig, meta, fault.Permanentf(fault.Validation,
			"command %s was published on %s; its subject is %s", cmd.CommandID, orig.Subject(), want), "")
	}
	msgID := meta.Stream + ":" + strconv.FormatUint(meta.Sequence.Stream, 10)
	res, err := w.applies.Submit(ctx, requirements.PendingCommand{Command: cmd, MsgID: msgID})
	if err == nil {
		err = res.Err
	}
	out := res.Outcome
	if err != nil {
		return w.fail(ctx, wm(msg), orig, meta, fmt.Errorf("apply command %s: %w", cmd.CommandID, err), "requirements")
	}
	if w.projects != nil {
		if b := requirements.Project(out); len(b.Nodes)+len(b.Edges) > 0 {
			pr, err := w.projects.Submit(ctx, graph.MarkedBatch{Env: w.cfg.GraphEnv, Batch: b, MsgID: graphMarker(cmd.CommandID)})
			if err == nil {
				err = pr.Err
			}
			if err != nil {
				return w.fail(ctx, wm(msg), orig, meta, fmt.Errorf("project command %s into the graph: %w", cmd.CommandID, err), "graph")
			}
		}
	}
	ev, err := mutationMsg(out)
	if err != nil {
		return w.deadLetter(ctx, wm(msg), orig, meta, err, "")
	}
	// The event is the outcome: the API's waiters are answered from it.
	if err := submitPublish(ctx, w.events, ev); err != nil {
		return w.fail(ctx, wm(msg), orig, meta, fmt.Errorf("publish the change-feed event of %s: %w", cmd.CommandID, err), "")
	}
	w.dlq.forget(meta)
	w.log.Debug("command settled", "command_id", cmd.CommandID, "type", cmd.Type, "key", out.Key,
		"applied", out.Applied, "refusal", out.Refusal)
	return nil
}

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
	Version *requirements.RequirementsVersion `json:"version,omitempty"`
	Audit   *requirements.AuditEntry          `json:"audit,omitempty"`
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
