package dataapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// MaxInsertMany is the most documents the Data API accepts in one insertMany (reference
// data-api.md §3.2); InsertMany sends larger inputs in chunks of this size.
const MaxInsertMany = 100

// MaxCount is the most documents countDocuments counts (reference data-api.md §3.7).
const MaxCount = 1000

type docResponse struct {
	ID        json.RawMessage `json:"_id"`
	Status    string          `json:"status"`
	ErrorsIdx *int            `json:"errorsIdx"`
}

// InsertMany inserts docs (JSON objects) into coll with unordered insertMany commands of at
// most MaxInsertMany documents each, sent one after another, and returns one outcome per
// document in order: nil when inserted, else a classified error wrapping an *APIError
// (Code DOCUMENT_ALREADY_EXISTS for a duplicate _id, SHRED_DOC_LIMIT_VIOLATION for a limit,
// a retryable code for a document the database did not write).
//
// The second result is non-nil when a request failed as a whole (after retries); documents
// of earlier requests may then have been inserted. A whole request retried after a lost
// response reports its already-written documents as DOCUMENT_ALREADY_EXISTS.
func (c *Client) InsertMany(ctx context.Context, coll string, docs []json.RawMessage) ([]error, error) {
	return c.insertMany(ctx, coll, docs, false)
}

// InsertManyUnchecked is InsertMany without the check that each document is one valid
// JSON value: the caller guarantees it, having built or checked every document itself (a
// check of each document costs about as much as the rest of the request). An invalid
// document corrupts the request, which the server then rejects as a whole.
func (c *Client) InsertManyUnchecked(ctx context.Context, coll string, docs []json.RawMessage) ([]error, error) {
	return c.insertMany(ctx, coll, docs, true)
}

// insertMany is InsertMany; valid says the caller checked every document already, so they
// need no check here.
func (c *Client) insertMany(ctx context.Context, coll string, docs []json.RawMessage, valid bool) ([]error, error) {
	out := make([]error, len(docs))
	for start := 0; start < len(docs); start += MaxInsertMany {
		end := min(start+MaxInsertMany, len(docs))
		if err := c.insertChunk(ctx, coll, docs[start:end], out[start:end], valid); err != nil {
			return nil, fmt.Errorf("insert documents %d-%d of %d: %w", start, end-1, len(docs), err)
		}
	}
	return out, nil
}

func (c *Client) insertChunk(ctx context.Context, coll string, docs []json.RawMessage, out []error, valid bool) error {
	// The documents are spliced into the request as they are, after a check that each is one
	// JSON value: re-encoding them (json.Marshal compacts every RawMessage) cost as much as the
	// rest of the request.
	n := len(`{"documents":[],"options":{"ordered":false,"returnDocumentResponses":true}}`) + len(docs)
	for _, d := range docs {
		n += len(d)
	}
	payload := make(rawPayload, 0, n)
	payload = append(payload, `{"documents":[`...)
	for i, d := range docs {
		if !valid && !json.Valid(d) {
			return fault.Permanentf(fault.Validation, "data api insertMany on %s: document %d is not valid JSON", coll, i)
		}
		if i > 0 {
			payload = append(payload, ',')
		}
		payload = append(payload, d...)
	}
	payload = append(payload, `],"options":{"ordered":false,"returnDocumentResponses":true}}`...)
	env, err := c.commandDocs(ctx, coll, "insertMany", len(docs), payload)
	if err != nil {
		return err
	}
	var st struct {
		DocumentResponses []docResponse     `json:"documentResponses"`
		InsertedIDs       []json.RawMessage `json:"insertedIds"`
	}
	if env.Status != nil {
		if err := json.Unmarshal(env.Status, &st); err != nil {
			return fault.Retry(fault.Transient, fmt.Errorf("decode insertMany status: %w", err))
		}
	}
	docErr := func(idx *int) error {
		if idx != nil && *idx >= 0 && *idx < len(env.Errors) {
			return env.Errors[*idx].classify()
		}
		if len(env.Errors) > 0 {
			return env.Errors[0].classify()
		}
		return fault.Retry(fault.Transient, errors.New("data api insertMany: document reported ERROR without an error"))
	}
	if len(st.DocumentResponses) == len(docs) {
		for i, r := range st.DocumentResponses {
			switch r.Status {
			case "OK":
				out[i] = nil
			case "ERROR":
				out[i] = docErr(r.ErrorsIdx)
			default: // SKIPPED: not attempted (ordered mode only)
				out[i] = fault.Retry(fault.Transient, fmt.Errorf("data api insertMany: document %s was not attempted (%s)", r.ID, r.Status))
			}
		}
		return nil
	}
	// A server that ignored returnDocumentResponses: insertedIds are in input order, every
	// failed document has an error naming its _id.
	next := 0
	for i, d := range docs {
		id := DocID(d)
		if next < len(st.InsertedIDs) && id != "" && idString(st.InsertedIDs[next]) == id {
			next++
			out[i] = nil
			continue
		}
		out[i] = nil
		for _, e := range env.Errors {
			for _, eid := range e.DocumentIDs {
				if eid == id {
					out[i] = e.classify()
				}
			}
		}
		if out[i] == nil {
			out[i] = docErr(nil)
		}
	}
	return nil
}

