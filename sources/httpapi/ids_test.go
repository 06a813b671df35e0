package httpapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// Regression: ids with control characters (against the contract: schemas/chunk.v1.json
// $defs/id, schemas.ValidKey) were accepted at the API's doors and passed on to stores and
// subjects. Now every path wildcard and id query parameter is checked first: 400 problem.
func TestIDsCheckedAtEveryDoor(t *testing.T) {
	s := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: newFakeDLQ(), Requirements: newFakeRequirements(t)})
	h := s.Handler()
	bad := map[string]string{
		"NUL":      "a\x00b",
		"newline":  "a\nb",
		"DEL":      "a\x7fb",
		"C1":       "a\u0085b",
		"bad UTF8": "a\xffb",
		"overlong": strings.Repeat("n", 1025),
	}
	routes := []struct{ method, path, query string }{
		{"GET", "/v1/jobs/%s", ""},
		{"GET", "/v1/jobs/%s/events", ""},
		{"DELETE", "/v1/jobs/%s", ""},
		{"GET", "/v1/chunks/%s", ""},
		{"GET", "/v1/graph/nodes/%s", ""},
		{"GET", "/v1/graph/nodes/%s/neighbors", ""},
		{"GET", "/v1/dlq/%s", ""},
		{"DELETE", "/v1/dlq/%s", ""},
		{"GET", "/v1/features/%s", ""},
		{"POST", "/v1/features/%s/decision", ""},
		{"POST", "/v1/features/%s/transition", ""},
		{"GET", "/v1/requirements/%s", ""},
		{"GET", "/api/requirements/%s", ""},
		{"GET", "/api/features/%s", ""},
		{"POST", "/api/features/%s/approve", ""},
		{"GET", "/v1/dlq", "job"},
		{"GET", "/v1/audit/features", "request_id"},
		{"GET", "/api/audit/features", "request_id"},
	}
	for name, id := range bad {
		for _, rt := range routes {
			target := rt.path
			if rt.query != "" {
				target += "?" + rt.query + "=" + url.QueryEscape(id)
			} else {
				target = strings.Replace(target, "%s", url.PathEscape(id), 1)
			}
			rec := serve(t, h, rt.method, target, adminTok, strings.NewReader("{}"), nil)
			if rec.Code != http.StatusBadRequest {
				t.Errorf("%s %s with a %s id: %d, want 400; %s", rt.method, rt.path, name, rec.Code, rec.Body)
				continue
			}
			decodeProblem(t, rec, http.StatusBadRequest)
		}
	}
	// Job ids are subject tokens: a dot or a space is refused too; a valid one passes the door.
	for _, id := range []string{"a.b", "a b", "a*", strings.Repeat("j", 129)} {
		if rec := serve(t, h, "GET", "/v1/jobs/"+url.PathEscape(id), adminTok, nil, nil); rec.Code != http.StatusBadRequest {
			t.Errorf("job id %q: %d, want 400", id, rec.Code)
		}
	}
	if rec := serve(t, h, "GET", "/v1/jobs/"+strings.Repeat("j", 128), adminTok, nil, nil); rec.Code != http.StatusNotFound {
		t.Errorf("a valid 128-character job id: %d, want 404", rec.Code)
	}
	if rec := serve(t, h, "GET", "/v1/chunks/"+url.PathEscape("ü:1/ok"), adminTok, nil, nil); rec.Code == http.StatusBadRequest {
		t.Errorf("a valid chunk id was refused: %s", rec.Body)
	}
}
