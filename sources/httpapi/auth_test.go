package httpapi_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestAuth(t *testing.T) {
	jobs := &fakeJobs{jobs: map[string]jobs.Job{"j1": {JobID: "j1", Env: "dev", State: jobs.JobRunning}}}
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Jobs: jobs})
	h := s.Handler()

	tests := []struct {
		name          string
		method, path  string
		authz         string // full Authorization header; "" = none
		want          int
		wantChallenge string // expected WWW-Authenticate, "" = must be absent
		wantPrincipal string // for successful submissions
	}{
		{name: "post without token", method: "POST", path: "/v1/jobs", want: 401, wantChallenge: `Bearer realm="sluice"`},
		{name: "post with unknown token", method: "POST", path: "/v1/jobs", authz: "Bearer not-a-configured-token-000", want: 401, wantChallenge: `Bearer realm="sluice", error="invalid_token"`},
		{name: "token prefix is not the token", method: "POST", path: "/v1/jobs", authz: "Bearer " + writeTok[:len(writeTok)-1], want: 401, wantChallenge: `Bearer realm="sluice", error="invalid_token"`},
		{name: "token in basic scheme", method: "POST", path: "/v1/jobs", authz: "Basic " + writeTok, want: 401, wantChallenge: `Bearer realm="sluice", error="invalid_token"`},
		{name: "empty bearer", method: "POST", path: "/v1/jobs", authz: "Bearer ", want: 401, wantChallenge: `Bearer realm="sluice", error="invalid_token"`},
		{name: "read token cannot post", method: "POST", path: "/v1/jobs", authz: "Bearer " + readTok, want: 403, wantChallenge: `Bearer realm="sluice", error="insufficient_scope", scope="write"`},
		{name: "write token posts", method: "POST", path: "/v1/jobs", authz: "Bearer " + writeTok, want: 202, wantPrincipal: "writer"},
		{name: "scheme is case-insensitive", method: "POST", path: "/v1/jobs", authz: "bearer " + writeTok, want: 202, wantPrincipal: "writer"},
		{name: "admin token posts", method: "POST", path: "/v1/jobs", authz: "Bearer " + adminTok, want: 202, wantPrincipal: "operator"},
		{name: "read token reads job", method: "GET", path: "/v1/jobs/j1", authz: "Bearer " + readTok, want: 200},
		{name: "write token reads job", method: "GET", path: "/v1/jobs/j1", authz: "Bearer " + writeTok, want: 200},
		{name: "admin token reads job", method: "GET", path: "/v1/jobs/j1", authz: "Bearer " + adminTok, want: 200},
		{name: "get job without token", method: "GET", path: "/v1/jobs/j1", want: 401, wantChallenge: `Bearer realm="sluice"`},
		{name: "get chunk without token", method: "GET", path: "/v1/chunks/c1", want: 401, wantChallenge: `Bearer realm="sluice"`},
		{name: "metrics need a token", method: "GET", path: "/metrics", want: 401, wantChallenge: `Bearer realm="sluice"`},
		{name: "metrics with read token", method: "GET", path: "/metrics", authz: "Bearer " + readTok, want: 200},
		{name: "healthz is open", method: "GET", path: "/healthz", want: 200},
		{name: "readyz is open", method: "GET", path: "/readyz", want: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(jobs.Calls())
			hdr := map[string]string{"Content-Type": "application/x-ndjson"}
			if tt.authz != "" {
				hdr["Authorization"] = tt.authz
			}
			rec := serve(t, h, tt.method, tt.path, "", strings.NewReader("{}\n{}\n"), hdr)
			if tt.want >= 400 {
				decodeProblem(t, rec, tt.want)
			} else if rec.Code != tt.want {
				t.Fatalf("status = %d, want %d; body: %s", rec.Code, tt.want, rec.Body)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			calls := jobs.Calls()
			if tt.method == "POST" {
				submitted := len(calls) > before
				if submitted != (tt.want == 202) {
					t.Fatalf("SubmitJob called = %v, want %v", submitted, tt.want == 202)
				}
				if submitted {
					c := calls[len(calls)-1]
					if !c.HasPrincipal || c.Principal != tt.wantPrincipal {
						t.Errorf("Principal = %q, %v; want %q", c.Principal, c.HasPrincipal, tt.wantPrincipal)
					}
				}
			}
		})
	}
}

