package httpapi_test

import (
	"encoding/json"
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
