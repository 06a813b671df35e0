package dataapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// fuzzReply is what the fuzzed Data API answers every request with.
type fuzzReply struct {
	mu         sync.Mutex
	status     int
	body       []byte
	retryAfter string
}

func (r *fuzzReply) set(status int, body []byte, retryAfter string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status, r.body, r.retryAfter = status, body, retryAfter
}

func (r *fuzzReply) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	status, body, ra := r.status, r.body, r.retryAfter
	r.mu.Unlock()
	if ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// classified fails the test unless err is nil, or carries a fault class given by the code
// (a *fault.Error in its chain), or is one of the sentinels a method documents.
func classified(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || errors.Is(err, ErrNotFound) {
		return
	}
	var fe *fault.Error
	if !errors.As(err, &fe) {
		t.Fatalf("%s: error is not classified: %v", what, err)
	}
	if fe.Class == "" {
		t.Fatalf("%s: error has an empty class: %v", what, err)
	}
}

// fuzzSeed is a reply of the Data API: an HTTP status and a body.
type fuzzSeed struct {
	status int
	body   string
}

// fuzzResponseSeeds returns FuzzResponses' seed replies: the shapes the Data API answers with,
// per-document outcomes, error lists and statuses, and a few that are wrong.
func fuzzResponseSeeds() []fuzzSeed {
	return []fuzzSeed{
		{200, `{"status":{"insertedIds":["a","b"]}}`},
		{200, `{"status":{"documentResponses":[{"_id":"a","status":"OK"},{"_id":"b","status":"ERROR","errorsIdx":0}]},"errors":[{"errorCode":"DOCUMENT_ALREADY_EXISTS","message":"dup","family":"REQUEST","scope":"DOCUMENT","documentIds":["b"]}]}`},
		{200, `{"status":{"documentResponses":[{"_id":"a","status":"SKIPPED"},{"_id":{"$uuid":"x"},"status":"ERROR","errorsIdx":-1}]}}`},
		{200, `{"status":{"insertedIds":["a"]},"errors":[{"errorCode":"SHRED_DOC_LIMIT_VIOLATION","documentIds":[1]}]}`},
		{200, `{"data":{"document":{"_id":"a","content":"x"}}}`},
		{200, `{"data":{"document":null}}`},
		{200, `{"data":{"documents":[{"_id":1}],"nextPageState":"p2"}}`},
		{200, `{"status":{"matchedCount":1,"modifiedCount":1,"upsertedId":"u"},"data":{"document":{"_id":"u"}}}`},
		{200, `{"status":{"deletedCount":20,"moreData":false}}`},
		{200, `{"status":{"deletedCount":-1}}`},
		{200, `{"status":{"count":1000,"moreData":true}}`},
		{200, `{"status":{"collections":["a",{"name":"b","options":{}}]}}`},
		{200, `{"status":{"ok":1}}`},
		{200, `{"errors":[{"errorCode":"UNAUTHENTICATED_REQUEST","message":"token"}]}`},
		{200, `{"errors":[{"errorCode":"UNKNOWN_KEYSPACE","family":"SERVER"},{"errorCode":"TIMEOUT_WRITING_DATA"}]}`},
		{200, `{"errors":[{"errorCode":"TIMEOUT_WRITING_DATA"},{"errorCode":"EXISTING_COLLECTION_DIFFERENT_SETTINGS"}]}`},
		{200, `{"status":{"count":"many"}}`},
		{200, `<html>`},
		{401, `{"errors":[{"errorCode":"UNAUTHENTICATED_REQUEST"}]}`},
		{413, `too large`},
		{429, ``},
		{503, `{"errors":[{"errorCode":"UNAVAILABLE_DATABASE"}]}`},
		{404, `{"errors":null}`},
	}
}

