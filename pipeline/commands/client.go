package commands

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// JS publishes commands. Required.
	JS jetstream.JetStream
	// Streams is what sources/jetstream.ProvisionCommands returned (the change feed, whose
	// mutation events carry the outcomes). Required.
	Streams *sjs.CommandStreams
	// Store serves reads and imports. Required.
	Store requirements.Store
	// Key signs every command published, so the command workers (which hold the same key)
	// know its actor was set by the API and not by whoever can publish on the broker.
	// Required.
	Key *sign.Key
	// Graph receives the projection of imported records. Optional; nil skips it.
	Graph GraphApplier
	// GraphEnv is the graph imported records are projected into, as
	// WorkerConfig.GraphEnv (give both the same value). Optional; "" means
	// graph.DefaultEnv (dev); another value than dev, test or prod is refused.
	GraphEnv string
	// Validator checks commands before they are published. Optional; nil compiles the
	// embedded schemas.
	Validator *requirements.Validator
	// Now is the clock for issued_at. Optional; nil means time.Now.
	Now func() time.Time
}

// Client is what the API uses: it publishes commands, waits for their outcomes and
// reads state from the Store. It is safe for concurrent use. Await is answered from one watch
// of the change feed's mutation events (each is a command's outcome, published by the worker
// once the command is applied and projected), shared by all waiters and started before the
// first command is published; Close stops it.
type Client struct {
	cfg ClientConfig
	v   *requirements.Validator

	mu      sync.Mutex // guards waiters, recent, watch, closed
	waiters map[string]map[chan requirements.Outcome]struct{}
	// recent holds the outcomes of the last recentOutcomes events seen (recentOrder is their
	// ring), so an Await that starts after its command's event went by still finds it.
	recent      map[string]requirements.Outcome
	recentOrder []string
	recentNext  int
	watch       jetstream.ConsumeContext
	closed      bool

	// publishes groups the commands submitted at about the same moment into one atomic
	// batch: one synced write on the command stream for all of them.
	publishes *group[*nats.Msg, error]
}

// submitWaiting bounds the Submit calls queued for the next atomic batch; beyond it Submit
// waits (backpressure, bounded by its ctx). It is the most commands one batch takes, far
// below the server's limit of MaxAtomicBatch.
const submitWaiting = 256

// recentOutcomes is how many of the latest outcomes a Client keeps for an Await that
// starts after its command's event arrived (Submit returns before Await registers): at
// 1,000 commands/s, the last 8 s. An older one is read from the store.
const recentOutcomes = 8192

