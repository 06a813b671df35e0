package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// rollJobs serves job reads and rollbacks from a real loader and job store, as sluice serve
// does. SubmitJob is not used here.
type rollJobs struct {
	fakeJobs
	loader *intake.Loader
	store  *jobs.Store
}

func (s *rollJobs) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	j, err := s.store.Get(ctx, id)
	if errors.Is(err, jobs.ErrJobNotFound) {
		return j, fmt.Errorf("%w: %w", httpapi.ErrNotFound, err)
	}
	return j, err
}

func (s *rollJobs) RollbackJob(ctx context.Context, id, by string) (jobs.Job, error) {
	return s.RollbackJobWith(ctx, id, by, intake.RollbackOptions{})
}

func (s *rollJobs) RollbackJobWith(ctx context.Context, id, by string, opts intake.RollbackOptions) (jobs.Job, error) {
	return s.loader.RollbackWith(ctx, id, by, opts)
}

// plainRoller can roll back but takes no options.
type plainRoller struct{ fakeJobs }

func (*plainRoller) RollbackJob(context.Context, string, string) (jobs.Job, error) {
	return jobs.Job{}, nil
}

// Issue 13, finding 2, through the API: DELETE /v1/jobs/{B} answers, once the workers are
// done, with the earlier job it superseded, and GET /v1/jobs/{A} says superseded instead of
// completed. Every answer matches openapi.json.
func TestRollbackRouteNamesSupersededJobs(t *testing.T) {
	ctx := context.Background()
	env := startRollbackEnv(t)
	jobStore := env.jobs
	l := env.newLoader(t, false)
	load := func(name string) jobs.Job {
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		res, err := l.Load(tctx, intake.LoadRequest{Env: "dev", Path: filepath.Join("../../testdata/chunks", name)})
		if err != nil {
			t.Fatal(err)
		}
		j, err := jobs.Wait(tctx, jobStore, res.JobID, nil)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	a, b := load("passA_chunks.json"), load("passB_enriched.json")

	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	h := newServer(t, httpapi.Config{Jobs: &rollJobs{loader: l, store: jobStore}}).Handler()
	call := func(op, method, target string, want int) []byte {
		t.Helper()
		rec := serve(t, h, method, target, "", nil, nil)
		if rec.Code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, target, rec.Code, rec.Body, want)
		}
		if err := doc.Check(op, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
			t.Fatal(err)
		}
		return rec.Body.Bytes()
	}
	call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/"+b.JobID+"?restore_previous=maybe", http.StatusBadRequest)
	call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/jnosuchjob", http.StatusNotFound)
	call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/"+b.JobID, http.StatusAccepted)
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := jobStore.Watch(tctx, b.JobID, func(j jobs.Job) bool { return j.Settled() }); err != nil {
		t.Fatal(err)
	}
	var got jobs.Job
	if err := json.Unmarshal(call("GET /v1/jobs/{id}", "GET", "/v1/jobs/"+b.JobID, http.StatusOK), &got); err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.JobRolledBack || len(got.Rollback.SupersededJobs) != 1 ||
		got.Rollback.SupersededJobs[0] != (jobs.SupersededJob{JobID: a.JobID, Documents: 20}) {
		t.Fatalf("B: %s %+v", got.State, got.Rollback)
	}
	if err := json.Unmarshal(call("GET /v1/jobs/{id}", "GET", "/v1/jobs/"+a.JobID, http.StatusOK), &got); err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.JobSuperseded || got.Superseded.Documents != 20 {
		t.Fatalf("A: %s %+v", got.State, got.Superseded)
	}

	// Restoring, asked of a server whose store keeps no previous versions: 400 with why.
	h = newServer(t, httpapi.Config{Jobs: &rollJobs{loader: env.newLoader(t, true), store: jobStore}}).Handler()
	var p problem
	if err := json.Unmarshal(call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/"+a.JobID+"?restore_previous=true", http.StatusBadRequest), &p); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.Detail, "keeps no previous versions") {
		t.Fatalf("400 detail %q", p.Detail)
	}
	// A service that takes no options answers 501 to a restoring rollback.
	h = newServer(t, httpapi.Config{Jobs: &plainRoller{}}).Handler()
	call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/"+a.JobID+"?restore_previous=1", http.StatusNotImplemented)
}

// rollbackEnv is a broker, a document store and a worker storing into it, for loading
// jobs and rolling them back.
type rollbackEnv struct {
	dir  string
	js   jetstream.JetStream
	jobs *jobs.Store
	key  *sign.Key
}

// startRollbackEnv starts a rollbackEnv whose worker and store stop when t ends.
func startRollbackEnv(t *testing.T) *rollbackEnv {
	dir := t.TempDir()
	_, _, js := embeddedtest.Start(t, embedded.Config{DataDir: dir, LazySync: true})
	ctx := context.Background()
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(dir, "docs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	key, err := sign.NewKey("httpapi-tests-command-key-0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	jobStore := jobs.NewStore(streams.JobsKV)
	env := &rollbackEnv{dir: dir, js: js, jobs: jobStore, key: key}
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{JS: js, Streams: streams, Jobs: jobStore, Sink: store, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { stop(); <-done })
	return env
}

// newLoader is a loader of env's jobs; noPrevious says its store keeps no previous versions.
func (env *rollbackEnv) newLoader(t *testing.T, noPrevious bool) *intake.Loader {
	l, err := intake.NewLoader(intake.LoaderConfig{JS: env.js, Jobs: env.jobs, Key: env.key, SpoolDir: env.dir, NoPreviousVersions: noPrevious})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// The JobState enum of openapi.json is exactly jobs.States (superseded included).
func TestOpenAPIJobStates(t *testing.T) {
	var d struct {
		Components struct {
			Schemas struct {
				JobState struct {
					Enum []jobs.State `json:"enum"`
				}
			}
		}
	}
	if err := json.Unmarshal(httpapi.OpenAPI(), &d); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(d.Components.Schemas.JobState.Enum) != fmt.Sprint(jobs.States) {
		t.Fatalf("openapi.json JobState %v, pipeline %v", d.Components.Schemas.JobState.Enum, jobs.States)
	}
}
