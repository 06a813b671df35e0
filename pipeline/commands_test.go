package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

var (
	_ commands.GraphApplier = (*graph.SQLite)(nil)
	_ commands.GraphApplier = graph.Store(nil)
)

// cmdEnv is the command pipeline on a real embedded nats-server: the command streams, a
// SQLite requirements store and a SQLite graph store, both files in the test's directory.
type cmdEnv struct {
	*testEnv
	cs        *sjs.CommandStreams
	storePath string
	graphPath string
	store     *reqstore.SQLiteStore
	graph     graph.Store
	client    *commands.Client
}

func newCmdEnv(t testing.TB) *cmdEnv { t.Helper(); return newCmdEnvOpts(t, envOpts{}) }

func newCmdEnvOpts(t testing.TB, o envOpts) *cmdEnv {
	t.Helper()
	e := newEnv(t, o)
	ctx := context.Background()
	cs, err := sjs.ProvisionCommands(ctx, e.js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ce := &cmdEnv{testEnv: e, cs: cs, storePath: filepath.Join(e.dir, "requirements.db"), graphPath: filepath.Join(e.dir, "graph.db")}
	ce.store = ce.openStore(t)
	ce.graph = ce.openGraph(t)
	ce.client, err = commands.NewClient(commands.ClientConfig{JS: e.js, Streams: cs, Store: ce.store, Graph: ce.graph, Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ce.client.Close() })
	return ce
}

// openStore opens another handle on the requirements file, as another process would.
func (ce *cmdEnv) openStore(t testing.TB) *reqstore.SQLiteStore {
	t.Helper()
	s, err := reqstore.OpenSQLite(context.Background(), reqstore.SQLiteConfig{Path: ce.storePath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func (ce *cmdEnv) openGraph(t testing.TB) graph.Store {
	t.Helper()
	g, err := graph.Open(context.Background(), ce.graphPath, graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	return g
}

// startCommandWorker runs a CommandWorker until the test ends; stop drains it.
func (ce *cmdEnv) startCommandWorker(t testing.TB, cfg commands.WorkerConfig) (stop func() error) {
	t.Helper()
	if cfg.JS == nil {
		cfg.JS = ce.js
	}
	if cfg.Streams == nil {
		cfg.Streams = ce.cs
	}
	if cfg.Store == nil {
		cfg.Store = ce.store
	}
	if cfg.Graph == nil {
		cfg.Graph = ce.graph
	}
	if cfg.Key == nil {
		cfg.Key = testKey(t)
	}
	cfg.Retry = settle.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	w, err := commands.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// run submits cmd and waits for its outcome.
func (ce *cmdEnv) run(t testing.TB, cmd requirements.Command) requirements.Outcome {
	t.Helper()
	ctx := context.Background()
	id, err := ce.client.Submit(ctx, cmd)
	if err != nil {
		t.Fatalf("submit %s: %v", cmd.Type, err)
	}
	out, ok, err := ce.client.Await(ctx, id, 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("await %s: %v, %v", id, ok, err)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func featureCmd(id string) requirements.Command {
	return requirements.Command{Type: requirements.TypeSubmitFeatureRequest, Actor: "api-admin", SubmitFeatureRequest: &requirements.SubmitFeatureRequest{
		RequestID: id, Title: "Initiative tracker (combat)", Description: "Track initiative order for every encounter",
		Priority: "high", Requester: "gm.alice", Category: "ui",
	}}
}

func decideCmd(id, action string, reason *string, expected *int64) requirements.Command {
	return requirements.Command{Type: requirements.TypeDecideFeatureRequest, Actor: "api-admin",
		Decide: &requirements.DecideFeatureRequest{RequestID: id, Action: action, Reason: reason, ExpectedVersion: expected}}
}

func transitionCmd(id string, to requirements.Status, expected *int64) requirements.Command {
	return requirements.Command{Type: requirements.TypeTransitionFeatureRequest, Actor: "api-admin",
		Transition: &requirements.TransitionFeatureRequest{RequestID: id, To: to, ExpectedVersion: expected}}
}

func requirementsCmd(t testing.TB) requirements.Command {
	t.Helper()
	raw := mustRead(t, "../schemas/examples/command/valid/submit-requirements.json")
	var c requirements.Command
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	c.CommandID, c.IssuedAt = "", time.Time{}
	return c
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCommandsThroughPipeline applies every command type and provokes every refusal through
// the real pipeline (API client → JetStream → worker → SQLite store + graph → outcome), and
// checks state, graph, audit, outcomes and change-feed events.
func TestCommandsThroughPipeline(t *testing.T) {
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ctx := context.Background()
	const a, b = "FR-1000000000001", "FR-1000000000002"
	steps := []struct {
		name    string
		cmd     requirements.Command
		refusal requirements.RefusalCode
		status  requirements.Status
		version int64
	}{
		{name: "submit requirements", cmd: requirementsCmd(t)},
		{name: "decide unknown", cmd: decideCmd("FR-404", requirements.ActionApprove, nil, nil), refusal: requirements.RefusalNotFound},
		{name: "submit feature", cmd: featureCmd(a), status: requirements.StatusPending, version: 1},
		{name: "submit feature again", cmd: featureCmd(a), refusal: requirements.RefusalAlreadyExists, status: requirements.StatusPending, version: 1},
		{name: "complete before start", cmd: transitionCmd(a, requirements.StatusCompleted, nil), refusal: requirements.RefusalIllegalTransition, status: requirements.StatusPending, version: 1},
		{name: "approve stale", cmd: decideCmd(a, requirements.ActionApprove, nil, ptr(int64(3))), refusal: requirements.RefusalStaleVersion, status: requirements.StatusPending, version: 1},
		{name: "approve", cmd: decideCmd(a, requirements.ActionApprove, ptr("fits the roadmap"), ptr(int64(1))), status: requirements.StatusApproved, version: 2},
		{name: "reject decided", cmd: decideCmd(a, requirements.ActionReject, ptr("no"), nil), refusal: requirements.RefusalAlreadyDecided, status: requirements.StatusApproved, version: 2},
		{name: "start", cmd: transitionCmd(a, requirements.StatusInProgress, ptr(int64(2))), status: requirements.StatusInProgress, version: 3},
		{name: "complete", cmd: transitionCmd(a, requirements.StatusCompleted, ptr(int64(3))), status: requirements.StatusCompleted, version: 4},
		{name: "cancel completed", cmd: transitionCmd(a, requirements.StatusCancelled, nil), refusal: requirements.RefusalIllegalTransition, status: requirements.StatusCompleted, version: 4},
		{name: "submit second", cmd: featureCmd(b), status: requirements.StatusPending, version: 1},
		{name: "reject second", cmd: decideCmd(b, requirements.ActionReject, ptr("out of scope"), nil), status: requirements.StatusRejected, version: 2},
		{name: "cancel rejected", cmd: transitionCmd(b, requirements.StatusCancelled, nil), refusal: requirements.RefusalIllegalTransition, status: requirements.StatusRejected, version: 2},
	}
	var applied []requirements.Outcome
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out := ce.run(t, st.cmd)
			if st.refusal != "" {
				if out.Applied || out.Refusal == nil || out.Refusal.Code != st.refusal {
					t.Fatalf("outcome %+v, want refusal %s", out, st.refusal)
				}
			} else if !out.Applied || out.Refusal != nil || out.Audit == nil {
				t.Fatalf("outcome %+v, want applied", out)
			}
			if out.Applied {
				applied = append(applied, out)
			}
			if st.status == "" {
				return
			}
			f, err := ce.store.GetFeature(ctx, st.cmd.Key())
			if err != nil {
				t.Fatal(err)
			}
			if f.Status != st.status || f.Version != st.version {
				t.Fatalf("stored %s v%d, want %s v%d", f.Status, f.Version, st.status, st.version)
			}
			// The graph holds the request as it is now.
			n, err := ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID(f.RequestID))
			if err != nil || n.Properties["status"] != string(f.Status) {
				t.Fatalf("graph node %+v, %v; want status %s", n, err, f.Status)
			}
		})
	}
	if t.Failed() {
		return
	}
	checkCommandProjection(t, ce, a, b)
	if integ, err := ce.store.VerifyAudit(ctx); err != nil || !integ.Valid || integ.Entries != len(applied) {
		t.Errorf("VerifyAudit = %+v, %v; want %d valid entries", integ, err, len(applied))
	}
	// Every command, refused or applied, is on the change feed once, in order.
	events := followMutations(t, ce, len(steps))
	for i, st := range steps {
		if m := events[i]; m.Type != "mutation" || m.CommandType != st.cmd.Type || (st.refusal == "") != m.Applied {
			t.Errorf("event %d = %+v, want %s applied=%v", i, m, st.cmd.Type, st.refusal == "")
		}
	}
	if dl := ce.deadLetters(t); len(dl) != 0 {
		t.Errorf("refusals were dead-lettered: %v", dl)
	}
}

// checkCommandProjection checks the graph after TestCommandsThroughPipeline's steps: the
// latest requirements version, its items linked to each other, and one Decision node for each
// of feature requests a and b.
func checkCommandProjection(t *testing.T, ce *cmdEnv, a, b string) {
	t.Helper()
	ctx := context.Background()
	// Graph: the version, its items linked part_of it, and one Decision node per decision.
	v, err := ce.store.LatestVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.VersionNodeID(v.VersionID)); err != nil {
		t.Errorf("version node: %v", err)
	}
	item := requirements.RequirementNodeID(v.VersionID, "DR-002")
	if _, err := ce.graph.GetEdge(ctx, graph.DefaultEnv, graph.EdgeID(item, graph.EdgeDependsOn, requirements.RequirementNodeID(v.VersionID, "DR-001"))); err != nil {
		t.Errorf("depends_on edge: %v", err)
	}
	for _, dec := range []string{"decision:" + a + ":2", "decision:" + b + ":2"} {
		if n, err := ce.graph.GetNode(ctx, graph.DefaultEnv, dec); err != nil || n.Type != graph.TypeDecision {
			t.Errorf("decision node %s: %+v, %v", dec, n, err)
		}
	}
}

// followMutations reads the first n events of the change feed as mutation events, waiting up
// to 10 s for them.
func followMutations(t *testing.T, ce *cmdEnv, n int) []commands.MutationEvent {
	t.Helper()
	var events []commands.MutationEvent
	fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := jobs.NewEventFeed(ce.js).Follow(fctx, 0, func(ev jobs.Event) error {
		var m commands.MutationEvent
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			return err
		}
		events = append(events, m)
		if len(events) == n {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("follow: %v after %d events", err, len(events))
	}
	return events
}

var errStop = errors.New("stop")

// A payload that is not a valid command, or a command published on another key's subject, is
// dead-lettered under the subject it was published on, and changes nothing.
func TestCommandsInvalidAreDeadLettered(t *testing.T) {
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ctx := context.Background()
	good := featureCmd("FR-2000000000001")
	good.CommandID, good.IssuedAt = "cmd-wrong-subject", time.Now()
	body, _ := json.Marshal(good)
	pubs := []struct{ subject, data string }{
		{schemas.FeatureSubject("FR-2000000000002"), `{"type":"decide_feature_request","command_id":"x"}`},
		{schemas.FeatureSubject("FR-2000000000003"), string(body)},
	}
	for _, p := range pubs {
		// Signed, as the API would: the payload itself is what is wrong.
		m := nats.NewMsg(p.subject)
		m.Data = []byte(p.data)
		testKey(t).SignMsg(sign.Command, m)
		if _, err := ce.js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var dl []map[string]any
	waitFor(t, "two dead letters", func() bool { dl = ce.deadLetters(t); return len(dl) == 2 })
	// The two keys sit in different partitions, which run in parallel: match by subject.
	seen := map[any]bool{}
	for i, d := range dl {
		seen[d["subject"]] = true
		if d["error"].(map[string]any)["class"] != "validation" {
			t.Errorf("dead letter %d = %v", i, d)
		}
	}
	for _, p := range pubs {
		if !seen[p.subject] {
			t.Errorf("no dead letter under %s: %v", p.subject, dl)
		}
	}
	if _, err := ce.store.GetFeature(ctx, "FR-2000000000001"); !errors.Is(err, requirements.ErrNotFound) {
		t.Errorf("command on the wrong subject was applied: %v", err)
	}
}

// flakyGraph fails the first projection of each listed command id, after nothing was
// written: the failure between the document write and the graph write.
type flakyGraph struct {
	commands.GraphApplier
	mu    sync.Mutex
	fail  map[string]int
	calls map[string]int
}

var errGraphDown = errors.New("injected: graph store unavailable")

func (g *flakyGraph) ApplyBatch(ctx context.Context, env string, b graph.Batch, msgID string) (graph.Result, error) {
	g.mu.Lock()
	g.calls[msgID]++
	if g.fail[msgID] > 0 {
		g.fail[msgID]--
		g.mu.Unlock()
		return graph.Result{}, errGraphDown
	}
	g.mu.Unlock()
	return g.GraphApplier.ApplyBatch(ctx, env, b, msgID)
}

// A command whose graph write fails after its document write is redelivered; the redelivery
// finds the store's apply marker, writes the graph side once, and neither the feature's
// version nor its audit trail moves twice.
func TestCommandsRedeliveryCompletesGraph(t *testing.T) {
	ce := newCmdEnv(t)
	fg := &flakyGraph{GraphApplier: ce.graph, fail: map[string]int{}, calls: map[string]int{}}
	ce.startCommandWorker(t, commands.WorkerConfig{Graph: fg})
	ctx := context.Background()
	const id = "FR-3000000000001"
	ce.run(t, featureCmd(id))
	approve := decideCmd(id, requirements.ActionApprove, nil, ptr(int64(1)))
	approve.CommandID = "cmd-approve-flaky"
	fg.mu.Lock()
	fg.fail["command:"+approve.CommandID] = 2
	fg.mu.Unlock()
	out := ce.run(t, approve)
	if !out.Applied || out.Feature.Version != 2 {
		t.Fatalf("outcome %+v", out)
	}
	fg.mu.Lock()
	calls := fg.calls["command:"+approve.CommandID]
	fg.mu.Unlock()
	if calls != 3 {
		t.Errorf("graph projection tried %d times, want 3 (two injected failures)", calls)
	}
	f, err := ce.store.GetFeature(ctx, id)
	if err != nil || f.Version != 2 || f.Status != requirements.StatusApproved {
		t.Fatalf("feature %+v, %v; want approved v2", f, err)
	}
	audit, err := ce.store.ListAudit(ctx, id, 0)
	if err != nil || len(audit) != 2 {
		t.Fatalf("audit %v, %v; want 2 entries", audit, err)
	}
	n, err := ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID(id))
	if err != nil || n.Properties["status"] != "approved" || n.Version != 2 {
		t.Fatalf("graph node %+v, %v; want approved at node version 2", n, err)
	}
	if _, err := ce.graph.GetNode(ctx, graph.DefaultEnv, "decision:"+id+":2"); err != nil {
		t.Fatalf("decision node: %v", err)
	}
	// Publishing the same command again (a client retry beyond the duplicate window) applies
	// nothing and projects nothing.
	msg := nats.NewMsg(approve.Subject())
	approve.IssuedAt = time.Now()
	msg.Data, _ = json.Marshal(approve)
	msg.Header.Set(nats.MsgIdHdr, "retry-"+approve.CommandID) // a new message id
	testKey(t).SignMsg(sign.Command, msg)                     // as the API does
	if _, err := ce.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the republished command to settle", func() bool {
		info, err := ce.cs.Commands.Info(ctx)
		if err != nil || info.State.Msgs != 3 {
			return false
		}
		for _, c := range ce.cs.Consumers {
			ci, err := c.Info(ctx)
			if err != nil || ci.NumPending+uint64(ci.NumAckPending) > 0 {
				return false
			}
		}
		return true
	})
	if f2, _ := ce.store.GetFeature(ctx, id); f2.Version != 2 {
		t.Errorf("republished command moved the version to %d", f2.Version)
	}
	if n2, _ := ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID(id)); n2.Version != 2 {
		t.Errorf("republished command bumped the graph node to version %d", n2.Version)
	}
}

// The change feed resumes after a given sequence, and ForwardJobEvents puts job changes on it.
func TestEventFeedResumeAndJobs(t *testing.T) {
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ctx := context.Background()
	fctx, cancel := context.WithCancel(ctx)
	fwdDone := make(chan error, 1)
	go func() { fwdDone <- jobs.ForwardJobEvents(fctx, ce.js, ce.streams.JobsKV, nil) }()
	t.Cleanup(func() { cancel(); <-fwdDone })

	ce.run(t, featureCmd("FR-5000000000001"))
	ce.run(t, featureCmd("FR-5000000000002"))
	feed := jobs.NewEventFeed(ce.js)
	collect := func(since int64, n int) []jobs.Event {
		var out []jobs.Event
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := feed.Follow(c, since, func(ev jobs.Event) error {
			out = append(out, ev)
			if len(out) == n {
				return errStop
			}
			return nil
		})
		if !errors.Is(err, errStop) {
			t.Fatalf("follow since %d: %v after %v", since, err, out)
		}
		return out
	}
	all := collect(0, 2)
	after := collect(int64(all[0].Seq), 1)
	if after[0].Seq != all[1].Seq || after[0].Subject != sjs.MutationEventSubject("FR-5000000000002") || after[0].Type != "mutation" {
		t.Fatalf("resumed at %+v, want %+v", after[0], all[1])
	}
	// A job record change reaches the feed as a job event. The forwarder watches only new
	// updates, so keep writing until one is seen.
	got := make(chan jobs.Event, 1)
	c, stopFollow := context.WithCancel(ctx)
	followDone := make(chan struct{})
	go func() {
		defer close(followDone)
		_ = feed.Follow(c, int64(all[1].Seq), func(ev jobs.Event) error {
			if ev.Type == "job" {
				got <- ev
				return errStop
			}
			return nil
		})
	}()
	defer func() { stopFollow(); <-followDone }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(20 * time.Second)
	for i := 0; ; i++ {
		select {
		case ev := <-got:
			var je jobs.JobEvent
			if err := json.Unmarshal(ev.Data, &je); err != nil || je.Job.JobID != "job-evt" || ev.Subject != sjs.JobEventSubject("job-evt") {
				t.Fatalf("job event %+v (%v)", je, err)
			}
			return
		case <-tick.C:
			if _, err := ce.jobs.Open(ctx, schemas.JobOpen{JobID: "job-evt", Env: "dev", File: fmt.Sprintf("f%d", i)}); err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal("no job event on the change feed")
		}
	}
}

// noOutcomeStore is a requirements store whose CommandOutcome fails: an Await answered through
// it was answered from the change feed.
type noOutcomeStore struct{ *reqstore.SQLiteStore }

func (noOutcomeStore) CommandOutcome(context.Context, string) (requirements.Outcome, error) {
	return requirements.Outcome{}, errors.New("the store must not be read")
}

// TestAwaitOutcomeFromChangeFeed: the API learns outcomes from the change feed's mutation
// events (no outcome is written anywhere else): while it waits, when the event went by before
// Await started (Submit returned first), and for refusals; an outcome it never saw (another
// API's command, before this one watched) comes from the store when the wait ends, and an
// unknown command is reported not settled.
func TestAwaitOutcomeFromChangeFeed(t *testing.T) {
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ctx := context.Background()
	api, err := commands.NewClient(commands.ClientConfig{JS: ce.js, Streams: ce.cs,
		Store: noOutcomeStore{ce.store}, Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	// Waiting when the event comes.
	id, err := api.Submit(ctx, featureCmd("FR-700000000001"))
	if err != nil {
		t.Fatal(err)
	}
	out, ok, err := api.Await(ctx, id, 30*time.Second)
	if err != nil || !ok || !out.Applied || out.Feature == nil || out.Feature.RequestID != "FR-700000000001" || out.CommandID != id {
		t.Fatalf("await while waiting: %+v, %v, %v", out, ok, err)
	}

	// The event went by before Await started.
	id, err = api.Submit(ctx, decideCmd("FR-700000000001", "approve", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	subj := sjs.MutationEventSubject("FR-700000000001")
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := ce.cs.Events.GetLastMsgForSubject(ctx, subj)
		if err == nil && bytes.Contains(m.Data, []byte(id)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no change-feed event for %s: %v", id, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out, ok, err = api.Await(ctx, id, time.Millisecond)
	if err != nil || !ok || !out.Applied || out.Feature == nil || out.Feature.Status != requirements.StatusApproved {
		t.Fatalf("await after the event: %+v, %v, %v", out, ok, err)
	}

	// A refusal is an outcome too.
	id, err = api.Submit(ctx, decideCmd("FR-700000000002", "approve", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	out, ok, err = api.Await(ctx, id, 30*time.Second)
	if err != nil || !ok || out.Applied || out.Refusal == nil || out.Refusal.Code != requirements.RefusalNotFound {
		t.Fatalf("await a refusal: %+v, %v, %v", out, ok, err)
	}

	// Another API's command, settled before this client watched: from the store.
	other := ce.run(t, featureCmd("FR-700000000003"))
	late, err := commands.NewClient(commands.ClientConfig{JS: ce.js, Streams: ce.cs, Store: ce.store, Key: testKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	out, ok, err = late.Await(ctx, other.CommandID, 50*time.Millisecond)
	if err != nil || !ok || !out.Applied || out.Feature == nil || out.Feature.RequestID != "FR-700000000003" {
		t.Fatalf("await from the store: %+v, %v, %v", out, ok, err)
	}
	// Unknown: not settled, no error.
	if out, ok, err := late.Await(ctx, commands.NewID(), 50*time.Millisecond); ok || err != nil {
		t.Fatalf("await an unknown command: %+v, %v, %v", out, ok, err)
	}
	if err := late.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := late.Await(ctx, other.CommandID, time.Millisecond); err == nil {
		t.Fatal("Await after Close succeeded")
	}
	if _, err := late.Submit(ctx, featureCmd("FR-700000000004")); err == nil {
		t.Fatal("Submit after Close succeeded")
	}
}
