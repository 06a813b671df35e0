package dlq_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// noJobs and noChunks satisfy the API's required services; these tests do not use them.
type noJobs struct{}

func (noJobs) SubmitJob(context.Context, httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	return httpapi.SubmitResult{}, errors.New("not used")
}
func (noJobs) GetJob(context.Context, string) (pipeline.Job, error) {
	return pipeline.Job{}, httpapi.ErrNotFound
}

type noChunks struct{}

func (noChunks) GetChunk(context.Context, string, string) (json.RawMessage, error) {
	return nil, httpapi.ErrNotFound
}

// TestHTTPThroughRealStore drives the dead-letter routes of the real API over the real Store:
// list, show, an under-scoped replay that changes nothing, a dry run, a replay, 404 after.
func TestHTTPThroughRealStore(t *testing.T) {
	e := newEnv(t)
	sink := newFaultySink(e.store, "http_0001")
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 3, "http_%04d"))
	const reader, admin = "reader-token-0123456789", "admin-token-0123456789"
	srv, err := httpapi.New(httpapi.Config{
		Addr: "127.0.0.1:0", Jobs: noJobs{}, Chunks: noChunks{}, DeadLetters: e.dlq,
		Tokens: []httpapi.Token{
			{Name: "reader", Token: reader, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
			{Name: "admin", Token: admin, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	do := func(method, target, token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		return rec
	}

	rec := do("GET", "/v1/dlq?job="+job.JobID+"&error_class=rejected", reader, "")
	var page struct {
		Entries []struct {
			ID          string          `json:"id"`
			Payload     []byte          `json:"payload"`
			PayloadJSON json.RawMessage `json:"payload_json"`
			DLQSeq      uint64          `json:"dlq_seq"`
			Error       struct{ Class string }
		} `json:"entries"`
		NextCursor *string `json:"next_cursor"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); rec.Code != http.StatusOK || err != nil {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	if len(page.Entries) != 1 || page.NextCursor != nil || page.Entries[0].Error.Class != "rejected" ||
		!strings.Contains(string(page.Entries[0].Payload), "http_0001") || string(page.Entries[0].PayloadJSON) != string(page.Entries[0].Payload) {
		t.Fatalf("list = %s", rec.Body)
	}
	id := page.Entries[0].ID
	if rec := do("GET", "/v1/dlq/"+id, reader, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"`+id+`"`) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}

	before := e.state(t, e.streams.DLQ)
	for _, tok := range []string{"", reader} {
		if rec := do("POST", "/v1/dlq/replay", tok, `{"ids":["`+id+`"]}`); rec.Code != http.StatusUnauthorized && rec.Code != http.StatusForbidden {
			t.Fatalf("replay with %q: %d", tok, rec.Code)
		}
		if rec := do("DELETE", "/v1/dlq?job="+job.JobID, tok, ""); rec.Code != http.StatusUnauthorized && rec.Code != http.StatusForbidden {
			t.Fatalf("purge with %q: %d", tok, rec.Code)
		}
	}
	rec = do("POST", "/v1/dlq/replay", admin, `{"filter":{"job":"`+job.JobID+`"},"dry_run":true}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"dry_run":true`) || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if after := e.state(t, e.streams.DLQ); after != before {
		t.Fatalf("refused calls or the dry run changed the DLQ: %+v -> %+v", before, after)
	}

	sink.fix("http_0001")
	rec = do("POST", "/v1/dlq/replay", admin, `{"ids":["`+id+`"],"rate":50}`)
	var res dlq.ReplayResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); rec.Code != http.StatusOK || err != nil || len(res.Replayed) != 1 {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	e.waitJob(t, job.JobID, func(j pipeline.Job) bool { return j.Written == 3 && j.DeadLettered == 0 })
	if rec := do("GET", "/v1/dlq/"+id, reader, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("get after replay: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/v1/dlq", reader, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `{"entries":[],"next_cursor":null}`) {
		t.Fatalf("list after replay: %d %s", rec.Code, rec.Body)
	}
}