// DocID returns the _id of a JSON document: a string id decoded, any other id (an EJSON
// object, a number) as its JSON text; "" when doc is not an object or has no _id. It is
// how APIError.DocumentIDs name documents.
func DocID(doc json.RawMessage) string {
	var d struct {
		ID json.RawMessage `json:"_id"`
	}
	if json.Unmarshal(doc, &d) != nil || d.ID == nil {
		return ""
	}
	return idString(d.ID)
}

// InsertOne inserts doc (a JSON object) into coll. A failure of the document itself is a
// classified error wrapping an *APIError (DOCUMENT_ALREADY_EXISTS, a limit, …).
func (c *Client) InsertOne(ctx context.Context, coll string, doc json.RawMessage) error {
	env, err := c.commandDocs(ctx, coll, "insertOne", 1, map[string]any{"document": doc})
	if err != nil {
		return fmt.Errorf("insert one: %w", err)
	}
	if len(env.Errors) > 0 {
		return fmt.Errorf("insert one: %w", classifyAll(env.Errors))
	}
	return nil
}

// FindOneOptions are optional parts of a findOne.
type FindOneOptions struct {
	// Projection selects fields, e.g. {"content": 1} or {"*": 1}. Optional.
	Projection any
	// Sort picks which match is returned, e.g. {"created": -1}. Optional.
	Sort any
}

// filterOrEmpty returns f, or an empty filter for nil.
func filterOrEmpty(f any) any {
	if f == nil {
		return map[string]any{}
	}
	return f
}

// FindOne returns the first document of coll matching filter (nil matches any), or an
// error wrapping ErrNotFound when none does. opts may be nil.
func (c *Client) FindOne(ctx context.Context, coll string, filter any, opts *FindOneOptions) (json.RawMessage, error) {
	payload := map[string]any{"filter": filterOrEmpty(filter)}
	if opts != nil {
		if opts.Projection != nil {
			payload["projection"] = opts.Projection
		}
		if opts.Sort != nil {
			payload["sort"] = opts.Sort
		}
	}
	env, err := c.command(ctx, coll, "findOne", payload)
	if err != nil {
		return nil, fmt.Errorf("find one: %w", err)
	}
	if len(env.Errors) > 0 {
		return nil, fmt.Errorf("find one: %w", classifyAll(env.Errors))
	}
	var data struct {
		Document json.RawMessage `json:"document"`
	}
	if env.Data != nil {
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return nil, fault.Retry(fault.Transient, fmt.Errorf("find one: decode data: %w", err))
		}
	}
	if isJSONNull(data.Document) {
		return nil, fmt.Errorf("find one in %s: %w", coll, ErrNotFound)
	}
	return data.Document, nil
}

// FindOptions are optional parts of a find.
type FindOptions struct {
	// Projection selects fields. Optional.
	Projection any
	// Sort orders the results; the server then returns one page only (no paging). Optional.
	Sort any
	// Limit bounds the documents returned over all pages. 0 means no limit.
	Limit int
	// PageState resumes a previous FindPage at its next page. Optional.
	PageState string
}

