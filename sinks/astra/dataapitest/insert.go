package dataapitest

import "fmt"

func (q *request) insertOne() *result {
	key, id, doc, err := q.c.prepare(q.args["document"])
	if err == nil {
		q.c.mu.Lock()
		err = q.c.insertLocked(key, id, doc)
		q.c.mu.Unlock()
	}
	if err != nil {
		return &result{status: map[string]any{"insertedIds": []any{}}, errors: []*apiError{err}}
	}
	return &result{status: map[string]any{"insertedIds": []any{id}}}
}

// insertState is what insertMany did with one document.
type insertState int

const (
	insertOK insertState = iota
	insertFailed
	insertSkipped // ordered, after an earlier document failed
)

// insertAttempt is one document of an insertMany: shredded before any write, then its
// outcome (errIdx indexes the response's errors when state is insertFailed).
type insertAttempt struct {
	key    string
	id     any
	doc    map[string]any
	err    *apiError
	state  insertState
	errIdx int
}

func (q *request) insertMany() *result {
	docs, ok := q.args["documents"].([]any)
	if !ok {
		return errResult(errStructure("'documents' must be a JSON array"))
	}
	if len(docs) == 0 {
		return errResult(errFieldValue("command.documents", "`[]`", "must not be empty"))
	}
	if lim := q.s.cfg.MaxInsertMany; len(docs) > lim {
		return errResult(errFieldValue("command.documents", fmt.Sprintf("`[%d documents]`", len(docs)),
			fmt.Sprintf("amount of documents to insert is over the max limit (%d vs %d)", len(docs), lim)))
	}
	ordered, err := q.optBool("ordered")
	if err != nil {
		return errResult(err)
	}
	perDoc, err := q.optBool("returnDocumentResponses")
	if err != nil {
		return errResult(err)
	}
	atts := make([]insertAttempt, len(docs))
	for i, d := range docs { // every document is shredded before any write
		a := &atts[i]
		a.key, a.id, a.doc, a.err = q.c.prepare(d)
		if a.err != nil {
			if m, ok := d.(map[string]any); ok {
				a.id = m["_id"]
			}
		}
	}
	res := &result{errors: q.c.insertAll(atts, ordered)}
	if perDoc {
		res.status = map[string]any{"documentResponses": documentResponses(atts)}
		return res
	}
	ids := []any{}
	for _, a := range atts {
		if a.state == insertOK {
			ids = append(ids, a.id)
		}
	}
	res.status = map[string]any{"insertedIds": ids}
	return res
}

// insertAll stores the prepared documents under one lock, recording each one's state, and
// returns the errors in document order. Ordered, it skips every document after a failure.
func (c *collection) insertAll(atts []insertAttempt, ordered bool) []*apiError {
	var errs []*apiError
	c.mu.Lock()
	defer c.mu.Unlock()
	failed := false
	for i := range atts {
		a := &atts[i]
		if ordered && failed {
			a.state = insertSkipped
			continue
		}
		e := a.err
		if e == nil {
			e = c.insertLocked(a.key, a.id, a.doc)
		}
		if e != nil {
			a.state = insertFailed
			a.errIdx = len(errs)
			errs = append(errs, e)
			failed = true
		}
	}
	return errs
}

// documentResponses renders returnDocumentResponses: one {_id, status[, errorsIdx]} per
// document, in order.
func documentResponses(atts []insertAttempt) []any {
	resp := make([]any, len(atts))
	for i, a := range atts {
		r := map[string]any{"_id": a.id}
		switch a.state {
		case insertOK:
			r["status"] = "OK"
		case insertFailed:
			r["status"] = "ERROR"
			r["errorsIdx"] = a.errIdx
		default:
			r["status"] = "SKIPPED"
		}
		resp[i] = r
	}
	return resp
}
