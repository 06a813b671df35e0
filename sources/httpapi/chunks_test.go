package httpapi_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestGetChunk(t *testing.T) {
	const doc = `{"_id":"c1","content":"Elves \u00e9 ","metadata":{"page":3},"$vector":[0.1,0.2]}`
	chunks := &fakeChunks{docs: map[string]string{"prod/c1": doc, "dev/c1": `{"_id":"c1","env":"dev"}`}}
	s := newServer(t, httpapi.Config{Chunks: chunks})
	h := s.Handler()

	rec := serve(t, h, "GET", "/v1/chunks/c1?env=prod", "", nil, nil)
	if rec.Code != 200 || rec.Body.String() != doc {
		t.Errorf("GET prod chunk = %d %q, want 200 with the stored document as is", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if rec := serve(t, h, "GET", "/v1/chunks/c1", "", nil, nil); rec.Body.String() != `{"_id":"c1","env":"dev"}` {
		t.Errorf("env default: got %q, want the dev document", rec.Body)
	}
	p := decodeProblem(t, serve(t, h, "GET", "/v1/chunks/c2?env=prod", "", nil, nil), 404)
	mustContain(t, "detail", p.Detail, `"c2"`)
	decodeProblem(t, serve(t, h, "GET", "/v1/chunks/c1?env=qa", "", nil, nil), 400)

	chunks.err = errors.New("astra: 503 from https://db-internal.example")
	rec = serve(t, h, "GET", "/v1/chunks/c1", "", nil, nil)
	decodeProblem(t, rec, 500)
	if strings.Contains(rec.Body.String(), "db-internal") {
		t.Errorf("internal error leaked: %s", rec.Body)
	}
}
