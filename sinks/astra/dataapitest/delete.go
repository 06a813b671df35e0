package dataapitest

func (q *request) deleteOne() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	spec, err := q.sort()
	if err != nil {
		return errResult(err)
	}
	var proj *projection
	if q.cmd == "findOneAndDelete" {
		if proj, err = q.projection(); err != nil {
			return errResult(err)
		}
	}
	c := q.c
	c.mu.Lock()
	defer c.mu.Unlock()
	list, _ := c.ordered(c.candidates(f, 0), spec)
	var gone *stored
	if len(list) > 0 {
		gone = list[0]
		delete(c.docs, mustKey(gone.id))
	}
	n := 0
	if gone != nil {
		n = 1
	}
	res := &result{status: map[string]any{"deletedCount": n}}
	if q.cmd == "findOneAndDelete" {
		var doc any
		if gone != nil {
			doc = proj.apply(gone.doc)
		}
		res.data = map[string]any{"document": doc}
	}
	return res
}

func (q *request) deleteMany() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	c := q.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(f) == 0 {
		clear(c.docs)
		return &result{status: map[string]any{"deletedCount": -1}}
	}
	list := c.candidates(f, 0)
	status := map[string]any{}
	if len(list) > maxDeleteMany {
		list = list[:maxDeleteMany]
		status["moreData"] = true
	}
	for _, d := range list {
		delete(c.docs, mustKey(d.id))
	}
	status["deletedCount"] = len(list)
	return &result{status: status}
}
