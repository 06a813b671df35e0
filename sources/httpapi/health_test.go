package httpapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestHealthz(t *testing.T) {
	s := newServer(t, httpapi.Config{Ready: []httpapi.Check{{Name: "down", Check: func(context.Context) error { return errors.New("down") }}}})
	rec := serve(t, s.Handler(), "GET", "/healthz", "", nil, nil)
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"ok"}` {
		t.Errorf("GET /healthz = %d %q", rec.Code, rec.Body)
	}
}

func TestReadyz(t *testing.T) {
	ok := func(context.Context) error { return nil }
	hang := make(chan struct{})
	tests := []struct {
		name       string
		checks     []httpapi.Check
		wantStatus int
		wantChecks map[string]string
		hang       chan struct{} // closed once the answer is in
	}{
		{name: "no checks", wantStatus: 200, wantChecks: map[string]string{}},
		{
			name:       "all ready",
			checks:     []httpapi.Check{{Name: "nats", Check: ok}, {Name: "store", Check: ok}},
			wantStatus: 200, wantChecks: map[string]string{"nats": "ok", "store": "ok"},
		},
		{
			name: "one fails",
			checks: []httpapi.Check{
				{Name: "nats", Check: ok},
				{Name: "store", Check: func(context.Context) error { return errors.New("store: database is locked") }},
			},
			wantStatus: 503, wantChecks: map[string]string{"nats": "ok", "store": "store: database is locked"},
		},
		{
			name: "one hangs until the deadline",
			checks: []httpapi.Check{
				{Name: "nats", Check: ok},
				// Ignores ctx and returns only after the answer was sent.
				{Name: "slow", Check: func(context.Context) error { <-hang; return errors.New("late") }},
			},
			hang:       hang,
			wantStatus: 503, wantChecks: map[string]string{"nats": "ok", "slow": "timed out after 2s"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, httpapi.Config{Ready: tt.checks, Tokens: testTokens()})
			rec := serve(t, s.Handler(), "GET", "/readyz", "", nil, nil)
			if tt.hang != nil {
				close(tt.hang)
			}
			var checks map[string]string
			if tt.wantStatus == 200 {
				var body struct {
					Status string            `json:"status"`
					Checks map[string]string `json:"checks"`
				}
				if rec.Code != 200 {
					t.Fatalf("status %d; %s", rec.Code, rec.Body)
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Status != "ready" {
					t.Fatalf("body %q: %v", rec.Body, err)
				}
				checks = body.Checks
			} else {
				checks = decodeProblem(t, rec, tt.wantStatus).Checks
			}
			if checks == nil {
				checks = map[string]string{}
			}
			if !reflect.DeepEqual(checks, tt.wantChecks) {
				t.Errorf("checks = %v, want %v", checks, tt.wantChecks)
			}
		})
	}
}
