package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// startRequirements wires the store in the data directory, the command worker, the graph
// projection and the API services: a command submitted through the API service is applied.
func TestStartRequirements(t *testing.T) {
	dir := t.TempDir()
	_, _, js := embeddedtest.Start(t, embedded.Config{DataDir: filepath.Join(dir, "nats"), LazySync: true})
	ctx := context.Background()
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := graph.Open(ctx, filepath.Join(dir, "graph.db"), graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	key, err := commandKey(config{DataDir: dir}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rp, err := startRequirements(ctx, config{DataDir: dir}, requirementsOptions{
		Key: key, JS: js, JobsKV: streams.JobsKV, Graph: g, Workers: true, API: true, Drain: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if rp.requirementsService() == nil || rp.eventSource() == nil {
		t.Fatal("API services missing")
	}
	runCtx, cancel := context.WithCancel(ctx)
	p := pool.New().WithContext(runCtx)
	rp.run(p)
	svc := rp.requirementsService()
	id, err := svc.Submit(ctx, requirements.Command{Type: requirements.TypeSubmitFeatureRequest, Actor: "tester",
		SubmitFeatureRequest: &requirements.SubmitFeatureRequest{RequestID: "FR-7000000000001", Title: "Session notes",
			Description: "Shared notes for every session", Priority: "low", Requester: "gm.erin"}})
	if err != nil {
		t.Fatal(err)
	}
	out, ok, err := svc.Await(ctx, id, 30*time.Second)
	if err != nil || !ok || !out.Applied {
		t.Fatalf("outcome %+v %v %v", out, ok, err)
	}
	if _, err := g.GetNode(ctx, graph.DefaultEnv, requirements.FeatureNodeID("FR-7000000000001")); err != nil {
		t.Errorf("graph projection: %v", err)
	}
	cancel()
	if err := p.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	rp.close()
	st, err := reqstore.OpenSQLite(ctx, reqstore.SQLiteConfig{Path: filepath.Join(dir, "requirements.db")})
	if err != nil {
		t.Fatalf("requirements.db in the data directory: %v", err)
	}
	defer st.Close()
	if f, err := st.GetFeature(ctx, "FR-7000000000001"); err != nil || f.Requester != "gm.erin" {
		t.Errorf("stored feature %+v, %v", f, err)
	}
}

// commandKey takes SLUICE_COMMAND_KEY, else SLUICE_COMMAND_KEY_FILE, else command.key in the
// data directory (created owner-only, then reused); a short key or a key file others can read
// is refused.
func TestCommandKey(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	k1, err := commandKey(config{DataDir: filepath.Join(dir, "data")}, log)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "data", sign.KeyFile))
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	if k2, err := commandKey(config{DataDir: filepath.Join(dir, "data")}, log); err != nil || k2.ID() != k1.ID() {
		t.Fatalf("second process: %v, %v; want the same key", k2, err)
	}
	shared := filepath.Join(dir, "shared.key")
	if err := os.WriteFile(shared, []byte("a-key-shared-by-api-and-workers-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromEnv, err := commandKey(config{DataDir: dir, CommandKey: "a-key-shared-by-api-and-workers-0123456789"}, log)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := commandKey(config{DataDir: dir, CommandKeyFile: shared}, log); err != nil || k.ID() != fromEnv.ID() {
		t.Fatalf("key file: %v, %v; want the env key's id %s", k, err, fromEnv.ID())
	}
	open := filepath.Join(dir, "open.key")
	if err := os.WriteFile(open, []byte("a-key-shared-by-api-and-workers-0123456789\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    config
		want string
	}{
		{"short env key", config{DataDir: dir, CommandKey: "too-short"}, "at least 32"},
		{"readable key file", config{DataDir: dir, CommandKeyFile: open}, "chmod 600"},
		{"missing key file", config{DataDir: dir, CommandKeyFile: filepath.Join(dir, "nope")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := commandKey(tc.c, log); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("commandKey: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
