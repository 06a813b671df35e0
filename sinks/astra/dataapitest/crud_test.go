package dataapitest

import (
	"fmt"
	"reflect"
	"testing"
)

func TestInsert(t *testing.T) {
	tests := []struct {
		name       string
		body       obj
		wantStatus map[string]any
		wantCodes  []string
		wantDocIDs [][]any
		wantStored []string
	}{
		{name: "insertOne", body: obj{"insertOne": obj{"document": obj{"_id": "a", "v": 1}}},
			wantStatus: obj{"insertedIds": []any{"a"}}, wantStored: []string{"a", "seed"}},
		{name: "insertOne duplicate", body: obj{"insertOne": obj{"document": obj{"_id": "seed"}}},
			wantStatus: obj{"insertedIds": []any{}}, wantCodes: []string{"DOCUMENT_ALREADY_EXISTS"}, wantDocIDs: [][]any{{"seed"}}, wantStored: []string{"seed"}},
		{name: "unordered with duplicates", body: obj{"insertMany": obj{"documents": []any{obj{"_id": "a"}, obj{"_id": "seed"}, obj{"_id": "b"}, obj{"_id": "a"}}}},
			wantStatus: obj{"insertedIds": []any{"a", "b"}}, wantCodes: []string{"DOCUMENT_ALREADY_EXISTS", "DOCUMENT_ALREADY_EXISTS"},
			wantDocIDs: [][]any{{"seed"}, {"a"}}, wantStored: []string{"a", "b", "seed"}},
		{name: "ordered stops at first failure", body: obj{"insertMany": obj{"documents": []any{obj{"_id": "a"}, obj{"_id": "seed"}, obj{"_id": "b"}}, "options": obj{"ordered": true}}},
			wantStatus: obj{"insertedIds": []any{"a"}}, wantCodes: []string{"DOCUMENT_ALREADY_EXISTS"}, wantStored: []string{"a", "seed"}},
		{name: "ordered stops at a shred failure", body: obj{"insertMany": obj{"documents": []any{obj{"_id": "a"}, obj{"_id": "x", "$bad": 1}, obj{"_id": "b"}}, "options": obj{"ordered": true}}},
			wantStatus: obj{"insertedIds": []any{"a"}}, wantCodes: []string{"SHRED_BAD_FIELD_NAME"}, wantStored: []string{"a", "seed"}},
		{name: "unordered continues past a shred failure", body: obj{"insertMany": obj{"documents": []any{obj{"_id": "x", "$bad": 1}, obj{"_id": "b"}}}},
			wantStatus: obj{"insertedIds": []any{"b"}}, wantCodes: []string{"SHRED_BAD_FIELD_NAME"}, wantDocIDs: [][]any{{"x"}}, wantStored: []string{"b", "seed"}},
		{name: "document responses", body: obj{"insertMany": obj{"documents": []any{obj{"_id": "a"}, obj{"_id": "seed"}, obj{"_id": "b"}},
			"options": obj{"ordered": true, "returnDocumentResponses": true}}},
			wantStatus: obj{"documentResponses": []any{
				map[string]any{"_id": "a", "status": "OK"},
				map[string]any{"_id": "seed", "status": "ERROR", "errorsIdx": 0.0},
				map[string]any{"_id": "b", "status": "SKIPPED"}}},
			wantCodes: []string{"DOCUMENT_ALREADY_EXISTS"}, wantStored: []string{"a", "seed"}},
		{name: "number and string ids differ", body: obj{"insertMany": obj{"documents": []any{obj{"_id": 1}, obj{"_id": "1"}, obj{"_id": 1.0}}}},
			wantStatus: obj{"insertedIds": []any{1.0, "1"}}, wantCodes: []string{"DOCUMENT_ALREADY_EXISTS"}, wantStored: []string{"1", "seed"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Config{}, "c")
			mustOK(t, call(t, s, collPath("c"), obj{"insertOne": obj{"document": obj{"_id": "seed"}}}))
			env := call(t, s, collPath("c"), tc.body)
			if !reflect.DeepEqual(env.Status, tc.wantStatus) {
				t.Fatalf("status = %v, want %v", env.Status, tc.wantStatus)
			}
			var codes []string
			for i, e := range env.Errors {
				codes = append(codes, e.ErrorCode)
				if i < len(tc.wantDocIDs) && !reflect.DeepEqual(e.DocumentIDs, tc.wantDocIDs[i]) {
					t.Fatalf("error %d documentIds = %v, want %v", i, e.DocumentIDs, tc.wantDocIDs[i])
				}
			}
			if !reflect.DeepEqual(codes, tc.wantCodes) {
				t.Fatalf("codes = %v, want %v", codes, tc.wantCodes)
			}
			var stored []string
			for id := range s.Documents(ks, "c") {
				stored = append(stored, id)
			}
			if len(stored) != len(tc.wantStored) {
				t.Fatalf("stored %v, want %v", stored, tc.wantStored)
			}
			for _, id := range tc.wantStored {
				if _, ok := s.Documents(ks, "c")[id]; !ok {
					t.Fatalf("stored %v, want %v", stored, tc.wantStored)
				}
			}
			for _, v := range s.Stats().Violations {
				if tc.name != "ordered stops at a shred failure" && tc.name != "unordered continues past a shred failure" {
					t.Fatalf("unexpected violation %q", v)
				}
			}
		})
	}
}

