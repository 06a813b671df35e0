package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/document"
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
	// docs is the document store the worker writes, for previews.
	docs *docstore.Store
}

// PreviewJobRollback previews from the worker's collection, as cmd/sluice does.
func (s *rollJobs) PreviewJobRollback(ctx context.Context, env, id string, restore bool) (document.JobRollbackPreview, bool, error) {
	p, err := s.docs.PreviewJobRollback(ctx, "ttrpg_chunks_"+env, id, restore)
	return p, true, err
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
	a, b := env.load(t, l, "passA_chunks.json"), env.load(t, l, "passB_enriched.json")

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

// The preview of a rollback, through the API, is what the rollback then does: a real worker
// loads A then B (B rewrites A's documents); GET /v1/jobs/{B}/rollback in both modes, then
// DELETE with restore_previous=true, and B's rollback outcome equals the restoring preview;
// then A (which wrote its documents last again) is previewed and rolled back by deleting.
func TestRollbackPreviewMatchesRollback(t *testing.T) {
	ctx := context.Background()
	env := startRollbackEnv(t)
	l := env.newLoader(t, false)
	a, b := env.load(t, l, "passA_chunks.json"), env.load(t, l, "passB_enriched.json")
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, httpapi.Config{Jobs: &rollJobs{loader: l, store: env.jobs, docs: env.docs}, Tokens: testTokens()})
	h := srv.Handler()
	call := func(op, method, target, token string, want int) []byte {
		t.Helper()
		rec := serve(t, h, method, target, token, nil, nil)
		if rec.Code != want {
			t.Fatalf("%s %s: %d %s, want %d", method, target, rec.Code, rec.Body, want)
		}
		if err := doc.Check(op, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
			t.Fatal(err)
		}
		return rec.Body.Bytes()
	}
	preview := func(id string, restore bool) httpapi.RollbackPreview {
		t.Helper()
		var p httpapi.RollbackPreview
		body := call("GET /v1/jobs/{id}/rollback", "GET", fmt.Sprintf("/v1/jobs/%s/rollback?restore_previous=%v", id, restore), adminTok, http.StatusOK)
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rollBack := func(id string, restore bool) jobs.Job {
		t.Helper()
		call("DELETE /v1/jobs/{id}", "DELETE", fmt.Sprintf("/v1/jobs/%s?restore_previous=%v", id, restore), adminTok, http.StatusAccepted)
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := env.jobs.Watch(tctx, id, func(j jobs.Job) bool { return j.Settled() }); err != nil {
			t.Fatal(err)
		}
		j, err := env.jobs.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	same := func(p httpapi.RollbackPreview, j jobs.Job) {
		t.Helper()
		rb := j.Rollback
		if rb == nil || rb.State != "done" || rb.Deleted != p.Deleted || rb.Restored != p.Restored ||
			fmt.Sprint(rb.SupersededJobs) != fmt.Sprint(p.SupersededJobs) {
			t.Fatalf("preview %+v, rollback %+v", p, rb)
		}
	}

	del, res := preview(b.JobID, false), preview(b.JobID, true)
	if !del.CanRollBack || del.Reason != "" || !del.RestoreSupported || del.Documents == 0 || del.Deleted != del.Documents ||
		len(del.SupersededJobs) != 1 || del.SupersededJobs[0].JobID != a.JobID || del.State != b.State || del.Env != "dev" {
		t.Fatalf("preview of B deleting: %+v", del)
	}
	if !res.CanRollBack || res.Documents != del.Documents || res.Restored == 0 || res.Restored+res.Deleted != res.Documents {
		t.Fatalf("preview of B restoring: %+v", res)
	}
	// Restoring puts A's versions back: no job loses documents unless some of B's had none.
	for _, sj := range res.SupersededJobs {
		if sj.Documents > res.Deleted {
			t.Fatalf("preview of B restoring names %+v past the %d deleted", sj, res.Deleted)
		}
	}
	gotB := rollBack(b.JobID, true)
	same(res, gotB)
	// Rolled back: the preview now says so, and counts nothing of B's.
	after := preview(b.JobID, false)
	if after.CanRollBack || !strings.Contains(after.Reason, "already rolled back") || after.Documents != 0 || after.SupersededJobs == nil {
		t.Fatalf("preview after the rollback: %+v", after)
	}
	// A wrote its documents last again (restored): previewed, then rolled back deleting.
	pa := preview(a.JobID, false)
	if !pa.CanRollBack || pa.Documents == 0 {
		t.Fatalf("preview of A: %+v", pa)
	}
	same(pa, rollBack(a.JobID, false))
	// A read token cannot roll back.
	call("DELETE /v1/jobs/{id}", "DELETE", "/v1/jobs/"+a.JobID, readTok, http.StatusForbidden)
}

// previewJobs previews from fixed counts, as a store that keeps previous versions
// (supported) or not would.
type previewJobs struct {
	fakeJobs
	preview   document.JobRollbackPreview
	supported bool
	err       error
	mu        sync.Mutex
	asked     []string // env/id/restore of each call
}

func (s *previewJobs) PreviewJobRollback(_ context.Context, env, id string, restore bool) (document.JobRollbackPreview, bool, error) {
	s.mu.Lock()
	s.asked = append(s.asked, fmt.Sprintf("%s/%s/%v", env, id, restore))
	s.mu.Unlock()
	p := s.preview
	if !restore || !s.supported {
		p.Restorable = 0
	}
	return p, s.supported, s.err
}

// GET /v1/jobs/{id}/rollback: the answer's shape, order and refusals, every answer checked
// against openapi.json.
func TestRollbackPreviewRoute(t *testing.T) {
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	done := jobs.Job{JobID: "jdone", Env: "test", State: jobs.JobCompleted}
	byJob := map[string]jobs.Job{
		"jdone":      done,
		"jrunning":   {JobID: "jrunning", Env: "dev", State: jobs.JobRunning},
		"jrequested": {JobID: "jrequested", Env: "dev", State: jobs.JobCompleted, Rollback: &jobs.Rollback{State: "requested"}},
		"jrolled":    {JobID: "jrolled", Env: "dev", State: jobs.JobRolledBack, Rollback: &jobs.Rollback{State: "done"}},
		"jfailedrb":  {JobID: "jfailedrb", Env: "dev", State: jobs.JobCompleted, Rollback: &jobs.Rollback{State: "failed"}},
		"jsuper":     {JobID: "jsuper", Env: "dev", State: jobs.JobSuperseded},
	}
	counts := document.JobRollbackPreview{Documents: 120, Restorable: 70, Superseded: map[string]int64{"jb": 40, "ja": 40, "jc": 90}}
	tests := []struct {
		name      string
		supported bool
		target    string
		preview   document.JobRollbackPreview
		want      httpapi.RollbackPreview
	}{
		{name: "deleting", supported: true, target: "/v1/jobs/jdone/rollback", preview: counts,
			want: httpapi.RollbackPreview{JobID: "jdone", Env: "test", RestoreSupported: true, Documents: 120, Deleted: 120,
				SupersededJobs: []jobs.SupersededJob{{JobID: "jc", Documents: 90}, {JobID: "ja", Documents: 40}, {JobID: "jb", Documents: 40}},
				State:          jobs.JobCompleted, CanRollBack: true}},
		{name: "restoring", supported: true, target: "/v1/jobs/jdone/rollback?restore_previous=true",
			preview: document.JobRollbackPreview{Documents: 120, Restorable: 70},
			want: httpapi.RollbackPreview{JobID: "jdone", Env: "test", RestorePrevious: true, RestoreSupported: true, Documents: 120,
				Deleted: 50, Restored: 70, SupersededJobs: []jobs.SupersededJob{}, State: jobs.JobCompleted, CanRollBack: true}},
		{name: "restoring on a store without previous versions", target: "/v1/jobs/jdone/rollback?restore_previous=1", preview: counts,
			want: httpapi.RollbackPreview{JobID: "jdone", Env: "test", RestorePrevious: true, Documents: 120, Deleted: 120,
				SupersededJobs: []jobs.SupersededJob{{JobID: "jc", Documents: 90}, {JobID: "ja", Documents: 40}, {JobID: "jb", Documents: 40}},
				State:          jobs.JobCompleted, Reason: "keeps no previous versions"}},
		{name: "deleting on a store without previous versions", target: "/v1/jobs/jdone/rollback?restore_previous=false",
			preview: document.JobRollbackPreview{Documents: 3, Truncated: true},
			want: httpapi.RollbackPreview{JobID: "jdone", Env: "test", Documents: 3, Deleted: 3, SupersededJobs: []jobs.SupersededJob{},
				Truncated: true, State: jobs.JobCompleted, CanRollBack: true}},
		{name: "still loading", supported: true, target: "/v1/jobs/jrunning/rollback",
			want: httpapi.RollbackPreview{JobID: "jrunning", Env: "dev", RestoreSupported: true, SupersededJobs: []jobs.SupersededJob{},
				State: jobs.JobRunning, Reason: "still loading"}},
		{name: "rollback requested", supported: true, target: "/v1/jobs/jrequested/rollback",
			want: httpapi.RollbackPreview{JobID: "jrequested", Env: "dev", RestoreSupported: true, SupersededJobs: []jobs.SupersededJob{},
				State: jobs.JobCompleted, Reason: "already requested"}},
		{name: "rolled back", supported: true, target: "/v1/jobs/jrolled/rollback",
			want: httpapi.RollbackPreview{JobID: "jrolled", Env: "dev", RestoreSupported: true, SupersededJobs: []jobs.SupersededJob{},
				State: jobs.JobRolledBack, Reason: "already rolled back"}},
		{name: "a failed rollback may be asked again", supported: true, target: "/v1/jobs/jfailedrb/rollback",
			want: httpapi.RollbackPreview{JobID: "jfailedrb", Env: "dev", RestoreSupported: true, SupersededJobs: []jobs.SupersededJob{},
				State: jobs.JobCompleted, CanRollBack: true}},
		{name: "superseded", supported: true, target: "/v1/jobs/jsuper/rollback",
			want: httpapi.RollbackPreview{JobID: "jsuper", Env: "dev", RestoreSupported: true, SupersededJobs: []jobs.SupersededJob{},
				State: jobs.JobSuperseded, CanRollBack: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &previewJobs{fakeJobs: fakeJobs{jobs: byJob}, preview: tt.preview, supported: tt.supported}
			h := newServer(t, httpapi.Config{Jobs: svc, Tokens: testTokens()}).Handler()
			rec := serve(t, h, "GET", tt.target, adminTok, nil, nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("%d %s", rec.Code, rec.Body)
			}
			if err := doc.Check("GET /v1/jobs/{id}/rollback", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(rec.Body.String(), "null") {
				t.Fatalf("null in %s", rec.Body)
			}
			var got httpapi.RollbackPreview
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(got.Reason, tt.want.Reason) || (got.Reason == "") != (tt.want.Reason == "") {
				t.Fatalf("reason %q, want it to say %q", got.Reason, tt.want.Reason)
			}
			got.Reason = tt.want.Reason
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Fatalf("preview\n%+v\nwant\n%+v", got, tt.want)
			}
			if want := fmt.Sprintf("%s/%s/%v", tt.want.Env, tt.want.JobID, tt.want.RestorePrevious); len(svc.asked) != 1 || svc.asked[0] != want {
				t.Fatalf("asked %v, want %s", svc.asked, want)
			}
		})
	}

	// The refusals.
	svc := &previewJobs{fakeJobs: fakeJobs{jobs: byJob}, supported: true}
	h := newServer(t, httpapi.Config{Jobs: svc, Tokens: testTokens()}).Handler()
	for _, c := range []struct {
		target, token string
		want          int
	}{
		{"/v1/jobs/jnosuch/rollback", adminTok, http.StatusNotFound},
		{"/v1/jobs/jdone/rollback?restore_previous=maybe", adminTok, http.StatusBadRequest},
		{"/v1/jobs/jdone/rollback", "", http.StatusUnauthorized},
		// Previewing costs a read of every document of the job (thousands of Data API calls
		// on AstraDB): only a token that may roll back may ask.
		{"/v1/jobs/jdone/rollback", readTok, http.StatusForbidden},
		{"/v1/jobs/jdone/rollback", writeTok, http.StatusForbidden},
	} {
		rec := serve(t, h, "GET", c.target, c.token, nil, nil)
		if rec.Code != c.want {
			t.Fatalf("GET %s: %d %s, want %d", c.target, rec.Code, rec.Body, c.want)
		}
		if err := doc.Check("GET /v1/jobs/{id}/rollback", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if len(svc.asked) != 0 {
		t.Fatalf("the store was asked for a refused preview: %v", svc.asked)
	}
	// A store that fails: 500, details only logged.
	svc.err = errors.New("store away")
	if rec := serve(t, h, "GET", "/v1/jobs/jdone/rollback", adminTok, nil, nil); rec.Code != http.StatusInternalServerError ||
		strings.Contains(rec.Body.String(), "store away") {
		t.Fatalf("failing store: %d %s", rec.Code, rec.Body)
	}
	// A service that cannot preview: 501.
	h = newServer(t, httpapi.Config{Jobs: &fakeJobs{jobs: byJob}}).Handler()
	if rec := serve(t, h, "GET", "/v1/jobs/jdone/rollback", "", nil, nil); rec.Code != http.StatusNotImplemented {
		t.Fatalf("no previewer: %d %s", rec.Code, rec.Body)
	}
}

// rollbackEnv is a broker, a document store and a worker storing into it, for loading
// jobs and rolling them back.
type rollbackEnv struct {
	dir  string
	docs *docstore.Store
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
	env := &rollbackEnv{dir: dir, docs: store, js: js, jobs: jobStore, key: key}
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
// load loads testdata/chunks/name into env "dev" with l and waits until the job is done.
func (env *rollbackEnv) load(t *testing.T, l *intake.Loader, name string) jobs.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := l.Load(ctx, intake.LoadRequest{Env: "dev", Path: filepath.Join("../../testdata/chunks", name)})
	if err != nil {
		t.Fatal(err)
	}
	j, err := jobs.Wait(ctx, env.jobs, res.JobID, nil)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

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
