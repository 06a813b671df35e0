package dataapitest

import (
	"slices"
	"strings"
	"sync"
)

type stored struct {
	seq uint64
	id  any
	doc map[string]any // immutable once stored: updates replace it
}

type collection struct {
	ks, name string
	opts     collOptions

	mu   sync.RWMutex // guards docs and seq
	docs map[string]*stored
	seq  uint64
}

// prepare validates a document to insert and fills in a generated _id.
func (c *collection) prepare(v any) (string, any, map[string]any, *apiError) {
	doc, ok := v.(map[string]any)
	if !ok {
		return "", nil, nil, errDocType(strings.ToLower(jsonType(v)))
	}
	id, has := doc["_id"]
	if !has {
		id = c.newID()
		doc["_id"] = id
	}
	key, err := idKey(id)
	if err != nil {
		return "", nil, nil, err
	}
	if err := c.checkDoc(doc); err != nil {
		if has {
			return "", nil, nil, err.withIDs(id)
		}
		return "", nil, nil, err
	}
	return key, id, doc, nil
}

func (c *collection) newID() any {
	switch c.opts.defaultID {
	case "objectId":
		return map[string]any{"$objectId": newObjectID()}
	case "uuid":
		return map[string]any{"$uuid": newUUID(4)}
	case "uuidv6", "uuidv7":
		return map[string]any{"$uuid": newUUID(7)}
	}
	return newUUID(4)
}

// insertLocked stores doc unless its _id exists. The caller holds c.mu.
func (c *collection) insertLocked(key string, id any, doc map[string]any) *apiError {
	if _, dup := c.docs[key]; dup {
		return errAlreadyExists(id)
	}
	c.seq++
	c.docs[key] = &stored{seq: c.seq, id: id, doc: doc}
	return nil
}

// candidates returns the stored documents matching f, in storage order (or sorted by
// spec's regular keys). The caller holds c.mu.
func (c *collection) candidates(f map[string]any, after uint64) []*stored {
	var out []*stored
	if ids, ok := idLookup(f); ok {
		seen := map[string]bool{}
		for _, id := range ids {
			k, err := idKey(id)
			if err != nil || seen[k] {
				continue
			}
			seen[k] = true
			if d, ok := c.docs[k]; ok && d.seq > after {
				out = append(out, d)
			}
		}
	} else {
		for _, d := range c.docs {
			if d.seq > after && matches(d.doc, f) {
				out = append(out, d)
			}
		}
	}
	slices.SortFunc(out, func(a, b *stored) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	return out
}

func mustKey(id any) string {
	k, _ := idKey(id)
	return k
}
