package dataapitest

import (
	"encoding/json"
	"slices"
	"strings"
)

type sortKey struct {
	path string
	segs []string
	desc bool
}

// sortSpec is a parsed sort clause: regular keys in order, or a vector.
type sortSpec struct {
	keys   []sortKey
	vector []float64
}

func (q *request) sort() (*sortSpec, *apiError) {
	m, err := q.obj("sort")
	if err != nil || len(m) == 0 {
		return nil, err
	}
	if _, ok := m["$vectorize"]; ok {
		return nil, reqErr("SORT", "UNSUPPORTED_VECTORIZE_SORT_FOR_COLLECTION", "Vectorize sorting not supported by the collection",
			"The command attempted to use vectorize sort (keyword '$vectorize' or '$hybrid') against a collection that does not have vectorize enabled.\n\nThe collection %s.%s does not have vectorize enabled.", q.ks, q.coll)
	}
	if v, ok := m["$vector"]; ok {
		if len(m) != 1 {
			return nil, errSort("vector search can not be combined with other sort expressions")
		}
		if q.c.opts.dimension == 0 {
			return nil, errVectorSortUnsupported(q.ks, q.coll)
		}
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return nil, errSortValue("$vector", "vector search needs a non-empty array of numbers")
		}
		vec := make([]float64, len(arr))
		for i, e := range arr {
			n, ok := e.(json.Number)
			if !ok {
				return nil, errSortValue("$vector", "vector search needs a non-empty array of numbers")
			}
			vec[i] = parseNum(n).f
		}
		if len(vec) != q.c.opts.dimension {
			return nil, errVectorMismatch(q.c.opts.dimension, len(vec))
		}
		return &sortSpec{vector: vec}, nil
	}
	keys := orderedKeys(q.spans["sort"])
	spec := &sortSpec{}
	for _, k := range keys {
		v := m[k]
		if k == "" || strings.HasPrefix(k, "$") {
			return nil, reqErr("SORT", "SORT_CLAUSE_PATH_INVALID", "Path used in sort clause not valid",
				"Path '%s' used in sort clause not valid: path must be non-empty and not start with '$'.\n\nResend the command with valid sort clause.", k)
		}
		n, ok := v.(json.Number)
		if !ok || (cmpNum(n, "1") != 0 && cmpNum(n, "-1") != 0) {
			return nil, errSortValue(k, "sort ordering value can only be `1` for ascending or `-1` for descending (not `"+jsonText(v)+"`)")
		}
		if !q.c.opts.index.indexed(k) {
			return nil, errSortUnindexed(k)
		}
		spec.keys = append(spec.keys, sortKey{path: k, segs: splitPath(k), desc: cmpNum(n, "-1") == 0})
	}
	return spec, nil
}

// ordered applies a sort clause to candidates (stable, so ties keep storage order) and
// returns similarity scores for a vector sort.
func (c *collection) ordered(list []*stored, spec *sortSpec) ([]*stored, map[*stored]float64) {
	if spec == nil {
		return list, nil
	}
	if spec.vector != nil {
		sims := map[*stored]float64{}
		kept := list[:0:0]
		for _, d := range list {
			if s, ok := c.similarity(d.doc, spec.vector); ok {
				sims[d] = s
				kept = append(kept, d)
			}
		}
		slices.SortStableFunc(kept, func(a, b *stored) int {
			switch {
			case sims[a] > sims[b]:
				return -1
			case sims[a] < sims[b]:
				return 1
			}
			return 0
		})
		return kept, sims
	}
	slices.SortStableFunc(list, func(a, b *stored) int {
		for _, k := range spec.keys {
			r := sortCompare(first(a.doc, k.segs), first(b.doc, k.segs))
			if k.desc {
				r = -r
			}
			if r != 0 {
				return r
			}
		}
		return 0
	})
	return list, nil
}
