package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
)

// fakeRequirements records submitted commands and answers Await with a programmed outcome.
// The real service is tested end to end in pipeline/requirements_api_test.go.
type fakeRequirements struct {
	v *requirements.Validator
	// outcome returns Await's answer for a command; nil means "not in time".
	outcome func(cmd requirements.Command) *requirements.Outcome

	mu   sync.Mutex
	cmds map[string]requirements.Command
	n    int
}

func newFakeRequirements(t *testing.T) *fakeRequirements {
	v, err := requirements.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return &fakeRequirements{v: v, cmds: map[string]requirements.Command{}}
}

func (f *fakeRequirements) Submit(_ context.Context, cmd requirements.Command) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	cmd.CommandID, cmd.IssuedAt = fmt.Sprintf("cmd%d", f.n), time.Now()
	if err := f.v.Check(cmd); err != nil {
		return "", err
	}
	f.cmds[cmd.CommandID] = cmd
	return cmd.CommandID, nil
}

func (f *fakeRequirements) last() requirements.Command {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cmds[fmt.Sprintf("cmd%d", f.n)]
}

func (f *fakeRequirements) Await(_ context.Context, id string, _ time.Duration) (requirements.Outcome, bool, error) {
	f.mu.Lock()
	cmd := f.cmds[id]
	f.mu.Unlock()
	if f.outcome == nil {
		return requirements.Outcome{}, false, nil
	}
	out := f.outcome(cmd)
	if out == nil {
		return requirements.Outcome{}, false, nil
	}
	out.CommandID, out.Type, out.Key = id, cmd.Type, cmd.Key()
	return *out, true, nil
}

var errNoRecord = fmt.Errorf("fake: %w", requirements.ErrNotFound)

func (f *fakeRequirements) ListVersions(context.Context) ([]requirements.VersionInfo, error) {
	return nil, nil
}
func (f *fakeRequirements) LatestVersion(context.Context) (requirements.Version, error) {
	return requirements.Version{}, errNoRecord
}
func (f *fakeRequirements) GetVersion(context.Context, int64) (requirements.Version, error) {
	return requirements.Version{}, errNoRecord
}
func (f *fakeRequirements) ListFeatures(_ context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	if q.Cursor != "" {
		return requirements.FeaturePage{}, requirements.ErrBadCursor
	}
	return requirements.FeaturePage{}, nil
}
func (f *fakeRequirements) GetFeature(_ context.Context, id string) (requirements.FeatureRequest, error) {
	if id != "FR-123" {
		return requirements.FeatureRequest{}, errNoRecord
	}
	return requirements.FeatureRequest{RequestID: id, Title: "Title", Status: requirements.StatusPending, Version: 1, Key: id, CreatedAt: "2025-09-06T22:01:44.145219"}, nil
}
func (f *fakeRequirements) ListAudit(context.Context, string, int) ([]requirements.AuditEntry, error) {
	return []requirements.AuditEntry{{Seq: 1, RequestID: "FR-123", NewStatus: "pending", Admin: "writer"}}, nil
}
func (f *fakeRequirements) VerifyAudit(context.Context) (requirements.Integrity, error) {
	return requirements.Integrity{Valid: true, Entries: 1}, nil
}
func (f *fakeRequirements) Import(context.Context, []requirements.LegacyFile) (requirements.ImportReport, error) {
	return requirements.ImportReport{Versions: []int64{}, Features: []string{}}, nil
}
func (f *fakeRequirements) Validator() *requirements.Validator { return f.v }

const featureJSON = `{"title":"Initiative tracker","description":"Track initiative for every encounter","priority":"high","requester":"gm.alice"}`

func TestRequirementsRoutesNotEnabled(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	for _, target := range []string{"/v1/features", "/api/features", "/v1/events", "/v1/requirements/latest"} {
		decodeProblem(t, serve(t, s.Handler(), "GET", target, "", nil, nil), http.StatusNotImplemented)
	}
}

// Every admin route refuses a missing token (401) and a write token (403), and every write
// route a read token (403), before the service is called.
func TestRequirementsRoutesScopes(t *testing.T) {
	f := newFakeRequirements(t)
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Requirements: f})
	for _, tc := range []struct {
		name, method, target string
		need                 httpapi.Scope
	}{
		{"submit requirements", "POST", "/v1/requirements", httpapi.ScopeAdmin},
		{"import", "POST", "/v1/requirements/import", httpapi.ScopeAdmin},
		{"decision", "POST", "/v1/features/FR-123/decision", httpapi.ScopeAdmin},
		{"transition", "POST", "/v1/features/FR-123/transition", httpapi.ScopeAdmin},
		{"integrity", "GET", "/v1/audit/integrity", httpapi.ScopeAdmin},
		{"compat submit requirements", "POST", "/api/requirements/submit", httpapi.ScopeAdmin},
		{"compat approve", "POST", "/api/features/FR-123/approve", httpapi.ScopeAdmin},
		{"compat integrity", "GET", "/api/audit/integrity", httpapi.ScopeAdmin},
		{"submit feature", "POST", "/v1/features", httpapi.ScopeWrite},
		{"compat submit feature", "POST", "/api/features/submit", httpapi.ScopeWrite},
		{"read", "GET", "/v1/features/FR-123", httpapi.ScopeRead},
	} {
		t.Run(tc.name, func(t *testing.T) {
			decodeProblem(t, serve(t, s.Handler(), tc.method, tc.target, "", strings.NewReader("{}"), map[string]string{"X-Admin-User": "mallory"}), http.StatusUnauthorized)
			below := map[httpapi.Scope]string{httpapi.ScopeAdmin: writeTok, httpapi.ScopeWrite: readTok}[tc.need]
			if below != "" {
				decodeProblem(t, serve(t, s.Handler(), tc.method, tc.target, below, strings.NewReader("{}"), nil), http.StatusForbidden)
			}
		})
	}
	if f.n != 0 {
		t.Errorf("%d commands reached the service", f.n)
	}
}

