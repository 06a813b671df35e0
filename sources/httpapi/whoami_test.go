package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
)

// Issue 18: the console asks who its token is and hides the actions it cannot take.
func TestWhoami(t *testing.T) {
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	authed := newServer(t, httpapi.Config{Tokens: testTokens()}).Handler()
	open := newServer(t, httpapi.Config{}).Handler()
	tests := []struct {
		name  string
		h     http.Handler
		token string
		want  string
	}{
		{"read token", authed, readTok, `{"principal":"reader","scopes":["read"],"auth":true}`},
		{"write token", authed, writeTok, `{"principal":"writer","scopes":["read","write"],"auth":true}`},
		{"admin token", authed, adminTok, `{"principal":"operator","scopes":["read","write","admin"],"auth":true}`},
		{"open mode", open, "", `{"principal":"local","scopes":["read","write","admin"],"auth":false}`},
		{"open mode ignores a token", open, "whatever-token-0123456789", `{"principal":"local","scopes":["read","write","admin"],"auth":false}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, tc.h, "GET", "/v1/whoami", tc.token, nil, nil)
			if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != tc.want {
				t.Fatalf("GET /v1/whoami = %d %s, want 200 %s", rec.Code, rec.Body, tc.want)
			}
			if err := doc.Check("GET /v1/whoami", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
				t.Error(err)
			}
		})
	}

	t.Run("a token with several scopes", func(t *testing.T) {
		h := newServer(t, httpapi.Config{Tokens: []httpapi.Token{
			{Name: "ops", Token: "ops-token-0123456789", Scopes: []httpapi.Scope{httpapi.ScopeWrite, httpapi.ScopeRead}},
		}}).Handler()
		rec := serve(t, h, "GET", "/v1/whoami", "ops-token-0123456789", nil, nil)
		var got struct {
			Principal string          `json:"principal"`
			Scopes    []httpapi.Scope `json:"scopes"`
			Auth      bool            `json:"auth"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("GET /v1/whoami = %d %s", rec.Code, rec.Body)
		}
		if got.Principal != "ops" || fmt.Sprint(got.Scopes) != "[read write]" || !got.Auth {
			t.Fatalf("whoami = %+v, want ops with read, write", got)
		}
	})

	for _, tc := range []struct{ name, token string }{{"no token", ""}, {"unknown token", "not-a-known-token-0123"}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, authed, "GET", "/v1/whoami", tc.token, nil, nil)
			decodeProblem(t, rec, http.StatusUnauthorized)
			if err := doc.Check("GET /v1/whoami", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
				t.Error(err)
			}
		})
	}
}
