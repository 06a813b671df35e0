package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The order of commands per key: two workers on interleaved keys, each key's outcomes
// checked against a replay of its script.

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
