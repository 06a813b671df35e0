package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
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
	rp, err := startRequirements(ctx, config{DataDir: dir}, requirementsOptions{
		JS: js, JobsKV: streams.JobsKV, Graph: g, Workers: true, API: true, Drain: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
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
	if _, err := g.GetNode(ctx, requirements.FeatureNodeID("FR-7000000000001")); err != nil {
		t.Errorf("graph projection: %v", err)
	}
	cancel()
	if err := p.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	rp.close()
	st, err := requirements.OpenSQLite(ctx, requirements.SQLiteConfig{Path: filepath.Join(dir, "requirements.db")})
	if err != nil {
		t.Fatalf("requirements.db in the data directory: %v", err)
	}
	defer st.Close()
	if f, err := st.GetFeature(ctx, "FR-7000000000001"); err != nil || f.Requester != "gm.erin" {
		t.Errorf("stored feature %+v, %v", f, err)
	}
}
