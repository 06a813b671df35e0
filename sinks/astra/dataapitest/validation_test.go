package dataapitest

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

func TestTransportAndAuth(t *testing.T) {
	s := newServer(t, Config{}, "c")
	body := obj{"countDocuments": obj{"filter": obj{}}}
	tests := []struct {
		name     string
		method   string
		path     string
		body     any
		hdr      []string
		wantHTTP int
		wantCode string // "" with wantHTTP 200: success
	}{
		{name: "ok", path: collPath("c"), body: body, wantHTTP: 200},
		{name: "ok without api/json prefix", path: "/v1/" + ks + "/c", body: body, wantHTTP: 200},
		{name: "content type with charset", path: collPath("c"), body: body, hdr: []string{"Content-Type", "application/json; charset=utf-8"}, wantHTTP: 200},
		{name: "no token", path: collPath("c"), body: body, hdr: []string{"Token", ""}, wantHTTP: 401, wantCode: "MISSING_AUTHENTICATION_TOKEN"},
		{name: "bad token", path: collPath("c"), body: body, hdr: []string{"Token", "AstraCS:wrong"}, wantHTTP: 401, wantCode: "UNAUTHENTICATED_REQUEST"},
		{name: "wrong content type", path: collPath("c"), body: body, hdr: []string{"Content-Type", "text/plain"}, wantHTTP: 415, wantCode: "UNSUPPORTED_CONTENT_TYPE"},
		{name: "unknown path", path: "/api/json/v2/x", body: body, wantHTTP: 404},
		{name: "GET", method: http.MethodGet, path: collPath("c"), body: "", wantHTTP: 405},
		{name: "invalid JSON", path: collPath("c"), body: `{"countDocuments": {`, wantHTTP: 200, wantCode: "REQUEST_NOT_JSON"},
		{name: "duplicate key", path: collPath("c"), body: `{"countDocuments": {"filter": {"a": 1, "a": 2}}}`, wantHTTP: 200, wantCode: "REQUEST_NOT_JSON"},
		{name: "two commands", path: collPath("c"), body: `{"countDocuments": {}, "estimatedDocumentCount": {}}`, wantHTTP: 200, wantCode: "REQUEST_STRUCTURE_MISMATCH"},
		{name: "unknown command", path: collPath("c"), body: obj{"frobnicate": obj{}}, wantHTTP: 200, wantCode: "COMMAND_UNKNOWN"},
		{name: "replaceOne is not a server command", path: collPath("c"), body: obj{"replaceOne": obj{"filter": obj{}, "replacement": obj{}}}, wantHTTP: 200, wantCode: "COMMAND_UNKNOWN"},
		{name: "unknown field", path: collPath("c"), body: obj{"countDocuments": obj{"filtre": obj{}}}, wantHTTP: 200, wantCode: "COMMAND_FIELD_UNKNOWN"},
		{name: "unknown option", path: collPath("c"), body: obj{"find": obj{"options": obj{"limitt": 1}}}, wantHTTP: 200, wantCode: "COMMAND_FIELD_UNKNOWN"},
		{name: "options on no-options command", path: collPath("c"), body: obj{"insertOne": obj{"document": obj{}, "options": obj{"ordered": true}}}, wantHTTP: 200, wantCode: "COMMAND_ACCEPTS_NO_OPTIONS"},
		{name: "unknown collection", path: collPath("nope"), body: body, wantHTTP: 200, wantCode: "UNKNOWN_COLLECTION_OR_TABLE"},
		{name: "unknown keyspace", path: "/api/json/v1/other/c", body: body, wantHTTP: 200, wantCode: "UNKNOWN_KEYSPACE"},
		{name: "keyspace command on collection", path: collPath("c"), body: obj{"createCollection": obj{"name": "x"}}, wantHTTP: 200, wantCode: "COMMAND_UNKNOWN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetStats()
			m := tc.method
			if m == "" {
				m = http.MethodPost
			}
			env, err := callCtx(context.Background(), s, m, tc.path, tc.body, tc.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if env.HTTP != tc.wantHTTP || env.code() != tc.wantCode {
				t.Fatalf("got HTTP %d %q, want %d %q: %s", env.HTTP, env.code(), tc.wantHTTP, tc.wantCode, env.Raw)
			}
			wantViolation := tc.wantHTTP != 200 || tc.wantCode != ""
			if v := s.Stats().Violations; (len(v) > 0) != wantViolation {
				t.Fatalf("violations %q, want violation: %v", v, wantViolation)
			}
			if tc.wantCode != "" {
				e := env.Errors[0]
				if e.ID == "" || e.Title == "" || e.Message == "" || e.Family != "REQUEST" {
					t.Fatalf("incomplete error object: %+v", e)
				}
				if env.Data != nil || env.Status != nil {
					t.Fatalf("whole-request failure must carry only errors: %s", env.Raw)
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	s := New(Config{})
	t.Cleanup(s.Close)
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "c", "options": obj{"indexing": obj{"deny": []any{"body", "meta.raw"}}}}}))
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "allow", "options": obj{"indexing": obj{"allow": []any{"title"}}}}}))
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "vec", "options": obj{"vector": obj{"dimension": 3}}}}))

	long := strings.Repeat("x", 8001)
	tests := []struct {
		name     string
		coll     string
		body     any
		wantCode string
		wantMsg  string
	}{
		{name: "insertMany 100 ok", coll: "c", body: insertManyN(100)},
		{name: "insertMany 101", coll: "c", body: insertManyN(101), wantCode: "COMMAND_FIELD_VALUE_INVALID", wantMsg: "(101 vs 100)"},
		{name: "string 8000 bytes ok", coll: "c", body: insertOneCmd(obj{"_id": "s8000", "t": strings.Repeat("é", 4000)})},
		{name: "string 8001 bytes", coll: "c", body: insertOneCmd(obj{"_id": "s", "t": long}), wantCode: "SHRED_DOC_LIMIT_VIOLATION",
			wantMsg: "indexed String value (field 't') length (8001 bytes) exceeds maximum allowed (8000 bytes)"},
		{name: "nested string 8001 bytes", coll: "c", body: insertOneCmd(obj{"_id": "s", "m": obj{"t": []any{long}}}), wantCode: "SHRED_DOC_LIMIT_VIOLATION", wantMsg: "field 'm.t'"},
		{name: "long string on denied field ok", coll: "c", body: insertOneCmd(obj{"_id": "denied", "body": strings.Repeat("x", 100_000)})},
		{name: "long string on denied nested path ok", coll: "c", body: insertOneCmd(obj{"_id": "denied2", "meta": obj{"raw": long}})},
		{name: "long string on sibling of denied path", coll: "c", body: insertOneCmd(obj{"_id": "s", "meta": obj{"other": long}}), wantCode: "SHRED_DOC_LIMIT_VIOLATION"},
		{name: "allow list: unlisted field exempt", coll: "allow", body: insertOneCmd(obj{"_id": "a1", "body": long})},
		{name: "allow list: listed field checked", coll: "allow", body: insertOneCmd(obj{"_id": "a2", "title": long}), wantCode: "SHRED_DOC_LIMIT_VIOLATION"},
		{name: "depth 16 ok", coll: "c", body: insertOneCmd(deepDoc(16))},
		{name: "depth 17", coll: "c", body: insertOneCmd(deepDoc(17)), wantCode: "SHRED_DOC_LIMIT_VIOLATION", wantMsg: "document depth exceeds maximum allowed (16)"},
		{name: "array 1000 ok", coll: "c", body: insertOneCmd(obj{"_id": "a1000", "a": intArray(1000)})},
		{name: "array 1001", coll: "c", body: insertOneCmd(obj{"_id": "a", "a": intArray(1001)}), wantCode: "SHRED_DOC_LIMIT_VIOLATION", wantMsg: "(1001) exceeds maximum allowed (1000)"},
		{name: "array 1001 on denied field ok", coll: "c", body: insertOneCmd(obj{"_id": "adenied", "body": intArray(1001)})},
		{name: "document over 4M chars", coll: "c", body: insertOneCmd(obj{"_id": "big", "body": strings.Repeat("x", 4_000_000)}), wantCode: "SHRED_DOC_LIMIT_VIOLATION", wantMsg: "document size"},
		{name: "number over 100 chars", coll: "c", body: `{"insertOne":{"document":{"n":` + strings.Repeat("1", 101) + `}}}`, wantCode: "SHRED_DOC_LIMIT_VIOLATION"},
		{name: "$ field name", coll: "c", body: insertOneCmd(obj{"_id": "d", "a": obj{"$x": 1}}), wantCode: "SHRED_BAD_FIELD_NAME"},
		{name: "empty field name", coll: "c", body: insertOneCmd(obj{"_id": "d", "": 1}), wantCode: "SHRED_BAD_FIELD_NAME"},
		{name: "object _id", coll: "c", body: insertOneCmd(obj{"_id": obj{"a": 1}}), wantCode: "SHRED_BAD_DOCID_TYPE"},
		{name: "empty string _id", coll: "c", body: insertOneCmd(obj{"_id": ""}), wantCode: "SHRED_BAD_DOCID_VALUE"},
		{name: "$date value ok", coll: "c", body: insertOneCmd(obj{"_id": "date", "at": obj{"$date": 1700000000000}})},
		{name: "$in 100 ok", coll: "c", body: obj{"find": obj{"filter": obj{"_id": obj{"$in": numberStrings(100)}}}}},
		{name: "$in 101", coll: "c", body: obj{"find": obj{"filter": obj{"_id": obj{"$in": numberStrings(101)}}}}, wantCode: "FILTER_INVALID_EXPRESSION", wantMsg: "'$in' operator must have at most 100 values"},
		{name: "$nin 101", coll: "c", body: obj{"find": obj{"filter": obj{"x": obj{"$nin": numberStrings(101)}}}}, wantCode: "FILTER_INVALID_EXPRESSION"},
		{name: "filter on denied path", coll: "c", body: obj{"find": obj{"filter": obj{"body": "x"}}}, wantCode: "FILTER_PATH_UNINDEXED"},
		{name: "unknown filter operator", coll: "c", body: obj{"find": obj{"filter": obj{"a": obj{"$regex": "x"}}}}, wantCode: "FILTER_UNSUPPORTED_OPERATOR"},
		{name: "vector ok", coll: "vec", body: insertOneCmd(obj{"_id": "v1", "$vector": []any{0.1, 0.2, 0.3}})},
		{name: "vector dimension mismatch", coll: "vec", body: insertOneCmd(obj{"_id": "v2", "$vector": []any{0.1, 0.2}}), wantCode: "VECTOR_SIZE_MISMATCH"},
		{name: "vector on non-vector collection", coll: "c", body: insertOneCmd(obj{"_id": "v3", "$vector": []any{0.1}}), wantCode: "VECTOR_SEARCH_NOT_SUPPORTED"},
		{name: "vector not numbers", coll: "vec", body: insertOneCmd(obj{"_id": "v4", "$vector": []any{"a", "b", "c"}}), wantCode: "SHRED_BAD_VECTOR_VALUE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetStats()
			env := call(t, s, collPath(tc.coll), tc.body)
			if env.HTTP != 200 {
				t.Fatalf("HTTP %d", env.HTTP)
			}
			if env.code() != tc.wantCode {
				t.Fatalf("want %q, got %s", tc.wantCode, env.Raw[:min(len(env.Raw), 600)])
			}
			if tc.wantCode == "" {
				noViolations(t, s)
				return
			}
			if !strings.Contains(env.Errors[0].Message, tc.wantMsg) {
				t.Fatalf("message %q does not contain %q", env.Errors[0].Message, tc.wantMsg)
			}
			if len(s.Stats().Violations) == 0 {
				t.Fatal("no violation recorded")
			}
		})
	}
	if _, ok := s.Documents(ks, "c")["s"]; ok {
		t.Fatal("a rejected document was stored")
	}
	if _, ok := s.Documents(ks, "c")["denied2"]; !ok {
		t.Fatal("an accepted document is missing")
	}
}

// deepDoc is a document nested levels deep (the root is level 1).
func deepDoc(levels int) obj {
	d := obj{"leaf": 1}
	for range levels - 2 {
		d = obj{"n": d}
	}
	return obj{"_id": "deep", "n": d}
}

// intArray is the array 0..n-1.
func intArray(n int) []any {
	a := make([]any, n)
	for i := range a {
		a[i] = i
	}
	return a
}

// insertOneCmd is the insertOne command of doc.
func insertOneCmd(doc obj) obj { return obj{"insertOne": obj{"document": doc}} }

// insertManyN is an insertMany command of n documents with ids 0..n-1.
func insertManyN(n int) obj {
	docs := make([]any, n)
	for i := range docs {
		docs[i] = obj{"_id": i}
	}
	return obj{"insertMany": obj{"documents": docs}}
}

// numberStrings is the array "0".."n-1".
func numberStrings(n int) []any {
	a := make([]any, n)
	for i := range a {
		a[i] = fmt.Sprint(i)
	}
	return a
}
