package dataapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// groupDocs returns n documents {"_id": "<grp>_<i>", "grp": grp, "n": i}.
func groupDocs(grp string, n int) []json.RawMessage {
	docs := make([]json.RawMessage, n)
	for i := range docs {
		docs[i] = json.RawMessage(fmt.Sprintf(`{"_id":"%s_%04d","grp":%q,"n":%d}`, grp, i, grp, i))
	}
	return docs
}

// runCommandTests exercises every client command on a fresh collection coll, which it
// creates and finally deletes. It runs against the double and, in the contract tests,
// against a real database.
func runCommandTests(t *testing.T, c *Client, coll string) {
	t.Run("CreateCollection", func(t *testing.T) { cmdCreateCollection(t, c, coll) })
	t.Cleanup(func() {
		// t.Context is cancelled by the time cleanups run.
		if err := c.DeleteCollection(context.Background(), coll); err != nil {
			t.Errorf("cleanup: delete collection %s: %v", coll, err)
		}
	})
	t.Run("FindCollections", func(t *testing.T) { cmdFindCollections(t, c, coll) })
	t.Run("InsertOne", func(t *testing.T) { cmdInsertOne(t, c, coll) })
	t.Run("InsertMany", func(t *testing.T) { cmdInsertMany(t, c, coll) })
	t.Run("FindOne", func(t *testing.T) { cmdFindOne(t, c, coll) })
	t.Run("Find", func(t *testing.T) { cmdFind(t, c, coll) })
	t.Run("FindOneAndReplace", func(t *testing.T) { cmdFindOneAndReplace(t, c, coll) })
	t.Run("UpdateOne", func(t *testing.T) { cmdUpdateOne(t, c, coll) })
	t.Run("CountDocuments", func(t *testing.T) { cmdCountDocuments(t, c, coll) })
	t.Run("DeleteMany", func(t *testing.T) { cmdDeleteMany(t, c, coll) })
	t.Run("DeleteCollection", func(t *testing.T) { cmdDeleteCollection(t, c, coll) })
}

// The steps of runCommandTests, in order: each relies on the documents the earlier ones stored.

// cmdCreateCollection creates coll with embedding left out of the index (the options
// cmdFindCollections expects).
func cmdCreateCollection(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	opts := CollectionOptions{IndexingDeny: []string{"embedding"}}
	for i := range 2 { // idempotent
		if err := c.CreateCollection(ctx, coll, opts); err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
	}
	err := c.CreateCollection(ctx, coll, CollectionOptions{IndexingDeny: []string{"other"}})
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeExistingCollectionSettings || !fault.IsPermanent(err) {
		t.Fatalf("create with other options = %v, want permanent %s", err, CodeExistingCollectionSettings)
	}
}

func cmdFindCollections(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	infos, err := c.FindCollections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(infos, func(ci CollectionInfo) bool { return ci.Name == coll })
	if i < 0 {
		t.Fatalf("collection %s not listed in %+v", coll, infos)
	}
	var o struct {
		Indexing struct {
			Deny []string `json:"deny"`
		} `json:"indexing"`
	}
	if err := json.Unmarshal(infos[i].Options, &o); err != nil || !slices.Equal(o.Indexing.Deny, []string{"embedding"}) {
		t.Fatalf("options %s, want indexing deny [embedding] (%v)", infos[i].Options, err)
	}
}

func cmdInsertOne(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	doc := json.RawMessage(`{"_id":"one","grp":"single"}`)
	if err := c.InsertOne(ctx, coll, doc); err != nil {
		t.Fatal(err)
	}
	err := c.InsertOne(ctx, coll, doc)
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != CodeDocumentAlreadyExists || !fault.IsPermanent(err) {
		t.Fatalf("duplicate insertOne = %v, want permanent %s", err, CodeDocumentAlreadyExists)
	}
}