// FindPage returns one page of the documents of coll matching filter (nil matches any) and
// the page state of the next page, "" after the last one. The page size is the server's.
func (c *Client) FindPage(ctx context.Context, coll string, filter any, opts FindOptions) ([]json.RawMessage, string, error) {
	payload := map[string]any{"filter": filterOrEmpty(filter)}
	if opts.Projection != nil {
		payload["projection"] = opts.Projection
	}
	if opts.Sort != nil {
		payload["sort"] = opts.Sort
	}
	o := map[string]any{}
	if opts.Limit > 0 {
		o["limit"] = opts.Limit
	}
	if opts.PageState != "" {
		o["pageState"] = opts.PageState
	}
	if len(o) > 0 {
		payload["options"] = o
	}
	env, err := c.command(ctx, coll, "find", payload)
	if err != nil {
		return nil, "", fmt.Errorf("find: %w", err)
	}
	if len(env.Errors) > 0 {
		return nil, "", fmt.Errorf("find: %w", classifyAll(env.Errors))
	}
	var data struct {
		Documents     []json.RawMessage `json:"documents"`
		NextPageState *string           `json:"nextPageState"`
	}
	if env.Data != nil {
		if err := json.Unmarshal(env.Data, &data); err != nil {
			return nil, "", fault.Retry(fault.Transient, fmt.Errorf("find: decode data: %w", err))
		}
	}
	next := ""
	if data.NextPageState != nil {
		next = *data.NextPageState
	}
	return data.Documents, next, nil
}

// Find calls fn with every document of coll matching filter (nil matches any), following
// the page state from page to page, until the last page, opts.Limit documents, or an error
// from fn (returned as is). fn runs serially on the calling goroutine; each document is
// its own slice, which fn may keep.
func (c *Client) Find(ctx context.Context, coll string, filter any, opts FindOptions, fn func(doc json.RawMessage) error) error {
	seen := 0
	for {
		docs, next, err := c.FindPage(ctx, coll, filter, opts)
		if err != nil {
			return err
		}
		for _, d := range docs {
			if opts.Limit > 0 && seen >= opts.Limit {
				return nil
			}
			seen++
			if err := fn(d); err != nil {
				return err
			}
		}
		if next == "" || next == opts.PageState || (opts.Limit > 0 && seen >= opts.Limit) {
			return nil
		}
		opts.PageState = next
	}
}

// ReplaceResult is the outcome of FindOneAndReplace.
type ReplaceResult struct {
	// Matched and Modified are the server's matchedCount and modifiedCount.
	Matched, Modified int
	// UpsertedID is the _id of a document the upsert inserted, else nil.
	UpsertedID json.RawMessage
	// Before is the document before the replacement, or nil when none matched.
	Before json.RawMessage
}

type updateStatus struct {
	MatchedCount  int             `json:"matchedCount"`
	ModifiedCount int             `json:"modifiedCount"`
	UpsertedID    json.RawMessage `json:"upsertedId"`
}

// FindOneAndReplace replaces the first document of coll matching filter with replacement
// (a JSON object; its _id, if any, must equal the matched one), inserting it when nothing
// matches and upsert is set. A retried upsert is idempotent; a retried replace may report
// Matched 1 and Modified 0.
func (c *Client) FindOneAndReplace(ctx context.Context, coll string, filter, replacement any, upsert bool) (ReplaceResult, error) {
	payload := map[string]any{
		"filter":      filterOrEmpty(filter),
		"replacement": replacement,
		"options":     map[string]any{"upsert": upsert, "returnDocument": "before"},
	}
	env, err := c.commandDocs(ctx, coll, "findOneAndReplace", 1, payload)
	if err != nil {
		return ReplaceResult{}, fmt.Errorf("find one and replace: %w", err)
	}
	if len(env.Errors) > 0 {
		return ReplaceResult{}, fmt.Errorf("find one and replace: %w", classifyAll(env.Errors))
	}
	var st updateStatus
	var data struct {
		Document json.RawMessage `json:"document"`
	}
	if err := decodeParts(env, &st, &data); err != nil {
		return ReplaceResult{}, fmt.Errorf("find one and replace: %w", err)
	}
	r := ReplaceResult{Matched: st.MatchedCount, Modified: st.ModifiedCount}
	if !isJSONNull(st.UpsertedID) {
		r.UpsertedID = st.UpsertedID
	}
	if !isJSONNull(data.Document) {
		r.Before = data.Document
	}
	return r, nil
}

// UpdateResult is the outcome of UpdateOne.
type UpdateResult struct {
	// Matched and Modified are the server's matchedCount and modifiedCount.
	Matched, Modified int
	// UpsertedID is the _id of a document the upsert inserted, else nil.
	UpsertedID json.RawMessage
}

