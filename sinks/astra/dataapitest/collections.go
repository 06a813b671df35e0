package dataapitest

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

var nameRE = regexp.MustCompile(`^\w{1,48}$`)

func (q *request) createCollection() *result {
	name, ok := q.args["name"].(string)
	if !ok || !nameRE.MatchString(name) {
		n, _ := q.args["name"].(string)
		return errResult(errSchemaName("collection", n))
	}
	opts, err := parseCollOptions(q.opts)
	if err != nil {
		return errResult(err)
	}
	s := q.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keyspaces[q.ks]
	if old, ok := ks[name]; ok {
		if !old.opts.equal(opts) {
			return errResult(errDifferentSettings(name))
		}
		return &result{status: map[string]any{"ok": 1}}
	}
	total := 0
	for _, m := range s.keyspaces {
		total += len(m)
	}
	if total >= s.cfg.MaxCollections {
		return errResult(errTooManyCollections(name, s.cfg.MaxCollections, total))
	}
	ks[name] = &collection{ks: q.ks, name: name, opts: opts, docs: map[string]*stored{}}
	return &result{status: map[string]any{"ok": 1}}
}

func (q *request) findCollections() *result {
	explain, err := q.optBool("explain")
	if err != nil {
		return errResult(err)
	}
	s := q.s
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := slices.Sorted(maps.Keys(s.keyspaces[q.ks]))
	out := make([]any, 0, len(names))
	for _, n := range names {
		if explain {
			out = append(out, map[string]any{"name": n, "options": s.keyspaces[q.ks][n].opts.explain()})
		} else {
			out = append(out, n)
		}
	}
	return &result{status: map[string]any{"collections": out}}
}

func (q *request) deleteCollection() *result {
	name, ok := q.args["name"].(string)
	if !ok || !nameRE.MatchString(name) {
		n, _ := q.args["name"].(string)
		return errResult(errSchemaName("collection", n))
	}
	q.s.mu.Lock()
	delete(q.s.keyspaces[q.ks], name)
	q.s.mu.Unlock()
	return &result{status: map[string]any{"ok": 1}}
}

type collOptions struct {
	dimension int
	metric    string
	index     indexRule
	defaultID string
	raw       map[string]any // as given, for findCollections explain
}

func (o collOptions) equal(p collOptions) bool {
	return o.dimension == p.dimension && o.metric == p.metric && o.defaultID == p.defaultID &&
		o.index.set == p.index.set && o.index.allow == p.index.allow &&
		slices.Equal(slices.Sorted(slices.Values(o.index.paths)), slices.Sorted(slices.Values(p.index.paths)))
}

func (o collOptions) explain() map[string]any {
	out := map[string]any{}
	if o.dimension > 0 {
		out["vector"] = map[string]any{"dimension": o.dimension, "metric": o.metric, "sourceModel": "other"}
	}
	if o.index.set {
		key := "deny"
		if o.index.allow {
			key = "allow"
		}
		out["indexing"] = map[string]any{key: o.index.paths}
	}
	if o.defaultID != "" {
		out["defaultId"] = map[string]any{"type": o.defaultID}
	}
	return out
}

// parseCollOptions reads createCollection's options: vector, indexing and defaultId.
func parseCollOptions(m map[string]any) (collOptions, *apiError) {
	o := collOptions{raw: m}
	var err *apiError
	if v, ok := m["vector"]; ok && v != nil {
		if o.dimension, o.metric, err = parseVectorOptions(v); err != nil {
			return o, err
		}
	}
	if v, ok := m["indexing"]; ok && v != nil {
		if o.index, err = parseIndexing(v); err != nil {
			return o, err
		}
	}
	if v, ok := m["defaultId"]; ok && v != nil {
		dm, ok := v.(map[string]any)
		t, _ := dm["type"].(string)
		if !ok || !slices.Contains([]string{"objectId", "uuid", "uuidv6", "uuidv7"}, t) {
			return o, errCreateOptions("'defaultId.type' must be one of objectId, uuid, uuidv6, uuidv7; got " + jsonText(dm["type"]))
		}
		o.defaultID = t
	}
	return o, nil
}

// parseVectorOptions reads the "vector" option: its dimension (or size) and metric (or
// function, default cosine). A vectorize service is refused: the double embeds nothing.
func parseVectorOptions(v any) (dimension int, metric string, _ *apiError) {
	vm, ok := v.(map[string]any)
	if !ok {
		return 0, "", errCreateOptions("'vector' must be an object")
	}
	for k := range vm {
		switch k {
		case "dimension", "size", "metric", "function", "sourceModel", "service":
		default:
			return 0, "", errCreateOptions("unknown 'vector' field '" + k + "'")
		}
	}
	if _, ok := vm["service"]; ok {
		return 0, "", errCreateOptions("vectorize 'service' is not supported by dataapitest")
	}
	d := vm["dimension"]
	if d == nil {
		d = vm["size"]
	}
	n, ok := d.(json.Number)
	if !ok || !parseNum(n).isInt || parseNum(n).i <= 0 || parseNum(n).i > maxVectorLen {
		return 0, "", errCreateOptions(fmt.Sprintf("'dimension' must be an integer between 1 and %d, got %s", maxVectorLen, jsonText(d)))
	}
	mv := vm["metric"]
	if mv == nil {
		mv = vm["function"]
	}
	if mv == nil {
		return int(parseNum(n).i), "cosine", nil
	}
	s, _ := mv.(string)
	if s != "cosine" && s != "dot_product" && s != "euclidean" {
		return 0, "", errCreateOptions("'metric' must be one of cosine, dot_product, euclidean; got " + jsonText(mv))
	}
	return int(parseNum(n).i), s, nil
}

// parseIndexing reads the "indexing" option: exactly one of allow or deny, a list of
// distinct, non-empty paths that do not start with '$' (except $vector).
func parseIndexing(v any) (indexRule, *apiError) {
	im, ok := v.(map[string]any)
	if !ok {
		return indexRule{}, errIndexingDef("'indexing' must be an object")
	}
	allow, hasA := im["allow"]
	deny, hasD := im["deny"]
	if hasA == hasD || len(im) != 1 {
		return indexRule{}, errIndexingDef("`allow` and `deny` cannot be used together, one of them is required")
	}
	list := deny
	if hasA {
		list = allow
	}
	arr, ok := list.([]any)
	if !ok {
		return indexRule{}, errIndexingDef("`allow` or `deny` must be an array of strings")
	}
	r := indexRule{set: true, allow: hasA}
	for _, e := range arr {
		s, ok := e.(string)
		if !ok || s == "" {
			return indexRule{}, errIndexingDef("`allow` or `deny` must contain non-empty strings")
		}
		if strings.HasPrefix(s, "$") && s != "$vector" {
			return indexRule{}, errIndexingDef("path '" + s + "' must not start with '$'")
		}
		if slices.Contains(r.paths, s) {
			return indexRule{}, errIndexingDef("`allow` or `deny` contains duplicates")
		}
		r.paths = append(r.paths, s)
	}
	return r, nil
}