// NewClient checks cfg and returns a Client. The caller must Close it.
func NewClient(cfg ClientConfig) (*Client, error) {
	var errs []error
	if cfg.JS == nil {
		errs = append(errs, errors.New("command client: JS is required"))
	}
	if cfg.Streams == nil || cfg.Streams.Events == nil {
		errs = append(errs, errors.New("command client: Streams (from ProvisionCommands) is required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("command client: Store is required"))
	}
	if cfg.Key == nil {
		errs = append(errs, errors.New("command client: Key is required (commands are signed)"))
	}
	if cfg.GraphEnv != "" && !schemas.ValidEnv(cfg.GraphEnv) {
		errs = append(errs, fmt.Errorf("command client: GraphEnv %q is not dev, test or prod", cfg.GraphEnv))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.GraphEnv == "" {
		cfg.GraphEnv = graph.DefaultEnv
	}
	v := cfg.Validator
	if v == nil {
		var err error
		if v, err = requirements.NewValidator(); err != nil {
			return nil, fmt.Errorf("command client: %w", err)
		}
	}
	c := &Client{cfg: cfg, v: v, waiters: map[string]map[chan requirements.Outcome]struct{}{},
		recent: map[string]requirements.Outcome{}, recentOrder: make([]string, recentOutcomes),
		publishes: newGroup(submitWaiting, submitWaiting, publishGroup(cfg.JS))}
	c.publishes.Start()
	return c, nil
}

// Validator returns the validator commands are checked with (also for validating stored
// records against their schemas).
func (c *Client) Validator() *requirements.Validator { return c.v }

// NewID returns a new random command id (32 hex digits).
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// Submit publishes cmd on cmd.Subject() with Nats-Msg-Id = its command id, signed with Key
// (schemas.HeaderSignature over the payload, actor included), and returns the
// command id once JetStream stored it; the worker applies it asynchronously (see Await). An
// empty CommandID is filled with NewID, a zero IssuedAt with now. A command that fails
// validation is not published: the error is a *requirements.Refusal with code invalid. It
// blocks for the publish acknowledgement.
func (c *Client) Submit(ctx context.Context, cmd requirements.Command) (string, error) {
	if cmd.CommandID == "" {
		cmd.CommandID = NewID()
	}
	if cmd.IssuedAt.IsZero() {
		cmd.IssuedAt = c.cfg.Now()
	}
	if err := c.v.Check(cmd); err != nil {
		return "", err
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return "", fmt.Errorf("submit command %s: %w", cmd.CommandID, err)
	}
	m := nats.NewMsg(cmd.Subject())
	m.Data = body
	m.Header.Set(nats.MsgIdHdr, cmd.CommandID)
	c.cfg.Key.SignMsg(sign.Command, m)
	telemetry.Inject(ctx, m.Header) // the signature covers the payload only
	// Watching before the command can be applied: its outcome cannot go by unseen.
	if err := c.ensureWatch(ctx); err != nil {
		return "", fmt.Errorf("submit command %s: %w", cmd.CommandID, err)
	}
	if err := submitPublish(ctx, c.publishes, m); err != nil {
		return "", fmt.Errorf("submit command %s: publish: %w", cmd.CommandID, err)
	}
	return cmd.CommandID, nil
}

// Await waits up to timeout (or until ctx ends) for the outcome of commandID: the worker
// publishes it as the command's change-feed event once the command is applied (or refused) in
// the store and projected into the graph. It returns the outcome and true, or false when none
// came in time (the command may still be applied later). An outcome that arrived before Await
// started is found among the latest recentOutcomes; when the wait ends without one, the
// store's record is returned if it has one. An error means the outcome could not be read.
func (c *Client) Await(ctx context.Context, commandID string, timeout time.Duration) (requirements.Outcome, bool, error) {
	if err := c.ensureWatch(ctx); err != nil {
		return requirements.Outcome{}, false, fmt.Errorf("await %s: %w", commandID, err)
	}
	ch := make(chan requirements.Outcome, 1)
	out, ok, err := c.register(commandID, ch)
	if err != nil {
		return requirements.Outcome{}, false, err
	}
	if ok {
		return out, true, nil
	}
	defer c.unregister(commandID, ch)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case out := <-ch:
		return out, true, nil
	case <-t.C:
	case <-ctx.Done():
	}
	if ctx.Err() != nil {
		return requirements.Outcome{}, false, ctx.Err()
	}
	out, err = c.cfg.Store.CommandOutcome(ctx, commandID)
	switch {
	case err == nil:
		out.AlreadyApplied = false
		return out, true, nil
	case errors.Is(err, requirements.ErrNotFound):
		return requirements.Outcome{}, false, nil
	}
	return requirements.Outcome{}, false, fmt.Errorf("await %s: %w", commandID, err)
}

// ensureWatch starts the watch of the change feed's mutation events unless it runs: an
// ordered consumer from the next event on, which resumes where it stopped after a reconnect.
func (c *Client) ensureWatch(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("command client: closed")
	}
	if c.watch != nil {
		return nil
	}
	cons, err := c.cfg.JS.OrderedConsumer(ctx, sjs.StreamEvents, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{sjs.MutationEventSubjects},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watch command outcomes: %w", err)
	}
	cc, err := cons.Consume(c.deliver)
	if err != nil {
		return fmt.Errorf("watch command outcomes: %w", err)
	}
	c.watch = cc
	return nil
}

// register adds ch as a waiter for id, or returns id's outcome when it arrived already.
func (c *Client) register(id string, ch chan requirements.Outcome) (requirements.Outcome, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return requirements.Outcome{}, false, errors.New("command client: closed")
	}
	if out, ok := c.recent[id]; ok {
		return out, true, nil
	}
	set := c.waiters[id]
	if set == nil {
		set = map[chan requirements.Outcome]struct{}{}
		c.waiters[id] = set
	}
	set[ch] = struct{}{}
	return requirements.Outcome{}, false, nil
}

func (c *Client) unregister(id string, ch chan requirements.Outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if set := c.waiters[id]; set != nil {
		delete(set, ch)
		if len(set) == 0 {
			delete(c.waiters, id)
		}
	}
}

