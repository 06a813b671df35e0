package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
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

// countingStore counts the commands one worker applied.
type countingStore struct {
	requirements.Store
	n atomic.Int64
}

func (s *countingStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	s.n.Add(1)
	return s.Store.ApplyCommand(ctx, cmd, msgID)
}

// orderScript returns n commands for key id: a submission, then decisions and transitions
// with expected versions, chosen at random. Many are refused, and which ones depends on the
// order they are applied in.
func orderScript(rng *rand.Rand, id string, n int) []requirements.Command {
	cmds := []requirements.Command{featureCmd(id)}
	for len(cmds) < n {
		var exp *int64
		if rng.IntN(3) > 0 {
			exp = ptr(int64(1 + rng.IntN(4)))
		}
		switch rng.IntN(6) {
		case 0:
			cmds = append(cmds, decideCmd(id, requirements.ActionApprove, nil, exp))
		case 1:
			if rng.IntN(4) == 0 {
				cmds = append(cmds, decideCmd(id, requirements.ActionReject, ptr("not now"), exp))
			} else {
				cmds = append(cmds, decideCmd(id, requirements.ActionApprove, nil, exp))
			}
		case 2, 3:
			cmds = append(cmds, transitionCmd(id, requirements.StatusInProgress, exp))
		case 4:
			cmds = append(cmds, transitionCmd(id, requirements.StatusCompleted, exp))
		case 5:
			if rng.IntN(5) == 0 {
				cmds = append(cmds, transitionCmd(id, requirements.StatusCancelled, exp))
			} else {
				cmds = append(cmds, transitionCmd(id, requirements.StatusInProgress, exp))
			}
		}
	}
	return cmds
}

// TestCommandsOrderAcrossTwoWorkers publishes 20 keys × 50 interleaved commands and applies
// them with two workers (separate connections, store and graph handles, like two processes).
// The first holds every partition alone (each is pinned to the one worker pulling) until it
// has applied some; then the second starts and the first is stopped mid-stream, so the second
// takes the partitions over. Every
// command's outcome, and each key's final state, must equal applying the key's commands one
// by one in publish order (requirements.Apply, the pure state machine).
func TestCommandsOrderAcrossTwoWorkers(t *testing.T) {
	ce := newCmdEnv(t)
	const keys, perKey = 20, 50
	stores, cfgs := twoCommandWorkers(t, ce)
	var stops [2]func() error
	stops[0] = ce.startCommandWorker(t, cfgs[0])
	scripts := orderScripts(keys, perKey)
	publishInterleaved(t, ce, scripts)
	waitFor(t, "the first worker to apply 200 commands", func() bool { return stores[0].n.Load() >= 200 })
	stops[1] = ce.startCommandWorker(t, cfgs[1])
	if err := stops[0](); err != nil {
		t.Fatalf("stop the first worker: %v", err)
	}
	ctx := context.Background()
	last := scripts[keys-1][perKey-1].CommandID
	if _, ok, err := ce.client.Await(ctx, last, time.Minute); !ok || err != nil {
		t.Fatalf("last command not applied: %v %v", ok, err)
	}
	refused := 0
	for k, script := range scripts {
		refused += checkScriptOutcomes(t, ce, k, script)
	}
	if dl := ce.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters, first %+v", len(dl), dl[0])
	}
	a, b := stores[0].n.Load(), stores[1].n.Load()
	t.Logf("worker A applied %d, worker B %d; %d of %d commands refused", a, b, refused, keys*perKey)
	if a == 0 || b == 0 || a+b < keys*perKey {
		t.Errorf("workers applied %d and %d commands; want both > 0 and %d in all", a, b, keys*perKey)
	}
	if refused == 0 || refused == keys*(perKey-1) {
		t.Errorf("%d refusals: the script does not exercise order", refused)
	}
}

// twoCommandWorkers returns the configurations of two command workers on ce's broker, each with
// its own connection, store (counting the commands it applies) and graph handle, like two
// processes.
func twoCommandWorkers(t *testing.T, ce *cmdEnv) (stores [2]*countingStore, cfgs [2]commands.WorkerConfig) {
	t.Helper()
	for i := range stores {
		nc := embeddedtest.Connect(t, ce.srv)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := sjs.ProvisionCommands(context.Background(), js, sjs.ProvisionConfig{})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = &countingStore{Store: ce.openStore(t)}
		cfgs[i] = commands.WorkerConfig{JS: js, Streams: cs, Store: stores[i], Graph: ce.openGraph(t)}
	}
	return stores, cfgs
}

