package pipeline_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Retries and takeovers of commands: a command retried in place keeps its key's order, and a
// worker taking a partition over waits for the commands another still holds.

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
		// The consumers exist (newCmdEnv): only the provision mode changes their ack wait.
		ackWait := 2 * sjs.CommandPinnedTTL
		cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision,
			Settings: sjs.Settings{Consumers: map[string]sjs.ConsumerSettings{sjs.ConsumerCommandsAll: {AckWait: &ackWait}}}})
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
