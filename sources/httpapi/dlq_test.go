package httpapi_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

var _ httpapi.DeadLetterService = (*dlq.Store)(nil)

// fakeDLQ is a DeadLetterService over a map that records every call.
type fakeDLQ struct {
	mu      sync.Mutex
	entries map[string]dlq.Entry // guarded by mu
	calls   []string             // guarded by mu
	filters []dlq.Filter         // guarded by mu: filters of List and Purge
	replays []dlq.ReplayRequest  // guarded by mu
}

func newFakeDLQ(es ...dlq.Entry) *fakeDLQ {
	f := &fakeDLQ{entries: map[string]dlq.Entry{}}
	for _, e := range es {
		f.entries[e.Envelope.ID] = e
	}
	return f
}

func (f *fakeDLQ) record(call string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
}

func (f *fakeDLQ) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDLQ) List(ctx context.Context, flt dlq.Filter, cursor string, limit int) (dlq.Page, error) {
	f.record(fmt.Sprintf("list %q %d", cursor, limit))
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	if cursor == "bad" {
		return dlq.Page{}, fmt.Errorf("%w: cursor %q is not one this API returned", dlq.ErrInvalid, cursor)
	}
	var p dlq.Page
	for _, e := range f.entries {
		p.Entries = append(p.Entries, e)
	}
	if limit == 1 {
		p.Entries, p.NextCursor = p.Entries[:1], "7"
	}
	return p, nil
}

func (f *fakeDLQ) Get(ctx context.Context, id string) (dlq.Entry, error) {
	f.record("get " + id)
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	if !ok {
		return dlq.Entry{}, fmt.Errorf("get dead letter %s: %w", id, dlq.ErrNotFound)
	}
	return e, nil
}

func (f *fakeDLQ) Payload(ctx context.Context, id string) ([]byte, error) {
	f.record("payload " + id)
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.entries[id]
	if !ok {
		return nil, fmt.Errorf("get dead letter %s: %w", id, dlq.ErrNotFound)
	}
	return e.Envelope.Payload, nil
}

func (f *fakeDLQ) Delete(ctx context.Context, id string) error {
	f.record("delete " + id)
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.entries[id]; !ok {
		return fmt.Errorf("delete dead letter %s: %w", id, dlq.ErrNotFound)
	}
	delete(f.entries, id)
	return nil
}

func (f *fakeDLQ) Purge(ctx context.Context, flt dlq.Filter) (int, error) {
	f.record("purge")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.filters = append(f.filters, flt)
	n := len(f.entries)
	f.entries = map[string]dlq.Entry{}
	return n, nil
}

