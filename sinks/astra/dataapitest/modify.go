package dataapitest

// modification is a parsed updateOne, findOneAndUpdate or findOneAndReplace: exactly one
// of update and replacement is set; proj and after only for the findOneAnd* commands.
type modification struct {
	filter      map[string]any
	sort        *sortSpec
	upsert      bool
	proj        *projection
	after       bool // returnDocument "after"
	update      map[string]any
	replacement map[string]any
}

// modification parses and checks the clauses and options of a single-document update or
// replace, in the order the server reports their errors.
func (q *request) modification() (m modification, err *apiError) {
	if m.filter, err = q.filter(); err != nil {
		return m, err
	}
	if m.sort, err = q.sort(); err != nil {
		return m, err
	}
	if m.upsert, err = q.optBool("upsert"); err != nil {
		return m, err
	}
	if q.cmd != "updateOne" {
		if m.proj, err = q.projection(); err != nil {
			return m, err
		}
		if m.after, err = q.returnAfter(); err != nil {
			return m, err
		}
	}
	if q.cmd == "findOneAndReplace" {
		m.replacement, err = q.obj("replacement")
		return m, err
	}
	if m.update, err = q.obj("update"); err != nil {
		return m, err
	}
	return m, validateUpdate(m.update)
}

func (q *request) modifyOne() *result {
	m, err := q.modification()
	if err != nil {
		return errResult(err)
	}
	c := q.c
	c.mu.Lock()
	defer c.mu.Unlock()
	list, _ := c.ordered(c.candidates(m.filter, 0), m.sort)
	status := map[string]any{"matchedCount": 0, "modifiedCount": 0}
	var before, now map[string]any
	if len(list) > 0 {
		d := list[0]
		status["matchedCount"] = 1
		before = d.doc
		var changed bool
		if m.replacement != nil {
			now, changed, err = c.replaceLocked(d, m.replacement)
		} else {
			now, changed, err = c.updateLocked(d, m.update)
		}
		if err != nil {
			return errResult(err)
		}
		if changed {
			status["modifiedCount"] = 1
		}
	} else if m.upsert {
		var id any
		if id, now, err = c.upsertLocked(m.filter, m.update, m.replacement); err != nil {
			return errResult(err)
		}
		status["upsertedId"] = id
	}
	if q.cmd == "updateOne" {
		return &result{status: status}
	}
	out := before
	if m.after {
		out = now
	}
	var rendered any
	if out != nil {
		rendered = m.proj.apply(out)
	}
	return &result{data: map[string]any{"document": rendered}, status: status}
}

func (q *request) updateMany() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	update, err := q.obj("update")
	if err != nil {
		return errResult(err)
	}
	if err := validateUpdate(update); err != nil {
		return errResult(err)
	}
	upsert, err := q.optBool("upsert")
	if err != nil {
		return errResult(err)
	}
	ps, err := q.optString("pageState")
	if err != nil {
		return errResult(err)
	}
	page, err := startPage(ps, pageState{remaining: -1})
	if err != nil {
		return errResult(err)
	}
	c := q.c
	c.mu.Lock()
	defer c.mu.Unlock()
	list := c.candidates(f, page.after)
	n := q.s.cfg.PageSize
	status := map[string]any{}
	if len(list) > n {
		status["moreData"] = true
		status["nextPageState"] = encodePage(pageState{after: list[n-1].seq, remaining: -1})
		list = list[:n]
	}
	matched, modified := 0, 0
	res := &result{status: status}
	for _, d := range list {
		matched++
		_, changed, e := c.updateLocked(d, update)
		if e != nil {
			res.errors = append(res.errors, e)
		} else if changed {
			modified++
		}
	}
	status["matchedCount"] = matched
	status["modifiedCount"] = modified
	if matched == 0 && upsert && ps == "" {
		id, _, err := c.upsertLocked(f, update, nil)
		if err != nil {
			return errResult(err)
		}
		status["upsertedId"] = id
	}
	return res
}

// updateLocked applies update to a copy of d's document and stores it (see storeLocked).
// Errors carry d's _id. The caller holds c.mu.
func (c *collection) updateLocked(d *stored, update map[string]any) (map[string]any, bool, *apiError) {
	doc := deepCopy(d.doc).(map[string]any)
	if err := applyUpdate(doc, update, false); err != nil {
		return nil, false, err.withIDs(d.id)
	}
	changed, err := c.storeLocked(d, doc)
	return doc, changed, err
}

// replaceLocked stores a copy of replacement, with d's _id, in d's place (see
// storeLocked); a replacement with another _id is refused. The caller holds c.mu.
func (c *collection) replaceLocked(d *stored, replacement map[string]any) (map[string]any, bool, *apiError) {
	if rid, ok := replacement["_id"]; ok {
		if k, e := idKey(rid); e != nil || k != mustKey(d.id) {
			return nil, false, errReplaceDifferentID(rid, d.id)
		}
	}
	doc := deepCopy(replacement).(map[string]any)
	doc["_id"] = d.id
	changed, err := c.storeLocked(d, doc)
	return doc, changed, err
}

// storeLocked checks doc against the shredder's limits and, if it differs from d's
// document, stores it in d's place (keeping d's position); it reports whether it did.
// Errors carry d's _id. The caller holds c.mu.
func (c *collection) storeLocked(d *stored, doc map[string]any) (bool, *apiError) {
	if err := c.checkDoc(doc); err != nil {
		return false, err.withIDs(d.id)
	}
	if equal(doc, d.doc) {
		return false, nil
	}
	c.docs[mustKey(d.id)] = &stored{seq: d.seq, id: d.id, doc: doc}
	return true, nil
}

// upsertLocked inserts the document an upsert makes when nothing matched: the replacement
// (taking _id from the filter's equality when it has none), or the filter's equalities
// with update applied as an insert. The caller holds c.mu.
func (c *collection) upsertLocked(f, update, replacement map[string]any) (any, map[string]any, *apiError) {
	doc := map[string]any{}
	if replacement != nil {
		doc = deepCopy(replacement).(map[string]any)
		if _, ok := doc["_id"]; !ok {
			seed := map[string]any{}
			upsertSeed(f, seed)
			if id, ok := seed["_id"]; ok {
				doc["_id"] = id
			}
		}
	} else {
		upsertSeed(f, doc)
		if err := applyUpdate(doc, update, true); err != nil {
			return nil, nil, err
		}
	}
	key, id, doc, err := c.prepare(doc)
	if err != nil {
		return nil, nil, err
	}
	if err := c.insertLocked(key, id, doc); err != nil {
		return nil, nil, err
	}
	return id, doc, nil
}