// The actor is always the token's name: the /v1 routes refuse an actor field, the Python
// routes ignore the body's admin.
func TestRequirementsActorIsPrincipal(t *testing.T) {
	f := newFakeRequirements(t)
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Requirements: f})
	h := s.Handler()
	if rec := serve(t, h, "POST", "/v1/features", writeTok, strings.NewReader(featureJSON), nil); rec.Code != 202 {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	if c := f.last(); c.Actor != "writer" || c.SubmitFeatureRequest == nil || !strings.HasPrefix(c.SubmitFeatureRequest.RequestID, "FR-") {
		t.Fatalf("command %+v", c)
	}
	decodeProblem(t, serve(t, h, "POST", "/v1/features/FR-123/decision", adminTok, strings.NewReader(`{"action":"approve","actor":"mallory"}`), nil), 400)
	rec := serve(t, h, "POST", "/api/features/FR-123/approve", adminTok, strings.NewReader(`{"action":"reject","admin":"mallory","reason":""}`), map[string]string{"X-Admin-User": "mallory"})
	if rec.Code != 202 { // the fake never applies
		t.Fatalf("compat approve: %d %s", rec.Code, rec.Body)
	}
	if c := f.last(); c.Actor != "operator" || c.Decide.Action != "reject" || c.Decide.Reason != nil {
		t.Fatalf("compat command %+v %+v", c, c.Decide)
	}
}

// ?wait= maps outcomes: applied submission 201 with Location, applied decision 200, refusal
// 409 (404 for not_found) with its code, no outcome in time 202; an invalid command 422.
func TestRequirementsWaitOutcomes(t *testing.T) {
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeRequirements(t)
	f.outcome = func(cmd requirements.Command) *requirements.Outcome {
		switch {
		case cmd.SubmitFeatureRequest != nil:
			fr := requirements.FeatureRequest{RequestID: cmd.Key(), Status: requirements.StatusPending, Version: 1, Key: cmd.Key(), CreatedAt: "x"}
			return &requirements.Outcome{Applied: true, Feature: &fr}
		case cmd.Key() == "FR-404":
			return &requirements.Outcome{Refusal: &requirements.Refusal{Code: requirements.RefusalNotFound, Message: "no such request"}}
		case cmd.Key() == "FR-999":
			return nil
		case cmd.Decide != nil && cmd.Decide.ExpectedVersion != nil:
			return &requirements.Outcome{Refusal: &requirements.Refusal{Code: requirements.RefusalStaleVersion, Message: "stale", CurrentStatus: requirements.StatusApproved, CurrentVersion: 2}}
		default:
			fr := requirements.FeatureRequest{RequestID: cmd.Key(), Status: requirements.StatusApproved, Version: 2, Key: cmd.Key(), CreatedAt: "x"}
			return &requirements.Outcome{Applied: true, Feature: &fr}
		}
	}
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Requirements: f})
	for _, tc := range []struct {
		name, op, target, body string
		status                 int
		code                   string
	}{
		{"created", "POST /v1/features", "/v1/features?wait=5s", featureJSON, 201, ""},
		{"decided", "POST /v1/features/{id}/decision", "/v1/features/FR-123/decision?wait=2s", `{"action":"approve"}`, 200, ""},
		{"stale", "POST /v1/features/{id}/decision", "/v1/features/FR-123/decision?wait=2s", `{"action":"approve","expected_version":1}`, 409, "stale_version"},
		{"not found", "POST /v1/features/{id}/transition", "/v1/features/FR-404/transition?wait=2", `{"to":"cancelled"}`, 404, "not_found"},
		{"timed out", "POST /v1/features/{id}/transition", "/v1/features/FR-999/transition?wait=1s", `{"to":"cancelled"}`, 202, ""},
		{"no wait", "POST /v1/features/{id}/transition", "/v1/features/FR-123/transition", `{"to":"cancelled"}`, 202, ""},
		{"invalid", "POST /v1/features/{id}/transition", "/v1/features/FR-123/transition?wait=1s", `{"to":"done"}`, 422, "invalid"},
		{"bad wait", "POST /v1/features/{id}/transition", "/v1/features/FR-123/transition?wait=forever", `{"to":"cancelled"}`, 400, ""},
		{"compat stale-free decision", "POST /api/features/{request_id}/approve", "/api/features/FR-123/approve", `{"action":"approve","admin":"x"}`, 200, ""},
		{"compat not found", "POST /api/features/{request_id}/approve", "/api/features/FR-404/approve", `{"action":"approve"}`, 404, ""},
		{"compat submit", "POST /api/features/submit", "/api/features/submit", featureJSON, 200, ""},
		{"compat invalid", "POST /api/features/submit", "/api/features/submit", `{"title":"x"}`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, s.Handler(), "POST", tc.target, adminTok, strings.NewReader(tc.body), nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if err := doc.Check(tc.op, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
				t.Error(err)
			}
			var body map[string]any
			_ = json.Unmarshal(rec.Body.Bytes(), &body)
			if tc.code != "" && body["code"] != tc.code {
				t.Errorf("code %v, want %s: %s", body["code"], tc.code, rec.Body)
			}
			if tc.status == 201 && !strings.HasPrefix(rec.Header().Get("Location"), "/v1/features/FR-") {
				t.Errorf("Location %q", rec.Header().Get("Location"))
			}
			if tc.status == 202 && strings.HasPrefix(tc.op, "POST /v1") && (body["command_id"] == nil || body["status"] != "accepted") {
				t.Errorf("202 body %s", rec.Body)
			}
		})
	}
}