// deliver hands one mutation event, a command's outcome, to its waiters and keeps it among
// the recent ones. An event that does not decode is skipped (its waiters fall back to the
// store when their wait ends).
func (c *Client) deliver(m jetstream.Msg) {
	var ev MutationEvent
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.CommandID == "" {
		return
	}
	out := requirements.Outcome{CommandID: ev.CommandID, Type: ev.CommandType, Key: ev.Key, Applied: ev.Applied,
		Refusal: ev.Refusal, Feature: ev.Feature, Version: ev.Version, Audit: ev.Audit}
	c.mu.Lock()
	if _, dup := c.recent[out.CommandID]; !dup {
		if old := c.recentOrder[c.recentNext]; old != "" {
			delete(c.recent, old)
		}
		c.recentOrder[c.recentNext] = out.CommandID
		c.recentNext = (c.recentNext + 1) % len(c.recentOrder)
	}
	c.recent[out.CommandID] = out
	for ch := range c.waiters[out.CommandID] {
		select {
		case ch <- out:
		default: // already has one
		}
	}
	c.mu.Unlock()
}

// Close stops the outcome watch; Await and Submit fail afterwards. It is idempotent.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	w := c.watch
	c.watch = nil
	c.mu.Unlock()
	if w != nil {
		w.Stop()
		<-w.Closed()
	}
	c.publishes.Stop()
	return nil
}

// ListVersions implements the API's read of every requirements version, newest first.
func (c *Client) ListVersions(ctx context.Context) ([]requirements.VersionInfo, error) {
	return c.cfg.Store.ListVersions(ctx)
}

// LatestVersion returns the newest requirements version, or an error wrapping
// requirements.ErrNotFound.
func (c *Client) LatestVersion(ctx context.Context) (requirements.Version, error) {
	return c.cfg.Store.LatestVersion(ctx)
}

// GetVersion returns requirements version id, or an error wrapping requirements.ErrNotFound.
func (c *Client) GetVersion(ctx context.Context, id int64) (requirements.Version, error) {
	return c.cfg.Store.GetVersion(ctx, id)
}

// ListFeatures returns a page of feature requests (see requirements.Store.ListFeatures).
func (c *Client) ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	return c.cfg.Store.ListFeatures(ctx, q)
}

// GetFeature returns one feature request, or an error wrapping requirements.ErrNotFound.
func (c *Client) GetFeature(ctx context.Context, id string) (requirements.FeatureRequest, error) {
	return c.cfg.Store.GetFeature(ctx, id)
}

// ListAudit returns audit entries, newest first (see requirements.Store.ListAudit).
func (c *Client) ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error) {
	return c.cfg.Store.ListAudit(ctx, requestID, limit)
}

// VerifyAudit checks the whole audit trail.
func (c *Client) VerifyAudit(ctx context.Context) (requirements.Integrity, error) {
	return c.cfg.Store.VerifyAudit(ctx)
}

// Import stores files written by the Python service (requirements.Store.Import) and, when a
// Graph is configured, projects each imported record into it (idempotently: a record
// imported again projects nothing new). Import bypasses the command stream: it is an
// operator's bulk load of records that already exist.
func (c *Client) Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error) {
	rep, err := c.cfg.Store.Import(ctx, files)
	if err != nil || c.cfg.Graph == nil {
		return rep, err
	}
	for _, id := range rep.Versions {
		v, err := c.cfg.Store.GetVersion(ctx, id)
		if err != nil {
			return rep, fmt.Errorf("project imported version %d: %w", id, err)
		}
		b := projectOutcome(requirements.Outcome{Type: requirements.TypeSubmitRequirements, Applied: true, Version: &v})
		if _, err := c.cfg.Graph.ApplyBatch(ctx, c.cfg.GraphEnv, b, "import:version:"+strconv.FormatInt(id, 10)); err != nil {
			return rep, fmt.Errorf("project imported version %d: %w", id, err)
		}
	}
	for _, id := range rep.Features {
		f, err := c.cfg.Store.GetFeature(ctx, id)
		if err != nil {
			return rep, fmt.Errorf("project imported feature request %s: %w", id, err)
		}
		b := projectOutcome(requirements.Outcome{Type: requirements.TypeSubmitFeatureRequest, Applied: true, Feature: &f})
		if _, err := c.cfg.Graph.ApplyBatch(ctx, c.cfg.GraphEnv, b, "import:feature:"+id); err != nil {
			return rep, fmt.Errorf("project imported feature request %s: %w", id, err)
		}
	}
	return rep, nil
}