// UpdateOne applies update (operators such as $set, $inc) to the first document of coll
// matching filter, inserting one built from filter's equalities when nothing matches and
// upsert is set. Beware: a retry after a lost response applies a non-idempotent operator
// ($inc, $push) twice.
func (c *Client) UpdateOne(ctx context.Context, coll string, filter, update any, upsert bool) (UpdateResult, error) {
	payload := map[string]any{"filter": filterOrEmpty(filter), "update": update}
	if upsert {
		payload["options"] = map[string]any{"upsert": true}
	}
	env, err := c.command(ctx, coll, "updateOne", payload)
	if err != nil {
		return UpdateResult{}, fmt.Errorf("update one: %w", err)
	}
	if len(env.Errors) > 0 {
		return UpdateResult{}, fmt.Errorf("update one: %w", classifyAll(env.Errors))
	}
	var st updateStatus
	if err := decodeParts(env, &st, nil); err != nil {
		return UpdateResult{}, fmt.Errorf("update one: %w", err)
	}
	r := UpdateResult{Matched: st.MatchedCount, Modified: st.ModifiedCount}
	if !isJSONNull(st.UpsertedID) {
		r.UpsertedID = st.UpsertedID
	}
	return r, nil
}

func decodeParts(env *envelope, status, data any) error {
	if status != nil && env.Status != nil {
		if err := json.Unmarshal(env.Status, status); err != nil {
			return fault.Retry(fault.Transient, fmt.Errorf("decode status: %w", err))
		}
	}
	if data != nil && env.Data != nil {
		if err := json.Unmarshal(env.Data, data); err != nil {
			return fault.Retry(fault.Transient, fmt.Errorf("decode data: %w", err))
		}
	}
	return nil
}

// DeleteMany deletes every document of coll matching filter, resending the command while
// the server reports more (it deletes at most 20 per call), and returns how many it
// deleted. A nil or empty filter truncates the collection and returns -1. A call that
// reports more documents but deleted none ends it with a transient error.
func (c *Client) DeleteMany(ctx context.Context, coll string, filter any) (int, error) {
	payload := map[string]any{"filter": filterOrEmpty(filter)}
	total := 0
	for {
		env, err := c.command(ctx, coll, "deleteMany", payload)
		if err != nil {
			return total, fmt.Errorf("delete many (%d deleted so far): %w", total, err)
		}
		if len(env.Errors) > 0 {
			return total, fmt.Errorf("delete many (%d deleted so far): %w", total, classifyAll(env.Errors))
		}
		var st struct {
			DeletedCount int  `json:"deletedCount"`
			MoreData     bool `json:"moreData"`
		}
		if err := decodeParts(env, &st, nil); err != nil {
			return total, fmt.Errorf("delete many: %w", err)
		}
		if st.DeletedCount < 0 {
			return -1, nil
		}
		total += st.DeletedCount
		if !st.MoreData {
			return total, nil
		}
		if st.DeletedCount == 0 {
			// More to delete but nothing deleted: resending at once would loop as fast as
			// the server answers. The caller retries later, with its own backoff.
			return total, fault.Retry(fault.Transient, fmt.Errorf("delete many (%d deleted so far): the server reports more documents but deleted none", total))
		}
	}
}

// CountDocuments counts the documents of coll matching filter (nil matches any). The
// server counts at most MaxCount; exceeded is true when there are more than upperBound
// documents or more than the server would count (then count is a lower bound). upperBound
// must be in 1..MaxCount; 0 means MaxCount.
func (c *Client) CountDocuments(ctx context.Context, coll string, filter any, upperBound int) (count int, exceeded bool, err error) {
	if upperBound == 0 {
		upperBound = MaxCount
	}
	if upperBound < 0 || upperBound > MaxCount {
		return 0, false, fault.Permanentf(fault.Validation, "count documents: upperBound %d outside 1..%d", upperBound, MaxCount)
	}
	env, err := c.command(ctx, coll, "countDocuments", map[string]any{"filter": filterOrEmpty(filter)})
	if err != nil {
		return 0, false, fmt.Errorf("count documents: %w", err)
	}
	if len(env.Errors) > 0 {
		return 0, false, fmt.Errorf("count documents: %w", classifyAll(env.Errors))
	}
	var st struct {
		Count    int  `json:"count"`
		MoreData bool `json:"moreData"`
	}
	if err := decodeParts(env, &st, nil); err != nil {
		return 0, false, fmt.Errorf("count documents: %w", err)
	}
	return st.Count, st.MoreData || st.Count > upperBound, nil
}