// Reads: the feature with its audit trail, 404s, bad cursors and compat validation shapes.
func TestRequirementsReads(t *testing.T) {
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Requirements: newFakeRequirements(t)})
	for _, tc := range []struct {
		name, method, op, target, body string
		status                         int
	}{
		{"feature with audit", "GET", "GET /v1/features/{id}", "/v1/features/FR-123", "", 200},
		{"unknown feature", "GET", "GET /v1/features/{id}", "/v1/features/FR-1", "", 404},
		{"bad cursor", "GET", "GET /v1/features", "/v1/features?cursor=zz", "", 400},
		{"bad status", "GET", "GET /v1/features", "/v1/features?status=open", "", 400},
		{"no latest", "GET", "GET /v1/requirements/latest", "/v1/requirements/latest", "", 404},
		{"bad version id", "GET", "GET /v1/requirements/{id}", "/v1/requirements/abc", "", 400},
		{"versions", "GET", "GET /v1/requirements", "/v1/requirements", "", 200},
		{"audit", "GET", "GET /v1/audit/features", "/v1/audit/features?request_id=FR-123", "", 200},
		{"integrity", "GET", "GET /v1/audit/integrity", "/v1/audit/integrity", "", 200},
		{"compat feature", "GET", "GET /api/features/{request_id}", "/api/features/FR-123", "", 200},
		{"compat unknown", "GET", "GET /api/features/{request_id}", "/api/features/FR-1", "", 404},
		{"compat version 422", "GET", "GET /api/requirements/{version_id}", "/api/requirements/abc", "", 422},
		{"compat list limit", "GET", "GET /api/features", "/api/features?limit=101", "", 422},
		{"compat schemas", "GET", "GET /api/schemas", "/api/schemas", "", 200},
		{"compat validate", "POST", "POST /api/validate/schema", "/api/validate/schema", `{"schema_type":"feature_request","data":{"request_id":"FR-123","title":"x"}}`, 200},
		{"import empty", "POST", "POST /v1/requirements/import", "/v1/requirements/import", `[]`, 400},
		{"import", "POST", "POST /v1/requirements/import", "/v1/requirements/import", `[{"name":"a.json","data":"{}"}]`, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, s.Handler(), tc.method, tc.target, adminTok, strings.NewReader(tc.body), nil)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if err := doc.Check(tc.op, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
				t.Error(err)
			}
		})
	}
	rec := serve(t, s.Handler(), "POST", "/api/validate/schema", readTok, strings.NewReader(`{"schema_type":"feature_request","data":{"request_id":"FR-123","title":"x"}}`), nil)
	var v struct {
		IsValid bool `json:"is_valid"`
		Errors  []struct {
			FieldPath    string `json:"field_path"`
			InvalidValue any    `json:"invalid_value"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.IsValid {
		t.Fatalf("validate: %s", rec.Body)
	}
	found := false
	for _, e := range v.Errors {
		found = found || (e.FieldPath == "title" && e.InvalidValue == "x")
	}
	if !found {
		t.Errorf("no title error with its value: %s", rec.Body)
	}
}

var _ httpapi.RequirementsService = (*fakeRequirements)(nil)

func TestRequirementsServiceErrorsAreInternal(t *testing.T) {
	f := &failingRequirements{fakeRequirements: newFakeRequirements(t)}
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Requirements: f})
	p := decodeProblem(t, serve(t, s.Handler(), "POST", "/v1/features", writeTok, strings.NewReader(featureJSON), nil), 500)
	if strings.Contains(p.Detail, "broker") {
		t.Errorf("internal error text leaked: %q", p.Detail)
	}
}

type failingRequirements struct{ *fakeRequirements }

func (failingRequirements) Submit(context.Context, requirements.Command) (string, error) {
	return "", errors.New("broker unreachable")
}
