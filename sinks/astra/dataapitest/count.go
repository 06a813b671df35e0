package dataapitest

func (q *request) countDocuments() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	q.c.mu.RLock()
	n := len(q.c.candidates(f, 0))
	q.c.mu.RUnlock()
	if n > maxCount {
		return &result{status: map[string]any{"count": maxCount, "moreData": true}}
	}
	return &result{status: map[string]any{"count": n}}
}

// estimatedDocumentCount counts every document of the collection, exactly (the real
// server estimates).
func (q *request) estimatedDocumentCount() *result {
	q.c.mu.RLock()
	n := len(q.c.docs)
	q.c.mu.RUnlock()
	return &result{status: map[string]any{"count": n}}
}
