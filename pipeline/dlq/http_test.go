package dlq_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// noJobs and noChunks satisfy the API's required services; these tests do not use them.
type noJobs struct{}

func (noJobs) SubmitJob(context.Context, httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	return httpapi.SubmitResult{}, errors.New("not used")
}
func (noJobs) GetJob(context.Context, string) (jobs.Job, error) {
	return jobs.Job{}, httpapi.ErrNotFound
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
	do := dlqAPI(t, e)

	rec := do("GET", "/v1/dlq?job="+job.JobID+"&error_class=rejected", readerToken, "")
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
	if rec := do("GET", "/v1/dlq/"+id, readerToken, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"id":"`+id+`"`) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}

	before := e.state(t, e.streams.DLQ)
	for _, tok := range []string{"", readerToken} {
		if rec := do("POST", "/v1/dlq/replay", tok, `{"ids":["`+id+`"]}`); rec.Code != http.StatusUnauthorized && rec.Code != http.StatusForbidden {
			t.Fatalf("replay with %q: %d", tok, rec.Code)
		}
		if rec := do("DELETE", "/v1/dlq?job="+job.JobID, tok, ""); rec.Code != http.StatusUnauthorized && rec.Code != http.StatusForbidden {
			t.Fatalf("purge with %q: %d", tok, rec.Code)
		}
	}
	rec = do("POST", "/v1/dlq/replay", adminToken, `{"filter":{"job":"`+job.JobID+`"},"dry_run":true}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"dry_run":true`) || !strings.Contains(rec.Body.String(), id) {
		t.Fatalf("dry run: %d %s", rec.Code, rec.Body)
	}
	if after := e.state(t, e.streams.DLQ); after != before {
		t.Fatalf("refused calls or the dry run changed the DLQ: %+v -> %+v", before, after)
	}

	sink.fix("http_0001")
	rec = do("POST", "/v1/dlq/replay", adminToken, `{"ids":["`+id+`"],"rate":50}`)
	var res dlq.ReplayResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); rec.Code != http.StatusOK || err != nil || len(res.Replayed) != 1 {
		t.Fatalf("replay: %d %s", rec.Code, rec.Body)
	}
	e.waitJob(t, job.JobID, func(j jobs.Job) bool { return j.Written == 3 && j.DeadLettered == 0 })
	if rec := do("GET", "/v1/dlq/"+id, readerToken, ""); rec.Code != http.StatusNotFound {
		t.Fatalf("get after replay: %d %s", rec.Code, rec.Body)
	}
	if rec := do("GET", "/v1/dlq", readerToken, ""); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `{"entries":[],"next_cursor":null}`) {
		t.Fatalf("list after replay: %d %s", rec.Code, rec.Body)
	}
}

// Tokens of dlqAPI's server.
const (
	readerToken = "reader-token-0123456789"
	adminToken  = "admin-token-0123456789"
)

// dlqAPI serves e's dead letters through the real API, with a reader and an admin token, and
// returns a function that makes one request (token "" sends none) and records the answer.
func dlqAPI(t *testing.T, e *testEnv) func(method, target, token, body string) *httptest.ResponseRecorder {
	t.Helper()
	srv, err := httpapi.New(httpapi.Config{
		Addr: "127.0.0.1:0", Jobs: noJobs{}, Chunks: noChunks{}, DeadLetters: e.dlq,
		Tokens: []httpapi.Token{
			{Name: "reader", Token: readerToken, Scopes: []httpapi.Scope{httpapi.ScopeRead}},
			{Name: "admin", Token: adminToken, Scopes: []httpapi.Scope{httpapi.ScopeAdmin}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return func(method, target, token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, target, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		return rec
	}
}

// GET /v1/dlq/{id} shows where an original stored by reference is; GET /v1/dlq/{id}/payload
// serves it byte for byte (and an inline one too), 404 once it is gone.
func TestHTTPPayloadByReference(t *testing.T) {
	e := newEnv(t)
	ctx := longCtx(t)
	srv, err := httpapi.New(httpapi.Config{
		Addr: "127.0.0.1:0", Jobs: noJobs{}, Chunks: noChunks{}, DeadLetters: e.dlq,
		Tokens: []httpapi.Token{{Name: "reader", Token: readerToken, Scopes: []httpapi.Scope{httpapi.ScopeRead}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	get := func(target, token string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", target, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		return rec
	}
	at := time.Now().UTC()
	w := dlq.NewWriter(e.js, schemas.StreamDLQ)
	big := bytes.Repeat([]byte{0, 1, 2, 0xfe}, 225_000) // 900 KB, not JSON, not UTF-8
	for _, p := range []struct {
		id   string
		data []byte
	}{{"SLUICE_CHUNKS-1", big}, {"SLUICE_CHUNKS-2", []byte(`{"small":true}`)}} {
		if _, err := w.Write(ctx, schemas.DeadLetterEnvelope{
			ID: p.id, Subject: schemas.ChunkSubject(schemas.Dev), Payload: p.data,
			Error:    schemas.DeadLetterError{Class: "validation", Message: "bad"},
			Attempts: 1, FirstFailure: at, LastFailure: at, Stream: schemas.StreamChunks, StreamSeq: 1, DeadLetteredAt: at,
		}); err != nil {
			t.Fatal(err)
		}
		rec := get("/v1/dlq/"+p.id+"/payload", readerToken)
		if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), p.data) || rec.Header().Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("%s payload: %d, %d bytes, %s", p.id, rec.Code, rec.Body.Len(), rec.Header().Get("Content-Type"))
		}
	}
	rec := get("/v1/dlq/SLUICE_CHUNKS-1", readerToken)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"payload":""`) ||
		!strings.Contains(rec.Body.String(), `"payload_ref":{"bucket":"sluice_dlq_payloads","object":"SLUICE_CHUNKS-1","size":900000`) {
		t.Fatalf("get: %d %.300s", rec.Code, rec.Body)
	}
	if rec := get("/v1/dlq/SLUICE_CHUNKS-1/payload", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("payload without a token: %d", rec.Code)
	}
	if rec := get("/v1/dlq/SLUICE_CHUNKS-9/payload", readerToken); rec.Code != http.StatusNotFound {
		t.Fatalf("payload of an unknown id: %d", rec.Code)
	}
	obs, err := e.js.ObjectStore(ctx, schemas.BucketDLQPayloads)
	if err != nil {
		t.Fatal(err)
	}
	if err := obs.Delete(ctx, "SLUICE_CHUNKS-1"); err != nil {
		t.Fatal(err)
	}
	if rec := get("/v1/dlq/SLUICE_CHUNKS-1/payload", readerToken); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "no longer stored") {
		t.Fatalf("payload whose object is gone: %d %s", rec.Code, rec.Body)
	}
}
