package dataapitest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

func doc(t *testing.T, s *Server, id string) map[string]any {
	t.Helper()
	raw, ok := s.Documents(ks, "c")[id]
	if !ok {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// updateCase is a scenario of TestUpdates: one command on documents a and b.
type updateCase struct {
	name       string
	body       obj
	wantStatus string
	wantData   string // "" means no data
	wantCode   string
	checkID    string
	wantDoc    string // stored document checkID after the command; "null" for absent
}

func TestUpdates(t *testing.T) {
	tests := []updateCase{
		{name: "updateOne $set $inc $unset", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"m.x": "y"}, "$inc": obj{"n": 2}, "$unset": obj{"s": ""}}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":1}`, checkID: "a", wantDoc: `{"_id":"a","n":3,"m":{"x":"y"},"tags":["t1"]}`},
		{name: "updateOne no-op", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"n": 1}}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":0}`},
		{name: "updateOne no match", body: obj{"updateOne": obj{"filter": obj{"_id": "zz"}, "update": obj{"$set": obj{"n": 1}}}},
			wantStatus: `{"matchedCount":0,"modifiedCount":0}`, checkID: "zz", wantDoc: "null"},
		{name: "updateOne upsert", body: obj{"updateOne": obj{"filter": obj{"_id": "new", "k": "v"}, "update": obj{"$set": obj{"n": 1}, "$setOnInsert": obj{"created": true}}, "options": obj{"upsert": true}}},
			wantStatus: `{"matchedCount":0,"modifiedCount":0,"upsertedId":"new"}`, checkID: "new", wantDoc: `{"_id":"new","k":"v","n":1,"created":true}`},
		{name: "$setOnInsert ignored on match", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$setOnInsert": obj{"created": true}}, "options": obj{"upsert": true}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":0}`},
		{name: "$push $addToSet", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$push": obj{"tags": obj{"$each": []any{"t2", "t3"}}}, "$addToSet": obj{"set": obj{"$each": []any{1, 1, 2}}}}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":1}`, checkID: "a", wantDoc: `{"_id":"a","n":1,"s":"x","tags":["t1","t2","t3"],"set":[1,2]}`},
		{name: "$inc on string", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$inc": obj{"s": 1}}}}, wantCode: "UNSUPPORTED_UPDATE_OPERATION_TARGET"},
		{name: "operator on _id", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"_id": "b"}}}}, wantCode: "UNSUPPORTED_UPDATE_OPERATOR_FOR_DOC_ID"},
		{name: "unknown operator", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$pullAll": obj{"tags": []any{}}}}}, wantCode: "UNSUPPORTED_UPDATE_OPERATION"},
		{name: "update exceeding string limit", body: obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"s": string(make([]byte, 8001))}}}}, wantCode: "SHRED_DOC_LIMIT_VIOLATION", checkID: "a", wantDoc: `{"_id":"a","n":1,"s":"x","tags":["t1"]}`},
		{name: "findOneAndUpdate before", body: obj{"findOneAndUpdate": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"n": 9}}, "projection": obj{"n": 1}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":1}`, wantData: `{"document":{"_id":"a","n":1}}`},
		{name: "findOneAndUpdate after", body: obj{"findOneAndUpdate": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"n": 9}}, "projection": obj{"n": 1}, "options": obj{"returnDocument": "after"}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":1}`, wantData: `{"document":{"_id":"a","n":9}}`},
		{name: "findOneAndUpdate no match", body: obj{"findOneAndUpdate": obj{"filter": obj{"_id": "zz"}, "update": obj{"$set": obj{"n": 9}}}},
			wantStatus: `{"matchedCount":0,"modifiedCount":0}`, wantData: `{"document":null}`},
		{name: "findOneAndUpdate upsert after", body: obj{"findOneAndUpdate": obj{"filter": obj{"_id": "u"}, "update": obj{"$set": obj{"n": 9}}, "options": obj{"returnDocument": "after", "upsert": true}}},
			wantStatus: `{"matchedCount":0,"modifiedCount":0,"upsertedId":"u"}`, wantData: `{"document":{"_id":"u","n":9}}`},
		{name: "findOneAndUpdate bad returnDocument", body: obj{"findOneAndUpdate": obj{"filter": obj{"_id": "a"}, "update": obj{"$set": obj{"n": 9}}, "options": obj{"returnDocument": "later"}}}, wantCode: "COMMAND_FIELD_VALUE_INVALID"},
		{name: "findOneAndReplace", body: obj{"findOneAndReplace": obj{"filter": obj{"_id": "a"}, "replacement": obj{"r": 1}, "options": obj{"returnDocument": "after"}}},
			wantStatus: `{"matchedCount":1,"modifiedCount":1}`, wantData: `{"document":{"_id":"a","r":1}}`, checkID: "a", wantDoc: `{"_id":"a","r":1}`},
		{name: "findOneAndReplace different _id", body: obj{"findOneAndReplace": obj{"filter": obj{"_id": "a"}, "replacement": obj{"_id": "b", "r": 1}}}, wantCode: "DOCUMENT_REPLACE_DIFFERENT_DOCID"},
		{name: "findOneAndReplace upsert", body: obj{"findOneAndReplace": obj{"filter": obj{"_id": "r"}, "replacement": obj{"r": 1}, "projection": obj{"*": 0}, "options": obj{"upsert": true}}},
			wantStatus: `{"matchedCount":0,"modifiedCount":0,"upsertedId":"r"}`, wantData: `{"document":null}`, checkID: "r", wantDoc: `{"_id":"r","r":1}`},
		{name: "findOneAndDelete", body: obj{"findOneAndDelete": obj{"filter": obj{"_id": "a"}, "projection": obj{"n": 1}}},
			wantStatus: `{"deletedCount":1}`, wantData: `{"document":{"_id":"a","n":1}}`, checkID: "a", wantDoc: "null"},
		{name: "findOneAndDelete none", body: obj{"findOneAndDelete": obj{"filter": obj{"_id": "zz"}}}, wantStatus: `{"deletedCount":0}`, wantData: `{"document":null}`},
		{name: "deleteOne", body: obj{"deleteOne": obj{"filter": obj{"_id": "a"}}}, wantStatus: `{"deletedCount":1}`, checkID: "a", wantDoc: "null"},
		{name: "deleteOne no match", body: obj{"deleteOne": obj{"filter": obj{"_id": "zz"}}}, wantStatus: `{"deletedCount":0}`},
		{name: "countDocuments", body: obj{"countDocuments": obj{"filter": obj{"s": "x"}}}, wantStatus: `{"count":1}`},
		{name: "estimatedDocumentCount", body: obj{"estimatedDocumentCount": obj{}}, wantStatus: `{"count":2}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkUpdate(t, tc) })
	}
}

// checkUpdate runs tc's command on a fresh collection holding a and b and checks the
// error code, or the status, data and no violation; then the stored document checkID.
func checkUpdate(t *testing.T, tc updateCase) {
	s := newServer(t, Config{}, "c")
	mustOK(t, call(t, s, collPath("c"), obj{"insertMany": obj{"documents": []any{
		obj{"_id": "a", "n": 1, "s": "x", "tags": []any{"t1"}}, obj{"_id": "b", "n": 2}}}}))
	env := call(t, s, collPath("c"), tc.body)
	if env.code() != tc.wantCode {
		t.Fatalf("code %q, want %q: %s", env.code(), tc.wantCode, env.Raw)
	}
	if tc.wantCode == "" {
		var st map[string]any
		mustUnmarshal(t, tc.wantStatus, &st)
		if !reflect.DeepEqual(env.Status, st) {
			t.Fatalf("status %v, want %s", env.Status, tc.wantStatus)
		}
		var data map[string]any
		if tc.wantData != "" {
			mustUnmarshal(t, tc.wantData, &data)
		}
		if !reflect.DeepEqual(env.Data, data) {
			t.Fatalf("data %v, want %s", env.Data, tc.wantData)
		}
		noViolations(t, s)
	}
	if tc.checkID != "" {
		var want map[string]any
		mustUnmarshal(t, tc.wantDoc, &want)
		if got := doc(t, s, tc.checkID); !reflect.DeepEqual(got, want) {
			t.Fatalf("stored %v, want %s", got, tc.wantDoc)
		}
	}
}

func TestCurrentDate(t *testing.T) {
	s := newServer(t, Config{}, "c")
	mustOK(t, call(t, s, collPath("c"), obj{"updateOne": obj{"filter": obj{"_id": "a"}, "update": obj{"$currentDate": obj{"at": true}}, "options": obj{"upsert": true}}}))
	at, _ := doc(t, s, "a")["at"].(map[string]any)
	if ms, ok := at["$date"].(float64); !ok || ms < 1.7e12 {
		t.Fatalf("$currentDate stored %v", at)
	}
}

func TestPaging(t *testing.T) {
	s := newServer(t, Config{}, "c")
	insertN(t, s, "c", 120, func(i int) obj { return obj{"_id": fmt.Sprintf("d%03d", i), "i": i, "even": i%2 == 0} })
	tests := []struct {
		name      string
		filter    obj
		options   obj
		wantDocs  int
		wantPages int
	}{
		{"all", obj{}, obj{}, 120, 6},
		{"filtered", obj{"even": true}, obj{}, 60, 3},
		{"limit across pages", obj{}, obj{"limit": 45}, 45, 3},
		{"limit within a page", obj{}, obj{"limit": 7}, 7, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			pages := 0
			var state any
			for {
				opts := obj{}
				for k, v := range tc.options {
					opts[k] = v
				}
				if state != nil {
					opts["pageState"] = state
				}
				env := mustOK(t, call(t, s, collPath("c"), obj{"find": obj{"filter": tc.filter, "options": opts}}))
				pages++
				docs := env.Data["documents"].([]any)
				if len(docs) > 20 {
					t.Fatalf("page of %d documents", len(docs))
				}
				for _, id := range ids(env) {
					if seen[id] {
						t.Fatalf("document %s returned twice", id)
					}
					seen[id] = true
				}
				if _, has := env.Data["nextPageState"]; !has {
					t.Fatal("nextPageState missing (must be null on the last page)")
				}
				if state = env.Data["nextPageState"]; state == nil {
					break
				}
			}
			if len(seen) != tc.wantDocs || pages != tc.wantPages {
				t.Fatalf("%d documents in %d pages, want %d in %d", len(seen), pages, tc.wantDocs, tc.wantPages)
			}
		})
	}
}

func TestManyOperations(t *testing.T) {
	s := newServer(t, Config{}, "c")
	insertN(t, s, "c", 1050, func(i int) obj { return obj{"_id": i, "g": i % 2} })

	env := mustOK(t, call(t, s, collPath("c"), obj{"countDocuments": obj{"filter": obj{}}}))
	if num(env.Status["count"]) != 1000 || env.Status["moreData"] != true {
		t.Fatalf("count over the cap: %s", env.Raw)
	}
	env = mustOK(t, call(t, s, collPath("c"), obj{"countDocuments": obj{"filter": obj{"g": 1}}}))
	if num(env.Status["count"]) != 525 || env.Status["moreData"] != nil {
		t.Fatalf("count under the cap: %s", env.Raw)
	}

	// updateMany processes one page per call and hands back a page state.
	calls, matched := 0, 0
	var state any
	for {
		body := obj{"filter": obj{"g": 1}, "update": obj{"$set": obj{"done": true}}}
		if state != nil {
			body["options"] = obj{"pageState": state}
		}
		env := mustOK(t, call(t, s, collPath("c"), obj{"updateMany": body}))
		calls++
		matched += num(env.Status["matchedCount"])
		if env.Status["moreData"] != true {
			if _, has := env.Status["nextPageState"]; has {
				t.Fatalf("nextPageState without moreData: %s", env.Raw)
			}
			break
		}
		state = env.Status["nextPageState"]
	}
	if matched != 525 || calls != 27 {
		t.Fatalf("updateMany matched %d in %d calls, want 525 in 27", matched, calls)
	}
	env = mustOK(t, call(t, s, collPath("c"), obj{"countDocuments": obj{"filter": obj{"done": true}}}))
	if num(env.Status["count"]) != 525 {
		t.Fatalf("updated: %s", env.Raw)
	}

	// deleteMany removes at most 20 per call and says moreData until done.
	calls, deleted := 0, 0
	for {
		env := mustOK(t, call(t, s, collPath("c"), obj{"deleteMany": obj{"filter": obj{"g": 1}}}))
		calls++
		n := num(env.Status["deletedCount"])
		if n > 20 {
			t.Fatalf("deleteMany deleted %d in one call", n)
		}
		deleted += n
		if env.Status["moreData"] != true {
			break
		}
	}
	if deleted != 525 || calls != 27 {
		t.Fatalf("deleteMany deleted %d in %d calls, want 525 in 27", deleted, calls)
	}
	env = mustOK(t, call(t, s, collPath("c"), obj{"deleteMany": obj{}}))
	if num(env.Status["deletedCount"]) != -1 || len(s.Documents(ks, "c")) != 0 {
		t.Fatalf("truncate: %s, %d left", env.Raw, len(s.Documents(ks, "c")))
	}
	noViolations(t, s)
}