func (f *fakeDLQ) Replay(ctx context.Context, req dlq.ReplayRequest) (dlq.ReplayResult, error) {
	f.record("replay")
	if err := req.Validate(); err != nil {
		return dlq.ReplayResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.replays = append(f.replays, req)
	res := dlq.ReplayResult{DryRun: req.DryRun, Replayed: []dlq.Replayed{}, Skipped: []dlq.Skipped{}, Failed: []dlq.Failed{}}
	for _, id := range req.IDs {
		if _, ok := f.entries[id]; ok {
			res.Replayed = append(res.Replayed, dlq.Replayed{ID: id, Subject: "sluice.v1.chunks.dev", MsgID: "j/c/replay1/" + id, Replay: 1, Seq: 9})
		} else {
			res.Skipped = append(res.Skipped, dlq.Skipped{ID: id, Reason: dlq.ReasonNotFound})
		}
	}
	return res, nil
}

func testEntry(id string, payload string) dlq.Entry {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	return dlq.Entry{
		Envelope: schemas.DeadLetterEnvelope{
			ID: id, Subject: "sluice.v1.chunks.dev", Headers: map[string][]string{"Sluice-Job": {"job-1"}},
			Payload: []byte(payload), Error: schemas.DeadLetterError{Class: "rejected", Message: "refused", Sink: "docstore"},
			Attempts: 1, FirstFailure: at, LastFailure: at, Stream: "SLUICE_CHUNKS", StreamSeq: 3, JobID: "job-1", DeadLetteredAt: at,
		},
		Seq:      7,
		StoredAt: at,
	}
}

func TestDLQAuth(t *testing.T) {
	fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{"a":1}`))
	h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake}).Handler()
	tests := []struct {
		name, method, target, token, body string
		want                              int
	}{
		{"list without token", "GET", "/v1/dlq", "", "", http.StatusUnauthorized},
		{"get without token", "GET", "/v1/dlq/SLUICE_CHUNKS-3", "", "", http.StatusUnauthorized},
		{"replay without token", "POST", "/v1/dlq/replay", "", `{"ids":["SLUICE_CHUNKS-3"]}`, http.StatusUnauthorized},
		{"replay with bad token", "POST", "/v1/dlq/replay", "nope-nope-nope-nope", `{"ids":["SLUICE_CHUNKS-3"]}`, http.StatusUnauthorized},
		{"replay with read", "POST", "/v1/dlq/replay", readTok, `{"ids":["SLUICE_CHUNKS-3"]}`, http.StatusForbidden},
		{"replay with write", "POST", "/v1/dlq/replay", writeTok, `{"ids":["SLUICE_CHUNKS-3"]}`, http.StatusForbidden},
		{"purge without token", "DELETE", "/v1/dlq?job=job-1", "", "", http.StatusUnauthorized},
		{"purge with read", "DELETE", "/v1/dlq?job=job-1", readTok, "", http.StatusForbidden},
		{"purge with write", "DELETE", "/v1/dlq?job=job-1", writeTok, "", http.StatusForbidden},
		{"delete with read", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", readTok, "", http.StatusForbidden},
		{"delete with write", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", writeTok, "", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, h, tc.method, tc.target, tc.token, strings.NewReader(tc.body), map[string]string{"Content-Type": "application/json"})
			decodeProblem(t, rec, tc.want)
		})
	}
	// Nothing reached the service, and the entry is still there.
	if calls := fake.Calls(); len(calls) != 0 {
		t.Fatalf("rejected requests reached the service: %v", calls)
	}
	if rec := serve(t, h, "GET", "/v1/dlq/SLUICE_CHUNKS-3", readTok, nil, nil); rec.Code != http.StatusOK {
		t.Fatalf("get with read: %d %s", rec.Code, rec.Body)
	}
}

func TestDLQListAndGet(t *testing.T) {
	fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{"chunk_id":"c1"}`))
	h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake}).Handler()

	rec := serve(t, h, "GET", "/v1/dlq?job=job-1&subject=sluice.v1.chunks.dev&error_class=rejected&since=2025-01-01T00:00:00Z&until=2026-01-01T00:00:00.5Z&limit=50&cursor=3", readTok, nil, nil)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("list: %d %s", rec.Code, rec.Body)
	}
	var page struct {
		Entries    []map[string]any `json:"entries"`
		NextCursor *string          `json:"next_cursor"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.NextCursor != nil || !strings.Contains(rec.Body.String(), `"next_cursor":null`) {
		t.Fatalf("page = %s", rec.Body)
	}
	e := page.Entries[0]
	if e["id"] != "SLUICE_CHUNKS-3" || e["payload"] != base64.StdEncoding.EncodeToString([]byte(`{"chunk_id":"c1"}`)) ||
		e["dlq_seq"] != float64(7) || e["stored_at"] != "2025-03-04T05:06:07Z" || e["job_id"] != "job-1" {
		t.Fatalf("entry = %v", e)
	}
	if pj, ok := e["payload_json"].(map[string]any); !ok || pj["chunk_id"] != "c1" {
		t.Fatalf("payload_json = %v", e["payload_json"])
	}
	want := dlq.Filter{Job: "job-1", Subject: "sluice.v1.chunks.dev", ErrorClass: "rejected",
		Since: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2026, 1, 1, 0, 0, 0, 5e8, time.UTC)}
	if got := fake.filters[0]; got != want {
		t.Fatalf("filter = %+v, want %+v", got, want)
	}
	if calls := fake.Calls(); calls[0] != `list "3" 50` {
		t.Fatalf("calls = %v", calls)
	}

	// A short page carries its cursor.
	rec = serve(t, h, "GET", "/v1/dlq?limit=1", readTok, nil, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"next_cursor":"7"`) {
		t.Fatalf("list limit=1: %d %s", rec.Code, rec.Body)
	}

	// Get: the same shape; a payload that is not JSON has no payload_json.
	rec = serve(t, h, "GET", "/v1/dlq/SLUICE_CHUNKS-3", readTok, nil, nil)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"payload_json":{"chunk_id":"c1"}`) {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
	fake.entries["SLUICE_CHUNKS-4"] = testEntry("SLUICE_CHUNKS-4", "not json")
	rec = serve(t, h, "GET", "/v1/dlq/SLUICE_CHUNKS-4", readTok, nil, nil)
	if rec.Code != http.StatusOK || strings.Contains(rec.Body.String(), "payload_json") {
		t.Fatalf("get non-JSON payload: %d %s", rec.Code, rec.Body)
	}
	p := decodeProblem(t, serve(t, h, "GET", "/v1/dlq/SLUICE_CHUNKS-99", readTok, nil, nil), http.StatusNotFound)
	if !strings.Contains(p.Detail, "SLUICE_CHUNKS-99") {
		t.Fatalf("404 detail = %q", p.Detail)
	}

	bad := []struct{ name, target string }{
		{"limit zero", "/v1/dlq?limit=0"},
		{"limit too big", "/v1/dlq?limit=1001"},
		{"limit not a number", "/v1/dlq?limit=x"},
		{"since not a time", "/v1/dlq?since=yesterday"},
		{"until before since", "/v1/dlq?since=2025-01-02T00:00:00Z&until=2025-01-01T00:00:00Z"},
		{"bad subject", "/v1/dlq?subject=a..b"},
		{"bad cursor", "/v1/dlq?cursor=bad"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			decodeProblem(t, serve(t, h, "GET", tc.target, readTok, nil, nil), http.StatusBadRequest)
		})
	}
}

func TestDLQReplayDeletePurge(t *testing.T) {
	fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{}`), testEntry("SLUICE_CHUNKS-5", `{}`))
	h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake}).Handler()
	post := func(body string) (int, string) {
		rec := serve(t, h, "POST", "/v1/dlq/replay", adminTok, strings.NewReader(body), map[string]string{"Content-Type": "application/json"})
		return rec.Code, rec.Body.String()
	}

	code, body := post(`{"ids":["SLUICE_CHUNKS-3","SLUICE_CHUNKS-9"],"dry_run":true,"rate":5,"max_replays":2}`)
	var res dlq.ReplayResult
	if err := json.Unmarshal([]byte(body), &res); code != http.StatusOK || err != nil {
		t.Fatalf("replay: %d %s", code, body)
	}
	if !res.DryRun || len(res.Replayed) != 1 || res.Replayed[0].ID != "SLUICE_CHUNKS-3" || len(res.Skipped) != 1 || res.Skipped[0].Reason != dlq.ReasonNotFound {
		t.Fatalf("result = %s", body)
	}
	for _, k := range []string{`"replayed":[`, `"skipped":[`, `"failed":[]`, `"dry_run":true`, `"msg_id":`} {
		if !strings.Contains(body, k) {
			t.Errorf("result %s lacks %s", body, k)
		}
	}
	if got := fake.replays[0]; got.Rate != 5 || got.MaxReplays != 2 || !got.DryRun || got.Filter != nil {
		t.Fatalf("request = %+v", got)
	}

	code, body = post(`{"filter":{"job":"job-1","error_class":"rejected","since":"2025-01-01T00:00:00Z"}}`)
	if code != http.StatusOK {
		t.Fatalf("replay by filter: %d %s", code, body)
	}
	if f := fake.replays[1].Filter; f == nil || f.Job != "job-1" || f.ErrorClass != "rejected" || !f.Since.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("filter = %+v", fake.replays[1].Filter)
	}

	bad := []struct{ name, body string }{
		{"empty", ``},
		{"not json", `{`},
		{"neither ids nor filter", `{"dry_run":true}`},
		{"both", `{"ids":["a"],"filter":{"job":"j"}}`},
		{"unknown field", `{"ids":["a"],"force":true}`},
		{"bad time", `{"filter":{"since":"soon"}}`},
		{"negative rate", `{"ids":["a"],"rate":-1}`},
		{"two objects", `{"ids":["a"]} {}`},
		{"wrong type", `{"ids":"a"}`},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, h, "POST", "/v1/dlq/replay", adminTok, strings.NewReader(tc.body), nil)
			decodeProblem(t, rec, http.StatusBadRequest)
		})
	}
	big := `{"ids":["` + strings.Repeat("x", 2<<20) + `"]}`
	decodeProblem(t, serve(t, h, "POST", "/v1/dlq/replay", adminTok, strings.NewReader(big), nil), http.StatusRequestEntityTooLarge)

	// Delete: 204, then 404.
	if rec := serve(t, h, "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", adminTok, nil, nil); rec.Code != http.StatusNoContent || rec.Body.Len() != 0 {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	decodeProblem(t, serve(t, h, "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", adminTok, nil, nil), http.StatusNotFound)

	// Purge needs a filter.
	decodeProblem(t, serve(t, h, "DELETE", "/v1/dlq", adminTok, nil, nil), http.StatusBadRequest)
	decodeProblem(t, serve(t, h, "DELETE", "/v1/dlq?limit=5", adminTok, nil, nil), http.StatusBadRequest)
	if len(fake.entries) != 1 {
		t.Fatalf("a rejected purge removed entries")
	}
	rec := serve(t, h, "DELETE", "/v1/dlq?error_class=rejected", adminTok, nil, nil)
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"purged":1}` {
		t.Fatalf("purge: %d %s", rec.Code, rec.Body)
	}
	if f := fake.filters[len(fake.filters)-1]; f != (dlq.Filter{ErrorClass: "rejected"}) {
		t.Fatalf("purge filter = %+v", f)
	}
}

func TestDLQNotConfigured(t *testing.T) {
	h := newServer(t, httpapi.Config{Tokens: testTokens()}).Handler()
	tests := []struct{ method, target, body string }{
		{"GET", "/v1/dlq", ""},
		{"GET", "/v1/dlq/x", ""},
		{"POST", "/v1/dlq/replay", `{"ids":["x"]}`},
		{"DELETE", "/v1/dlq/x", ""},
		{"DELETE", "/v1/dlq?job=j", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.target, func(t *testing.T) {
			decodeProblem(t, serve(t, h, tc.method, tc.target, adminTok, strings.NewReader(tc.body), nil), http.StatusNotImplemented)
		})
	}
	// Authentication still comes first.
	decodeProblem(t, serve(t, h, "GET", "/v1/dlq", "", nil, nil), http.StatusUnauthorized)
}

// The CLI kept its own copy of the dead-letter wire type (cmd/sluice dlqEntry, payload as a
// string, no dlq_seq or stored_at); clients now decode httpapi.DeadLetter, so what the server
// encodes must decode back whole into it.
func TestDeadLetterRoundTrip(t *testing.T) {
	item := 7
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		payload  []byte
		wantJSON bool
	}{
		{"JSON payload", []byte(`{"chunk_id":"c1"}`), true},
		{"binary payload", []byte{0xff, 0x00, 'x'}, false},
		{"empty payload", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := dlq.Entry{Seq: 42, StoredAt: at, Envelope: schemas.DeadLetterEnvelope{
				ID: "SLUICE_CHUNKS-1", Subject: "sluice.v1.chunks.dev", Payload: tc.payload,
				Headers:  map[string][]string{"Sluice-Job": {"j1"}},
				Error:    schemas.DeadLetterError{Class: "validation", Message: "empty content"},
				Attempts: 1, FirstFailure: at, LastFailure: at, Stream: "SLUICE_CHUNKS", StreamSeq: 1,
				JobID: "j1", Item: &item, DeadLetteredAt: at,
			}}
			b, err := json.Marshal(httpapi.NewDeadLetter(e))
			if err != nil {
				t.Fatal(err)
			}
			var got httpapi.DeadLetter
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.ID != e.Envelope.ID || got.DLQSeq != 42 || !got.StoredAt.Equal(at) || got.Error != e.Envelope.Error ||
				got.Item == nil || *got.Item != item || !bytes.Equal(got.Payload, tc.payload) || got.Headers["Sluice-Job"][0] != "j1" {
				t.Fatalf("round trip lost fields:\n%s\n%+v", b, got)
			}
			if (got.PayloadJSON != nil) != tc.wantJSON {
				t.Fatalf("payload_json = %s, want present %v", got.PayloadJSON, tc.wantJSON)
			}
		})
	}
}