func TestGeneratedIDs(t *testing.T) {
	s := newServer(t, Config{})
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "plain"}}))
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "v7", "options": obj{"defaultId": obj{"type": "uuidv7"}}}}))
	env := mustOK(t, call(t, s, collPath("plain"), obj{"insertOne": obj{"document": obj{"a": 1}}}))
	if id, ok := env.Status["insertedIds"].([]any)[0].(string); !ok || len(id) != 36 {
		t.Fatalf("plain generated id: %s", env.Raw)
	}
	env = mustOK(t, call(t, s, collPath("v7"), obj{"insertOne": obj{"document": obj{"a": 1}}}))
	id, _ := env.Status["insertedIds"].([]any)[0].(map[string]any)
	if u, _ := id["$uuid"].(string); len(u) != 36 || u[14] != '7' {
		t.Fatalf("uuidv7 generated id: %s", env.Raw)
	}
}

func seedFind(t *testing.T) *Server {
	s := newServer(t, Config{}, "c")
	docs := []any{
		obj{"_id": "a", "n": 1, "s": "x", "tags": []any{"red", "blue"}, "m": obj{"k": 1}, "flag": true},
		obj{"_id": "b", "n": 2, "s": "y", "tags": []any{"green"}, "m": obj{"k": 2}},
		obj{"_id": "c", "n": 3.5, "s": "z", "m": obj{"k": 3}, "flag": false},
		obj{"_id": "d", "n": "3", "s": "x", "nil": nil},
	}
	mustOK(t, call(t, s, collPath("c"), obj{"insertMany": obj{"documents": docs}}))
	return s
}

func ids(env envelope) []string {
	var out []string
	docs, _ := env.Data["documents"].([]any)
	for _, d := range docs {
		out = append(out, fmt.Sprint(d.(map[string]any)["_id"]))
	}
	return out
}

