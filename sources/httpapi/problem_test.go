package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestProblemShapes(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	h := s.Handler()

	p := decodeProblem(t, serve(t, h, "GET", "/v2/nothing", "", nil, nil), 404)
	if p.Instance != "/v2/nothing" {
		t.Errorf("instance = %q", p.Instance)
	}
	decodeProblem(t, serve(t, h, "PUT", "/v1/jobs", "", nil, nil), 405)
	// A service without the optional job capabilities answers 501.
	decodeProblem(t, serve(t, h, "GET", "/v1/jobs", "", nil, nil), 501)

	rec := serve(t, h, "PUT", "/v1/jobs/j1", "", nil, nil)
	decodeProblem(t, rec, 405)
	if allow := rec.Header().Get("Allow"); allow != "DELETE, GET, HEAD" {
		t.Errorf("Allow = %q, want DELETE, GET, HEAD", allow)
	}
	// The mux's plain-text body must not trail the problem document.
	var v map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
		t.Errorf("405 body is not one JSON document: %q", rec.Body)
	}
	rec = serve(t, h, "PUT", "/healthz", "", nil, nil)
	decodeProblem(t, rec, 405)
}

// TestRoutesOfMissingServicesAnswer501 checks that each optional route family answers 501, with
// its own detail, on a server that was not given its service (the ifEnabled wrappers).
func TestRoutesOfMissingServicesAnswer501(t *testing.T) {
	h := newServer(t, httpapi.Config{}).Handler()
	tests := []struct {
		name, target, detail string
	}{
		{name: "dead letters", target: "/v1/dlq", detail: "Dead-letter inspection and replay are not enabled on this server."},
		{name: "graph", target: "/v1/graph/stats", detail: "This server has no graph store."},
		{name: "change feed SSE", target: "/v1/events", detail: "The change feed is not enabled on this server."},
		{name: "change feed WebSocket", target: "/v1/ws", detail: "The change feed is not enabled on this server."},
		{name: "requirements", target: "/v1/requirements/latest", detail: "Requirements and feature requests are not enabled on this server."},
		{name: "requirements, Python routes", target: "/api/features", detail: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(t, h, "GET", tt.target, "", nil, nil)
			if rec.Code != http.StatusNotImplemented {
				t.Fatalf("GET %s = %d, want 501: %s", tt.target, rec.Code, rec.Body)
			}
			if tt.detail == "" {
				return
			}
			if p := decodeProblem(t, rec, http.StatusNotImplemented); p.Detail != tt.detail {
				t.Errorf("detail = %q, want %q", p.Detail, tt.detail)
			}
		})
	}
}
