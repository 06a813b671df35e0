package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// TestCommandOrderAcrossTwoWorkerProcesses runs two real `sluice worker` processes on one
// broker and one data directory, publishes interleaved commands on 20 keys, each key's
// commands depending on the previous one (expected_version), and checks every key ends in its
// last command's state: an out-of-order apply would be refused as stale and leave the key
// behind.
func TestCommandOrderAcrossTwoWorkerProcesses(t *testing.T) {
	url, js, _ := startBroker(t)
	ctx := context.Background()
	if _, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	// The workers verify commands with the key in the shared data directory; the test signs
	// with it, as the API would.
	key, err := commandKey(config{DataDir: dataDir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	w1 := startWorker(t, url, dataDir)
	w2 := startWorker(t, url, dataDir)

	const keys = 20
	at := time.Now().UTC()
	cmds := orderedFeatureCommands(at, keys)
	// Interleave: step 0 of every key, then step 1 of every key, …
	n := 0
	for step := range 4 {
		for k := range keys {
			c := cmds[k][step]
			c.CommandID = fmt.Sprintf("order-%d-%d", k, step)
			c.Actor = "ordertest"
			c.IssuedAt = at.Add(time.Duration(n) * time.Millisecond)
			body, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			m := nats.NewMsg(c.Subject())
			m.Data = body
			m.Header.Set(nats.MsgIdHdr, c.CommandID)
			key.SignMsg(sign.Command, m)
			if _, err := js.PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	store, err := reqstore.OpenSQLite(ctx, reqstore.SQLiteConfig{Path: filepath.Join(dataDir, "requirements.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	waitAllCompleted(t, store, cmds)
	_ = w1.Process.Signal(syscall.SIGTERM)
	_ = w2.Process.Signal(syscall.SIGTERM)
	if err := w1.Wait(); err != nil {
		t.Errorf("worker 1 exit: %v", err)
	}
	if err := w2.Wait(); err != nil {
		t.Errorf("worker 2 exit: %v", err)
	}
}

// orderedFeatureCommands returns, for each of keys feature requests (ids from at), its four
// commands in order: submit, approve, start, complete, each expecting the version the one
// before leaves.
func orderedFeatureCommands(at time.Time, keys int) [][]requirements.Command {
	var cmds [][]requirements.Command
	for k := range keys {
		id := fmt.Sprintf("FR-%013d%04d", at.UnixMilli(), k)
		v := func(n int64) *int64 { return &n }
		cmds = append(cmds, []requirements.Command{
			{Type: requirements.TypeSubmitFeatureRequest, SubmitFeatureRequest: &requirements.SubmitFeatureRequest{
				RequestID: id, Title: fmt.Sprintf("Feature %d", k), Description: "An ordered feature request.", Priority: "high", Requester: "team"}},
			{Type: requirements.TypeDecideFeatureRequest, Decide: &requirements.DecideFeatureRequest{RequestID: id, Action: requirements.ActionApprove, ExpectedVersion: v(1)}},
			{Type: requirements.TypeTransitionFeatureRequest, Transition: &requirements.TransitionFeatureRequest{RequestID: id, To: requirements.StatusInProgress, ExpectedVersion: v(2)}},
			{Type: requirements.TypeTransitionFeatureRequest, Transition: &requirements.TransitionFeatureRequest{RequestID: id, To: requirements.StatusCompleted, ExpectedVersion: v(3)}},
		})
	}
	return cmds
}

// waitAllCompleted waits up to a minute until every key of cmds (its first command's request)
// is completed, at version 4.
func waitAllCompleted(t *testing.T, store *reqstore.SQLiteStore, cmds [][]requirements.Command) {
	t.Helper()
	ctx := context.Background()
	keys := len(cmds)
	deadline := time.Now().Add(time.Minute)
	for {
		done := 0
		for k := range keys {
			f, err := store.GetFeature(ctx, cmds[k][0].SubmitFeatureRequest.RequestID)
			if err == nil && f.Status == requirements.StatusCompleted {
				if f.Version != 4 {
					t.Fatalf("%s completed at version %d, want 4", f.RequestID, f.Version)
				}
				done++
			}
		}
		if done == keys {
			break
		}
		if time.Now().After(deadline) {
			for k := range keys {
				f, err := store.GetFeature(ctx, cmds[k][0].SubmitFeatureRequest.RequestID)
				t.Logf("%s: %s v%d %v", cmds[k][0].SubmitFeatureRequest.RequestID, f.Status, f.Version, err)
			}
			t.Fatalf("only %d of %d keys reached their last command's state", done, keys)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
