package dataapitest

import (
	"reflect"
	"testing"
)

func TestCollectionCommands(t *testing.T) {
	s := newServer(t, Config{MaxCollections: 3})
	vec := obj{"vector": obj{"dimension": 3, "metric": "dot_product"}, "indexing": obj{"deny": []any{"body"}}}
	tests := []struct {
		name      string
		body      any
		wantCode  string
		wantOK    bool
		violation bool
	}{
		{name: "create", body: obj{"createCollection": obj{"name": "a"}}, wantOK: true},
		{name: "create again same options", body: obj{"createCollection": obj{"name": "a", "options": obj{}}}, wantOK: true},
		{name: "create with options", body: obj{"createCollection": obj{"name": "v", "options": vec}}, wantOK: true},
		{name: "same options idempotent", body: obj{"createCollection": obj{"name": "v", "options": vec}}, wantOK: true},
		{name: "different settings", body: obj{"createCollection": obj{"name": "v", "options": obj{"vector": obj{"dimension": 4}}}},
			wantCode: "EXISTING_COLLECTION_DIFFERENT_SETTINGS", violation: true},
		{name: "bad name", body: obj{"createCollection": obj{"name": "bad-name"}}, wantCode: "UNSUPPORTED_SCHEMA_NAME", violation: true},
		{name: "allow and deny", body: obj{"createCollection": obj{"name": "x", "options": obj{"indexing": obj{"allow": []any{"a"}, "deny": []any{"b"}}}}},
			wantCode: "INVALID_INDEXING_DEFINITION", violation: true},
		{name: "third collection", body: obj{"createCollection": obj{"name": "c"}}, wantOK: true},
		{name: "too many", body: obj{"createCollection": obj{"name": "d"}}, wantCode: "TOO_MANY_COLLECTIONS", violation: true},
		{name: "delete", body: obj{"deleteCollection": obj{"name": "c"}}, wantOK: true},
		{name: "delete missing is ok", body: obj{"deleteCollection": obj{"name": "nope"}}, wantOK: true},
		{name: "collection command on keyspace", body: obj{"insertOne": obj{"document": obj{}}}, wantCode: "COMMAND_UNKNOWN", violation: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetStats()
			env := call(t, s, ksPath, tc.body)
			if tc.wantOK {
				mustOK(t, env)
				if num(env.Status["ok"]) != 1 {
					t.Fatalf("want status.ok 1: %s", env.Raw)
				}
			} else if env.code() != tc.wantCode {
				t.Fatalf("want %s, got %s", tc.wantCode, env.Raw)
			}
			if got := len(s.Stats().Violations) > 0; got != tc.violation {
				t.Fatalf("violation recorded = %v, want %v (%q)", got, tc.violation, s.Stats().Violations)
			}
		})
	}
	if got := s.Collections(ks); !reflect.DeepEqual(got, []string{"a", "v"}) {
		t.Fatalf("Collections = %v", got)
	}
	env := mustOK(t, call(t, s, ksPath, obj{"findCollections": obj{}}))
	if !reflect.DeepEqual(env.Status["collections"], []any{"a", "v"}) {
		t.Fatalf("findCollections: %s", env.Raw)
	}
	env = mustOK(t, call(t, s, ksPath, obj{"findCollections": obj{"options": obj{"explain": true}}}))
	colls := env.Status["collections"].([]any)
	v := colls[1].(map[string]any)
	opts := v["options"].(map[string]any)
	if v["name"] != "v" || num(opts["vector"].(map[string]any)["dimension"]) != 3 ||
		!reflect.DeepEqual(opts["indexing"], map[string]any{"deny": []any{"body"}}) {
		t.Fatalf("findCollections explain: %s", env.Raw)
	}
	if env := call(t, s, "/api/json/v1/nokeyspace", obj{"findCollections": obj{}}); env.code() != "UNKNOWN_KEYSPACE" {
		t.Fatalf("unknown keyspace: %s", env.Raw)
	}
}