// orderScripts returns keys scripts of perKey commands each (orderScript, from a fixed seed),
// with command ids ord-<key>-<i> and issue times a millisecond apart.
func orderScripts(keys, perKey int) [][]requirements.Command {
	rng := rand.New(rand.NewPCG(5, 7))
	scripts := make([][]requirements.Command, keys)
	base := time.Now()
	for k := range scripts {
		scripts[k] = orderScript(rng, fmt.Sprintf("FR-40000000%05d", k), perKey)
		for i := range scripts[k] {
			scripts[k][i].CommandID = fmt.Sprintf("ord-%d-%d", k, i)
			scripts[k][i].IssuedAt = base.Add(time.Duration(i) * time.Millisecond)
		}
	}
	return scripts
}

// publishInterleaved publishes the scripts' commands, signed as the API signs them, step by
// step across the keys, and waits for every ack. One connection publishes asynchronously, so
// the stream receives each key's commands in script order.
func publishInterleaved(t *testing.T, ce *cmdEnv, scripts [][]requirements.Command) {
	t.Helper()
	var futures []jetstream.PubAckFuture
	for i := range scripts[0] {
		for k := range scripts {
			cmd := scripts[k][i]
			m := nats.NewMsg(cmd.Subject())
			m.Data, _ = json.Marshal(cmd)
			m.Header.Set(nats.MsgIdHdr, cmd.CommandID)
			testKey(t).SignMsg(sign.Command, m) // as the API does
			f, err := ce.js.PublishMsgAsync(m)
			if err != nil {
				t.Fatal(err)
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			t.Fatal("publish ack timed out")
		}
	}
}

// checkScriptOutcomes replays key k's script through requirements.Apply and checks that each
// command's stored outcome is the replay's (applied at the same version and status, or refused
// with the same code), that the stored request ends in the replay's state, and that the graph
// projection catches up with it. It returns how many of the script's commands were refused.
func checkScriptOutcomes(t *testing.T, ce *cmdEnv, k int, script []requirements.Command) (refused int) {
	t.Helper()
	ctx := context.Background()
	var st requirements.State
	for i, cmd := range script {
		want, _, err := requirements.Apply(st, cmd)
		var ref *requirements.Refusal
		if errors.As(err, &ref) {
			refused++
		} else if err != nil {
			t.Fatal(err)
		}
		var got requirements.Outcome
		waitFor(t, "outcome of "+cmd.CommandID, func() bool {
			got, err = ce.store.CommandOutcome(ctx, cmd.CommandID)
			return err == nil
		})
		switch {
		case ref != nil:
			if got.Refusal == nil || got.Refusal.Code != ref.Code || got.Refusal.CurrentVersion != ref.CurrentVersion {
				t.Fatalf("key %d command %d (%s): got %+v, want refusal %+v", k, i, cmd.Type, got.Refusal, ref)
			}
		default:
			if !got.Applied || got.Feature.Version != want.Feature.Version || got.Feature.Status != want.Feature.Status {
				t.Fatalf("key %d command %d (%s): got %+v, want %s v%d", k, i, cmd.Type, got, want.Feature.Status, want.Feature.Version)
			}
			st = want
		}
	}
	f, err := ce.store.GetFeature(ctx, script[0].Key())
	if err != nil || f.Status != st.Feature.Status || f.Version != st.Feature.Version {
		t.Fatalf("key %d final %+v, %v; want %s v%d", k, f, err, st.Feature.Status, st.Feature.Version)
	}
	// The store's apply marker (what CommandOutcome reads) commits before the graph
	// projection, which a busy graph file may retry: wait for the projection to catch up.
	var n graph.Node
	projected := func() bool {
		n, err = ce.graph.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID(f.RequestID))
		return err == nil && n.Properties["status"] == string(f.Status) && n.Version == f.Version
	}
	deadline := time.Now().Add(30 * time.Second)
	for !projected() {
		if time.Now().After(deadline) {
			t.Fatalf("key %d graph %+v, %v; want %s at version %d", k, n, err, f.Status, f.Version)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return refused
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

// flakyStore fails the commands in fails transiently, each as often as its count says.
type flakyStore struct {
	requirements.Store
	mu    sync.Mutex
	fails map[string]int
	tries map[string]int
}

func (s *flakyStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	s.mu.Lock()
	s.tries[cmd.CommandID]++
	fail := s.fails[cmd.CommandID] > 0
	if fail {
		s.fails[cmd.CommandID]--
	}
	s.mu.Unlock()
	if fail {
		return requirements.Outcome{}, errors.New("store briefly unavailable")
	}
	return s.Store.ApplyCommand(ctx, cmd, msgID)
}

// TestCommandsRetryInPlaceKeepsKeyOrder: a partition holds several commands of one key; the
// second fails twice (transiently) and is retried in place. The third, which is only legal
// after the second, must wait for it: applied, not refused. A command of another key held in
// the same partition chain is not held up by the failure for good either.
func TestCommandsRetryInPlaceKeepsKeyOrder(t *testing.T) {
	ce := newCmdEnv(t)
	ctx := context.Background()
	const id = "FR-710000000001"
	cmds := []requirements.Command{featureCmd(id), decideCmd(id, "approve", nil, nil), transitionCmd(id, requirements.StatusInProgress, nil)}
	for i := range cmds {
		cmds[i].CommandID = fmt.Sprintf("inplace-%d", i)
	}
	store := &flakyStore{Store: ce.store, fails: map[string]int{"inplace-1": 2}, tries: map[string]int{}}
	// Published before the worker starts, so the partition pulls them together.
	for _, c := range cmds {
		if _, err := ce.client.Submit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	ce.startCommandWorker(t, commands.WorkerConfig{Store: store})
	out, ok, err := ce.client.Await(ctx, "inplace-2", 30*time.Second)
	if err != nil || !ok {
		t.Fatalf("await the transition: %v, %v", ok, err)
	}
	if !out.Applied || out.Feature == nil || out.Feature.Status != requirements.StatusInProgress || out.Feature.Version != 3 {
		t.Fatalf("transition: %+v (refusal %+v), want applied at version 3", out, out.Refusal)
	}
	store.mu.Lock()
	tries := store.tries["inplace-1"]
	store.mu.Unlock()
	if tries < 3 {
		t.Fatalf("the failing command was tried %d times, want 3", tries)
	}
	f, err := ce.store.GetFeature(ctx, id)
	if err != nil || f.Status != requirements.StatusInProgress || f.Version != 3 {
		t.Fatalf("stored %+v, %v", f, err)
	}
	if dl := ce.deadLetters(t); len(dl) != 0 {
		t.Fatalf("%d dead letters, first %+v", len(dl), dl[0])
	}
}

// blockingStore blocks ApplyCommand of one command id until release is closed.
type blockingStore struct {
	requirements.Store
	id      string
	release chan struct{}
	blocked chan struct{}
	once    sync.Once
}

func (s *blockingStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	if cmd.CommandID == s.id {
		s.once.Do(func() { close(s.blocked) })
		select {
		case <-s.release:
		case <-ctx.Done():
			return requirements.Outcome{}, ctx.Err()
		}
	}
	return s.Store.ApplyCommand(ctx, cmd, msgID)
}

// TestCommandsTakeoverWaitsForHeldCommands: worker A holds two commands of a key (stuck in
// its store on the first, after the key's submission) when its connection dies. Worker B is pinned to the partition once A's pin
// expires and receives a newer command of the key first; it must not apply it before A's
// two come back (their AckWait), then apply all three in order: the newer one is only legal
// after them.
func TestCommandsTakeoverWaitsForHeldCommands(t *testing.T) {
	ce := newCmdEnv(t)
	ctx := context.Background()
	const id = "FR-720000000001"
	connect := func() (*nats.Conn, jetstream.JetStream, *sjs.CommandStreams) {
		nc := embeddedtest.Connect(t, ce.srv)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		// A's commands come back after the pin moved, so B receives the newer one first: A's
		// last InProgress (every AckWait/3) may be up to a third of AckWait before its
		// connection dies, so they expire at least 2/3 AckWait after it, past the 10 s pin.
		cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{AckWait: 2 * sjs.CommandPinnedTTL})
		if err != nil {
			t.Fatal(err)
		}
		return nc, js, cs
	}
	ncA, jsA, csA := connect()
	held := &blockingStore{Store: ce.openStore(t), id: "takeover-1", release: make(chan struct{}), blocked: make(chan struct{})}
	cmds := []requirements.Command{featureCmd(id), decideCmd(id, "approve", nil, nil),
		transitionCmd(id, requirements.StatusInProgress, nil), transitionCmd(id, requirements.StatusCompleted, nil)}
	for i := range cmds {
		cmds[i].CommandID = fmt.Sprintf("takeover-%d", i)
	}
	for _, c := range cmds[:3] {
		if _, err := ce.client.Submit(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	ce.startCommandWorker(t, commands.WorkerConfig{JS: jsA, Streams: csA, Store: held, Graph: ce.openGraph(t)})
	t.Cleanup(func() { close(held.release) })
	<-held.blocked // A holds takeover-1 and -2, stuck on -1
	ncA.Close()    // A is gone without handing anything back
	if _, err := ce.client.Submit(ctx, cmds[3]); err != nil {
		t.Fatal(err)
	}
	_, jsB, csB := connect()
	ce.startCommandWorker(t, commands.WorkerConfig{JS: jsB, Streams: csB})
	out, ok, err := ce.client.Await(ctx, "takeover-3", time.Minute)
	if err != nil || !ok {
		t.Fatalf("await the last command: %v, %v", ok, err)
	}
	if !out.Applied || out.Feature == nil || out.Feature.Status != requirements.StatusCompleted {
		t.Fatalf("last command: %+v (refusal %+v), want applied: completed after in_progress", out, out.Refusal)
	}
	f, err := ce.store.GetFeature(ctx, id)
	if err != nil || f.Status != requirements.StatusCompleted || f.Version != 4 {
		t.Fatalf("stored %+v, %v; want completed at version 4", f, err)
	}
}