func cmdInsertMany(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	docs := groupDocs("many", 250) // three requests
	docs = append(docs, json.RawMessage(`{"_id":"one","grp":"dup"}`))
	out, err := c.InsertMany(ctx, coll, docs)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(docs) {
		t.Fatalf("%d outcomes for %d docs", len(out), len(docs))
	}
	for i, o := range out[:250] {
		if o != nil {
			t.Fatalf("document %d: %v", i, o)
		}
	}
	var ae *APIError
	if !errors.As(out[250], &ae) || ae.Code != CodeDocumentAlreadyExists {
		t.Fatalf("duplicate outcome = %v", out[250])
	}
}

func cmdFindOne(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	doc, err := c.FindOne(ctx, coll, map[string]any{"_id": "many_0007"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		N int `json:"n"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || d.N != 7 {
		t.Fatalf("findOne = %s", doc)
	}
	doc, err = c.FindOne(ctx, coll, map[string]any{"grp": "many"}, &FindOneOptions{Sort: map[string]any{"n": -1}, Projection: map[string]any{"n": 1}})
	if err != nil || !strings.Contains(string(doc), `"n":249`) || strings.Contains(string(doc), "grp") {
		t.Fatalf("findOne sorted and projected = %s, %v", doc, err)
	}
	if _, err := c.FindOne(ctx, coll, map[string]any{"_id": "missing"}, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("findOne missing = %v, want ErrNotFound", err)
	}
}

func cmdFind(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	filter := map[string]any{"grp": "many"}
	first, next, err := c.FindPage(ctx, coll, filter, FindOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) == 0 || len(first) >= 250 || next == "" {
		t.Fatalf("first page: %d docs, next %q; want a partial page and a page state", len(first), next)
	}
	seen := map[string]bool{}
	err = c.Find(ctx, coll, filter, FindOptions{}, func(doc json.RawMessage) error {
		id := DocID(doc)
		if seen[id] {
			return fmt.Errorf("document %s seen twice", id)
		}
		seen[id] = true
		return nil
	})
	if err != nil || len(seen) != 250 {
		t.Fatalf("find saw %d documents, %v; want 250", len(seen), err)
	}
	n := 0
	if err := c.Find(ctx, coll, filter, FindOptions{Limit: 30}, func(json.RawMessage) error { n++; return nil }); err != nil || n != 30 {
		t.Fatalf("find with limit 30 saw %d, %v", n, err)
	}
	in := map[string]any{"_id": map[string]any{"$in": []string{"many_0001", "many_0002", "absent"}}}
	n = 0
	if err := c.Find(ctx, coll, in, FindOptions{}, func(json.RawMessage) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("find $in saw %d, %v", n, err)
	}
}

func cmdFindOneAndReplace(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	r, err := c.FindOneAndReplace(ctx, coll, map[string]any{"_id": "rep"}, map[string]any{"_id": "rep", "v": 1}, true)
	if err != nil || idString(r.UpsertedID) != "rep" || r.Before != nil {
		t.Fatalf("upsert = %+v, %v", r, err)
	}
	r, err = c.FindOneAndReplace(ctx, coll, map[string]any{"_id": "rep", "v": map[string]any{"$lte": 1}}, map[string]any{"_id": "rep", "v": 2}, false)
	if err != nil || r.Matched != 1 || r.Modified != 1 || !strings.Contains(string(r.Before), `"v":1`) {
		t.Fatalf("replace = %+v, %v", r, err)
	}
	r, err = c.FindOneAndReplace(ctx, coll, map[string]any{"_id": "rep", "v": map[string]any{"$lte": 1}}, map[string]any{"_id": "rep", "v": 3}, false)
	if err != nil || r.Matched != 0 {
		t.Fatalf("conditional replace that must not match = %+v, %v", r, err)
	}
}

func cmdUpdateOne(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	r, err := c.UpdateOne(ctx, coll, map[string]any{"_id": "many_0003"}, map[string]any{"$set": map[string]any{"state": "done"}}, false)
	if err != nil || r.Matched != 1 || r.Modified != 1 {
		t.Fatalf("update = %+v, %v", r, err)
	}
	r, err = c.UpdateOne(ctx, coll, map[string]any{"_id": "upd"}, map[string]any{"$inc": map[string]any{"tries": 1}}, true)
	if err != nil || idString(r.UpsertedID) != "upd" {
		t.Fatalf("upsert = %+v, %v", r, err)
	}
	doc, err := c.FindOne(ctx, coll, map[string]any{"_id": "upd"}, nil)
	if err != nil || !strings.Contains(string(doc), `"tries":1`) {
		t.Fatalf("upserted = %s, %v", doc, err)
	}
}

func cmdCountDocuments(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	tests := []struct {
		name         string
		upper        int
		wantCount    int
		wantExceeded bool
	}{
		{"under bound", 1000, 250, false},
		{"over bound", 100, 250, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, exceeded, err := c.CountDocuments(ctx, coll, map[string]any{"grp": "many"}, tt.upper)
			if err != nil || n != tt.wantCount || exceeded != tt.wantExceeded {
				t.Fatalf("count = %d, %v, %v; want %d, %v", n, exceeded, err, tt.wantCount, tt.wantExceeded)
			}
		})
	}
	t.Run("server cap", func(t *testing.T) {
		out, err := c.InsertMany(ctx, coll, groupDocs("cap", MaxCount+1))
		if err != nil || errors.Join(out...) != nil {
			t.Fatalf("insert: %v %v", err, errors.Join(out...))
		}
		n, exceeded, err := c.CountDocuments(ctx, coll, map[string]any{"grp": "cap"}, 0)
		if err != nil || n != MaxCount || !exceeded {
			t.Fatalf("count = %d, %v, %v; want %d, true", n, exceeded, err, MaxCount)
		}
	})
	if _, _, err := c.CountDocuments(ctx, coll, nil, MaxCount+1); err == nil || !fault.IsPermanent(err) {
		t.Fatalf("upper bound over the cap: %v, want a permanent error", err)
	}
}

func cmdDeleteMany(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	n, err := c.DeleteMany(ctx, coll, map[string]any{"grp": "many"})
	if err != nil || n != 250 {
		t.Fatalf("deleteMany = %d, %v; want 250 (in several calls)", n, err)
	}
	if n, _, _ := c.CountDocuments(ctx, coll, map[string]any{"grp": "many"}, 0); n != 0 {
		t.Fatalf("%d documents left", n)
	}
	n, err = c.DeleteMany(ctx, coll, nil)
	if err != nil || n != -1 {
		t.Fatalf("truncate = %d, %v; want -1", n, err)
	}
	if n, _, _ := c.CountDocuments(ctx, coll, nil, 0); n != 0 {
		t.Fatalf("%d documents left after truncate", n)
	}
}

func cmdDeleteCollection(t *testing.T, c *Client, coll string) {
	ctx := t.Context()
	for i := range 2 { // deleting a missing collection is success
		if err := c.DeleteCollection(ctx, coll); err != nil {
			t.Fatalf("delete %d: %v", i, err)
		}
	}
	infos, err := c.FindCollections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(infos, func(ci CollectionInfo) bool { return ci.Name == coll }) {
		t.Fatalf("collection %s still listed", coll)
	}
}

func TestCommands(t *testing.T) {
	// Re-creating with other options is the one request a correct client never sends.
	srv := dataapitest.Start(t, dataapitest.Config{}, CodeExistingCollectionSettings)
	runCommandTests(t, newDoubleClient(t, srv), "cmds")
	st := srv.Stats()
	// 250 + 1 documents in 3 requests; the 1001 of the cap test in 11.
	if st.Requests["insertMany"] != 3+11 {
		t.Errorf("insertMany requests = %d, want 14 (chunks of 100)", st.Requests["insertMany"])
	}
	if st.Requests["deleteMany"] < 1+250/20 {
		t.Errorf("deleteMany requests = %d, want one per 20 documents", st.Requests["deleteMany"])
	}
	if st.Requests["find"] < 2+250/20 {
		t.Errorf("find requests = %d, want one per page", st.Requests["find"])
	}
}