func TestAuthOpenOnLoopbackWithoutTokens(t *testing.T) {
	jobs := &fakeJobs{}
	s := newServer(t, httpapi.Config{Jobs: jobs})
	// Headers a client could set never become the principal.
	rec := serve(t, s.Handler(), "POST", "/v1/jobs", "", strings.NewReader("{}"), map[string]string{
		"X-Principal": "operator", "X-Forwarded-User": "operator", "X-Remote-User": "operator",
	})
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body: %s", rec.Code, rec.Body)
	}
	c := jobs.Calls()[0]
	if !c.HasPrincipal || c.Principal != httpapi.LocalPrincipal {
		t.Errorf("Principal = %q, %v; want %q", c.Principal, c.HasPrincipal, httpapi.LocalPrincipal)
	}
	if rec := serve(t, s.Handler(), "GET", "/metrics", "", nil, nil); rec.Code != http.StatusOK {
		t.Errorf("GET /metrics without tokens on loopback = %d, want 200", rec.Code)
	}
	if _, ok := httpapi.Principal(context.Background()); ok {
		t.Error("Principal of a bare context reports ok")
	}
}

func TestSetTokens(t *testing.T) {
	s := newServer(t, httpapi.Config{Tokens: testTokens()})
	h := s.Handler()
	const newTok = "rotated-token-0123456789"
	get := func(tok string) int { return serve(t, h, "GET", "/v1/jobs/x", tok, nil, nil).Code }

	if got := get(readTok); got != http.StatusNotFound {
		t.Fatalf("before swap: old token got %d, want 404 (authenticated, unknown job)", got)
	}
	s.SetTokens([]httpapi.Token{
		{Name: "rotated", Token: newTok, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
		{Name: "too-short", Token: "short", Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
	})
	if got := get(readTok); got != http.StatusUnauthorized {
		t.Errorf("after swap: old token got %d, want 401", got)
	}
	if got := get(newTok); got != http.StatusNotFound {
		t.Errorf("after swap: new token got %d, want 404", got)
	}
	if got := get("short"); got != http.StatusUnauthorized {
		t.Errorf("invalid token passed to SetTokens was accepted: got %d, want 401", got)
	}

	// Removing every token re-opens a loopback-only server.
	s.SetTokens(nil)
	if got := get(""); got != http.StatusNotFound {
		t.Errorf("loopback server without tokens: got %d, want 404", got)
	}
}

func TestSetTokensEmptyFailsClosedBeyondLoopback(t *testing.T) {
	s := newServer(t, httpapi.Config{Addr: "0.0.0.0:0", Tokens: testTokens()})
	s.SetTokens(nil)
	rec := serve(t, s.Handler(), "GET", "/v1/jobs/x", "", nil, nil)
	decodeProblem(t, rec, http.StatusUnauthorized)
	rec = serve(t, s.Handler(), "GET", "/v1/jobs/x", readTok, nil, nil)
	decodeProblem(t, rec, http.StatusUnauthorized)
}

func TestAuthMultipleAuthorizationHeaders(t *testing.T) {
	s := newServer(t, httpapi.Config{Tokens: testTokens()})
	req, _ := http.NewRequest("GET", "/v1/jobs/x", nil)
	req.Header.Add("Authorization", "Bearer "+readTok)
	req.Header.Add("Authorization", "Bearer "+adminTok)
	rec := recorder(s.Handler(), req)
	decodeProblem(t, rec, http.StatusUnauthorized)
}

func TestSecretsStayOutOfLogsAndMetrics(t *testing.T) {
	var logs logBuffer
	s := newServer(t, httpapi.Config{Tokens: testTokens(), Logger: debugLogger(&logs)})
	h := s.Handler()
	serve(t, h, "POST", "/v1/jobs", writeTok, strings.NewReader("{}"), nil)
	serve(t, h, "POST", "/v1/jobs", readTok, strings.NewReader("{}"), nil)
	serve(t, h, "GET", "/v1/jobs/x", "wrong-token-abcdefghijklmnop", nil, nil)
	s.SetTokens(append(testTokens(), httpapi.Token{Name: "bad", Token: "tiny-secret", Scopes: []httpapi.Scope{"root"}}))
	metrics := serve(t, h, "GET", "/metrics", readTok, nil, nil).Body.String()

	out := logs.String()
	mustContain(t, "access log", out, `"msg":"http request"`, `"principal":"writer"`, `"principal":"reader"`, `"route":"/v1/jobs"`)
	for _, secret := range []string{readTok, writeTok, adminTok, "wrong-token-abcdefghijklmnop", "tiny-secret"} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain a token: %s", out)
		}
		if strings.Contains(metrics, secret) {
			t.Errorf("metrics contain a token")
		}
	}
}
