package httpapi_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
)

// The OpenAPI document describes exactly the routes the server registers.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, httpapi.Config{})
	routes := s.Patterns()
	documented := doc.Operations()
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %q is not in openapi.json", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("openapi.json documents %q, which no handler serves", d)
		}
	}
}

func TestOpenAPIServedAndValid(t *testing.T) {
	s := newServer(t, httpapi.Config{})
	rec := serve(t, s.Handler(), "GET", "/openapi.json", "", nil, nil)
	var v map[string]any
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &v) != nil || v["openapi"] != "3.1.0" {
		t.Fatalf("GET /openapi.json: %d %.200s", rec.Code, rec.Body)
	}
	doc, err := openapitest.Load(rec.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	// Answers of the real handlers (over fake services) match the document.
	h := s.Handler()
	for _, tc := range []struct {
		op, target string
		status     int
	}{
		{"GET /healthz", "/healthz", 200},
		{"GET /v1/jobs/{id}", "/v1/jobs/nope", 404},
		{"GET /v1/chunks/{id}", "/v1/chunks/x?env=staging", 400},
		{"GET /v1/jobs", "/v1/jobs", 501},
		{"GET /v1/dlq", "/v1/dlq", 501},
	} {
		rec := serve(t, h, strings.Fields(tc.op)[0], tc.target, "", nil, nil)
		if rec.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.target, rec.Code, tc.status)
			continue
		}
		if err := doc.Check(tc.op, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
			t.Error(err)
		}
	}
}