func TestFindFilters(t *testing.T) {
	s := seedFind(t)
	tests := []struct {
		name   string
		filter obj
		want   []string
	}{
		{"all", obj{}, []string{"a", "b", "c", "d"}},
		{"implicit eq", obj{"s": "x"}, []string{"a", "d"}},
		{"number not string", obj{"n": 3.5}, []string{"c"}},
		{"string not number", obj{"n": "3"}, []string{"d"}},
		{"numeric equality across forms", obj{"n": 2.0}, []string{"b"}},
		{"dotted path", obj{"m.k": 2}, []string{"b"}},
		{"array contains", obj{"tags": "blue"}, []string{"a"}},
		{"array index", obj{"tags.0": "green"}, []string{"b"}},
		{"$eq", obj{"s": obj{"$eq": "y"}}, []string{"b"}},
		{"$ne", obj{"s": obj{"$ne": "x"}}, []string{"b", "c"}},
		{"$in", obj{"_id": obj{"$in": []any{"a", "c", "zz"}}}, []string{"a", "c"}},
		{"$in on array", obj{"tags": obj{"$in": []any{"green", "red"}}}, []string{"a", "b"}},
		{"$nin", obj{"s": obj{"$nin": []any{"x"}}}, []string{"b", "c"}},
		{"$gt numbers only", obj{"n": obj{"$gt": 1}}, []string{"b", "c"}},
		{"$gte", obj{"n": obj{"$gte": 2}}, []string{"b", "c"}},
		{"$lt strings", obj{"s": obj{"$lt": "y"}}, []string{"a", "d"}},
		{"$lte", obj{"n": obj{"$lte": 2}}, []string{"a", "b"}},
		{"$exists true", obj{"flag": obj{"$exists": true}}, []string{"a", "c"}},
		{"$exists null value", obj{"nil": obj{"$exists": true}}, []string{"d"}},
		{"$exists false", obj{"tags": obj{"$exists": false}}, []string{"c", "d"}},
		{"$and", obj{"$and": []any{obj{"s": "x"}, obj{"n": 1}}}, []string{"a"}},
		{"$or", obj{"$or": []any{obj{"s": "z"}, obj{"n": 1}}}, []string{"a", "c"}},
		{"$not", obj{"$not": obj{"s": "x"}}, []string{"b", "c"}},
		{"boolean", obj{"flag": false}, []string{"c"}},
		{"_id eq", obj{"_id": "b"}, []string{"b"}},
		{"$size", obj{"tags": obj{"$size": 2}}, []string{"a"}},
		{"$all", obj{"tags": obj{"$all": []any{"blue", "red"}}}, []string{"a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := mustOK(t, call(t, s, collPath("c"), obj{"find": obj{"filter": tc.filter}}))
			if got := ids(env); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	noViolations(t, s)
}

func TestFindShapes(t *testing.T) {
	s := seedFind(t)
	tests := []struct {
		name string
		body any
		want string // JSON of data
	}{
		{"findOne projection include", obj{"findOne": obj{"filter": obj{"_id": "a"}, "projection": obj{"s": 1}}},
			`{"document":{"_id":"a","s":"x"}}`},
		{"findOne projection nested include without _id", obj{"findOne": obj{"filter": obj{"_id": "a"}, "projection": obj{"m.k": 1, "_id": 0}}},
			`{"document":{"m":{"k":1}}}`},
		{"findOne projection exclude", obj{"findOne": obj{"filter": obj{"_id": "b"}, "projection": obj{"tags": 0, "m": 0}}},
			`{"document":{"_id":"b","n":2,"s":"y"}}`},
		{"findOne star", obj{"findOne": obj{"filter": obj{"_id": "d"}, "projection": obj{"*": 1}}},
			`{"document":{"_id":"d","n":"3","nil":null,"s":"x"}}`},
		{"findOne none", obj{"findOne": obj{"filter": obj{"_id": "zz"}}}, `{"document":null}`},
		{"findOne sort", obj{"findOne": obj{"filter": obj{"s": "x"}, "sort": obj{"_id": -1}, "projection": obj{"_id": 1}}},
			`{"document":{"_id":"d"}}`},
		{"find sort two keys in request order", `{"find": {"sort": {"s": 1, "_id": -1}, "projection": {"_id": 1}}}`,
			`{"documents":[{"_id":"d"},{"_id":"a"},{"_id":"b"},{"_id":"c"}],"nextPageState":null}`},
		{"find sort skip limit", obj{"find": obj{"sort": obj{"_id": 1}, "projection": obj{"_id": 1}, "options": obj{"skip": 1, "limit": 2}}},
			`{"documents":[{"_id":"b"},{"_id":"c"}],"nextPageState":null}`},
		{"find slice", obj{"find": obj{"filter": obj{"_id": "a"}, "projection": obj{"tags": obj{"$slice": -1}, "_id": 0}}},
			`{"documents":[{"flag":true,"m":{"k":1},"n":1,"s":"x","tags":["blue"]}],"nextPageState":null}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := mustOK(t, call(t, s, collPath("c"), tc.body))
			var want map[string]any
			mustUnmarshal(t, tc.want, &want)
			if !reflect.DeepEqual(env.Data, want) {
				t.Fatalf("data = %s\nwant %s", env.Raw, tc.want)
			}
		})
	}
	bad := []struct {
		name, code string
		body       obj
	}{
		{"skip without sort", "COMMAND_FIELD_VALUE_INVALID", obj{"find": obj{"options": obj{"skip": 1}}}},
		{"limit 0", "COMMAND_FIELD_VALUE_INVALID", obj{"find": obj{"options": obj{"limit": 0}}}},
		{"pageState with sort", "SORT_CLAUSE_INVALID", obj{"find": obj{"sort": obj{"n": 1}, "options": obj{"pageState": encodePage(pageState{after: 1, remaining: -1})}}}},
		{"sort value", "SORT_CLAUSE_VALUE_INVALID", obj{"find": obj{"sort": obj{"n": 2}}}},
		{"mixed projection", "UNSUPPORTED_PROJECTION_PARAM", obj{"find": obj{"projection": obj{"a": 1, "b": 0}}}},
		{"vector sort without vectors", "UNSUPPORTED_VECTOR_SORT_FOR_COLLECTION", obj{"find": obj{"sort": obj{"$vector": []any{1, 2}}}}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if env := call(t, s, collPath("c"), tc.body); env.code() != tc.code {
				t.Fatalf("want %s, got %s", tc.code, env.Raw)
			}
		})
	}
}

func TestVectorSort(t *testing.T) {
	s := newServer(t, Config{})
	mustOK(t, call(t, s, ksPath, obj{"createCollection": obj{"name": "v", "options": obj{"vector": obj{"dimension": 2}}}}))
	mustOK(t, call(t, s, collPath("v"), obj{"insertMany": obj{"documents": []any{
		obj{"_id": "x", "$vector": []any{1, 0}}, obj{"_id": "y", "$vector": []any{0, 1}}, obj{"_id": "novec"}}}}))
	env := mustOK(t, call(t, s, collPath("v"), obj{"find": obj{"sort": obj{"$vector": []any{0.1, 0.9}}, "options": obj{"limit": 5}}}))
	if got := ids(env); !reflect.DeepEqual(got, []string{"y", "x"}) {
		t.Fatalf("vector order %v", got)
	}
	if _, has := env.Data["documents"].([]any)[0].(map[string]any)["$vector"]; has {
		t.Fatal("$vector must be excluded by default")
	}
}