// FuzzResponses sends every Client method to a server that answers with a fuzzed HTTP status,
// Retry-After header and body. Properties: no panic, no endless loop (each method returns
// within its deadline), and every error, of a whole call or of one document of an
// insertMany, is classified by type with a fault class.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzResponses$' -fuzztime 10m ./sinks/astra/dataapi/
func FuzzResponses(f *testing.F) {
	for _, s := range fuzzResponseSeeds() {
		f.Add(uint16(s.status), []byte(s.body), "")
	}
	f.Add(uint16(503), []byte(`{}`), "1")
	f.Add(uint16(429), []byte(``), "Wed, 21 Oct 2015 07:28:00 GMT")

	reply := &fuzzReply{}
	srv := httptest.NewServer(reply)
	f.Cleanup(srv.Close)
	c, err := NewClient(Config{Endpoint: srv.URL, Token: "AstraCS:fuzz-token", MaxAttempts: 1,
		RequestTimeout: 5 * time.Second, MaxConns: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.Close)

	f.Fuzz(func(t *testing.T, status uint16, body []byte, retryAfter string) {
		// net/http refuses to write a status outside 100..999, and 1xx are informational.
		code := 200 + int(status)%800
		reply.set(code, body, retryAfter)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		check := func(what string, err error) {
			t.Helper()
			if ctx.Err() != nil {
				t.Fatalf("%s did not return before its deadline (HTTP %d, body %q)", what, code, body)
			}
			classified(t, what+" (HTTP "+strconv.Itoa(code)+")", err)
		}

		docs := []json.RawMessage{json.RawMessage(`{"_id":"a"}`), json.RawMessage(`{"_id":{"$uuid":"x"}}`)}
		perDoc, err := c.InsertMany(ctx, "chunks", docs)
		check("InsertMany", err)
		if err == nil && len(perDoc) != len(docs) {
			t.Fatalf("InsertMany returned %d results for %d documents", len(perDoc), len(docs))
		}
		for i, e := range perDoc {
			classified(t, "InsertMany document "+strconv.Itoa(i), e)
		}
		check("InsertOne", c.InsertOne(ctx, "chunks", json.RawMessage(`{"_id":"a"}`)))
		_, err = c.FindOne(ctx, "chunks", map[string]any{"_id": "a"}, nil)
		check("FindOne", err)
		_, _, err = c.FindPage(ctx, "chunks", nil, FindOptions{})
		check("FindPage", err)
		check("Find", c.Find(ctx, "chunks", nil, FindOptions{Limit: 100}, func(json.RawMessage) error { return nil }))
		_, err = c.FindOneAndReplace(ctx, "chunks", map[string]any{"_id": "a"}, map[string]any{"_id": "a"}, true)
		check("FindOneAndReplace", err)
		_, err = c.UpdateOne(ctx, "chunks", map[string]any{"_id": "a"}, map[string]any{"$set": map[string]any{"x": 1}}, true)
		check("UpdateOne", err)
		// A server that keeps deleting documents and saying there are more keeps DeleteMany
		// going: a real collection runs out, this one never does. Its own short deadline
		// ends that case (as a classified, transient error).
		dctx, dcancel := context.WithTimeout(ctx, 50*time.Millisecond)
		_, err = c.DeleteMany(dctx, "chunks", map[string]any{"job": "j"})
		dcancel()
		check("DeleteMany", err)
		_, _, err = c.CountDocuments(ctx, "chunks", nil, 0)
		check("CountDocuments", err)
		_, err = c.FindCollections(ctx)
		check("FindCollections", err)
		check("CreateCollection", c.CreateCollection(ctx, "chunks", CollectionOptions{}))
		check("DeleteCollection", c.DeleteCollection(ctx, "chunks"))
	})
}

// DeleteMany resent its command for as long as the server said moreData, even when a call
// deleted nothing: a server stuck answering {"deletedCount":0,"moreData":true} made it send
// requests in a tight loop until its ctx ended (a rollback has no deadline). Found by
// FuzzResponses, whose server answers every request alike.
func TestDeleteManyStopsWithoutProgress(t *testing.T) {
	tests := []struct {
		name     string
		replies  []reply
		want     int // deleted count returned
		requests int
		errClass fault.Class // "" for success
	}{
		{name: "no progress", replies: []reply{{body: `{"status":{"deletedCount":0,"moreData":true}}`}},
			requests: 1, errClass: fault.Transient},
		{name: "progress then none", replies: []reply{
			{body: `{"status":{"deletedCount":20,"moreData":true}}`},
			{body: `{"status":{"deletedCount":0,"moreData":true}}`},
		}, want: 20, requests: 2, errClass: fault.Transient},
		{name: "progress to the end", replies: []reply{
			{body: `{"status":{"deletedCount":20,"moreData":true}}`},
			{body: `{"status":{"deletedCount":3}}`},
		}, want: 23, requests: 2},
		{name: "nothing to delete", replies: []reply{{body: `{"status":{"deletedCount":0}}`}}, requests: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newScripted(t, tc.replies...)
			c := newTestClient(t, s.srv.URL, nil)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			n, err := c.DeleteMany(ctx, "chunks", map[string]any{"job": "j"})
			if ctx.Err() != nil {
				t.Fatalf("DeleteMany ran until its deadline, %d requests", len(s.requests()))
			}
			if got := fault.ClassOf(err); got != tc.errClass {
				t.Fatalf("error %v has class %q, want %q", err, got, tc.errClass)
			}
			if n != tc.want || len(s.requests()) != tc.requests {
				t.Fatalf("deleted %d in %d requests, want %d in %d", n, len(s.requests()), tc.want, tc.requests)
			}
		})
	}
}
