package dataapitest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

type request struct {
	s        *Server
	ks, coll string
	cmd      string
	args     map[string]any
	spans    map[string][]byte
	c        *collection
	opts     map[string]any
}

// cmdSpec lists a command's accepted fields and options (nil options: the command accepts
// no options, only an empty "options" object).
type cmdSpec struct {
	keyspace bool
	fields   []string
	options  []string
	required []string
}

var collectionCommands = map[string]cmdSpec{
	"insertOne":              {fields: []string{"document"}, required: []string{"document"}},
	"insertMany":             {fields: []string{"documents"}, options: []string{"ordered", "returnDocumentResponses"}, required: []string{"documents"}},
	"findOne":                {fields: []string{"filter", "projection", "sort"}, options: []string{"includeSimilarity", "includeSortVector"}},
	"find":                   {fields: []string{"filter", "projection", "sort"}, options: []string{"limit", "skip", "pageState", "pagingState", "includeSimilarity", "includeSortVector"}},
	"updateOne":              {fields: []string{"filter", "update", "sort"}, options: []string{"upsert"}, required: []string{"update"}},
	"updateMany":             {fields: []string{"filter", "update"}, options: []string{"upsert", "pageState"}, required: []string{"update"}},
	"findOneAndUpdate":       {fields: []string{"filter", "update", "sort", "projection"}, options: []string{"returnDocument", "upsert", "includeSimilarity"}, required: []string{"update"}},
	"findOneAndReplace":      {fields: []string{"filter", "replacement", "sort", "projection"}, options: []string{"returnDocument", "upsert", "includeSimilarity"}, required: []string{"replacement"}},
	"findOneAndDelete":       {fields: []string{"filter", "sort", "projection"}},
	"deleteOne":              {fields: []string{"filter", "sort"}, required: []string{"filter"}},
	"deleteMany":             {fields: []string{"filter"}},
	"countDocuments":         {fields: []string{"filter"}},
	"estimatedDocumentCount": {},
}

var keyspaceCommands = map[string]cmdSpec{
	"createCollection": {keyspace: true, fields: []string{"name"}, options: []string{"defaultId", "indexing", "vector", "lexical", "rerank"}, required: []string{"name"}},
	"findCollections":  {keyspace: true, options: []string{"explain"}},
	"deleteCollection": {keyspace: true, fields: []string{"name"}, required: []string{"name"}},
}

// Commands whose "options" may hold fields; the others accept only an empty "options".
var optionCommands = map[string]bool{"insertMany": true, "findOne": true, "find": true, "updateOne": true,
	"updateMany": true, "findOneAndUpdate": true, "findOneAndReplace": true, "createCollection": true, "findCollections": true}

var nameRE = regexp.MustCompile(`^\w{1,48}$`)

func (q *request) run() *result {
	var spec cmdSpec
	var ok bool
	if q.coll == "" {
		if spec, ok = keyspaceCommands[q.cmd]; !ok {
			return errResult(errUnknownCommand(q.cmd, "Keyspace Command", slices.Sorted(maps.Keys(keyspaceCommands))))
		}
	} else if spec, ok = collectionCommands[q.cmd]; !ok {
		return errResult(errUnknownCommand(q.cmd, "Collection Command", slices.Sorted(maps.Keys(collectionCommands))))
	}
	for k := range q.args {
		if k == "options" || slices.Contains(spec.fields, k) {
			continue
		}
		return errResult(errFieldUnknown(k, fmt.Sprintf("not a known field of command '%s' (known: %v)", q.cmd, spec.fields)))
	}
	for _, k := range spec.required {
		if v, ok := q.args[k]; !ok || v == nil {
			return errResult(errFieldValue("command."+k, "`null`", "must not be null"))
		}
	}
	if o, has := q.args["options"]; has && o != nil {
		om, ok := o.(map[string]any)
		if !ok {
			return errResult(errStructure("'options' must be a JSON object"))
		}
		if !optionCommands[q.cmd] && len(om) > 0 {
			return errResult(errNoOptions(q.cmd))
		}
		for k := range om {
			if !slices.Contains(spec.options, k) {
				return errResult(errFieldUnknown("options."+k, fmt.Sprintf("not a known option of command '%s' (known: %v)", q.cmd, spec.options)))
			}
		}
		q.opts = om
	}
	if spec.keyspace {
		q.s.mu.RLock()
		_, exists := q.s.keyspaces[q.ks]
		q.s.mu.RUnlock()
		if !exists {
			return errResult(errUnknownKeyspace(q.ks))
		}
		switch q.cmd {
		case "createCollection":
			return q.createCollection()
		case "findCollections":
			return q.findCollections()
		default:
			return q.deleteCollection()
		}
	}
	q.s.mu.RLock()
	ksm, exists := q.s.keyspaces[q.ks]
	if exists {
		q.c = ksm[q.coll]
	}
	q.s.mu.RUnlock()
	if !exists {
		return errResult(errUnknownKeyspace(q.ks))
	}
	if q.c == nil {
		return errResult(errUnknownCollection(q.ks, q.coll))
	}
	switch q.cmd {
	case "insertOne":
		return q.insertOne()
	case "insertMany":
		return q.insertMany()
	case "findOne", "find":
		return q.find()
	case "updateOne", "findOneAndUpdate", "findOneAndReplace":
		return q.modifyOne()
	case "updateMany":
		return q.updateMany()
	case "findOneAndDelete", "deleteOne":
		return q.deleteOne()
	case "deleteMany":
		return q.deleteMany()
	case "countDocuments":
		return q.countDocuments()
	default:
		q.c.mu.RLock()
		n := len(q.c.docs)
		q.c.mu.RUnlock()
		return &result{status: map[string]any{"count": n}}
	}
}

// ---- option and clause helpers ----

func (q *request) obj(field string) (map[string]any, *apiError) {
	v, ok := q.args[field]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errStructure(fmt.Sprintf("'%s' must be a JSON object, not %s", field, jsonType(v)))
	}
	return m, nil
}

func (q *request) optBool(name string) (bool, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, errStructure(fmt.Sprintf("option '%s' must be a boolean, not %s", name, jsonType(v)))
	}
	return b, nil
}

func (q *request) optInt(name string) (int, bool, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return 0, false, nil
	}
	n, ok := v.(json.Number)
	if !ok || !parseNum(n).isInt || parseNum(n).i > math.MaxInt32 {
		return 0, false, errStructure(fmt.Sprintf("option '%s' must be an integer, not %s", name, jsonText(v)))
	}
	return int(parseNum(n).i), true, nil
}

func (q *request) optString(name string) (string, *apiError) {
	v, ok := q.opts[name]
	if !ok || v == nil {
		return "", nil
	}
	s, ok := v.(string)
	if !ok {
		return "", errStructure(fmt.Sprintf("option '%s' must be a string, not %s", name, jsonType(v)))
	}
	return s, nil
}

func (q *request) filter() (map[string]any, *apiError) {
	f, err := q.obj("filter")
	if err != nil {
		return nil, err
	}
	if err := q.c.validateFilter(f); err != nil {
		return nil, err
	}
	return f, nil
}

func (q *request) projection() (*projection, *apiError) {
	p, err := q.obj("projection")
	if err != nil {
		return nil, err
	}
	return parseProjection(p)
}

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

// ---- keyspace commands ----

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

// ---- collections ----

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

func parseCollOptions(m map[string]any) (collOptions, *apiError) {
	o := collOptions{raw: m}
	if v, ok := m["vector"]; ok && v != nil {
		vm, ok := v.(map[string]any)
		if !ok {
			return o, errCreateOptions("'vector' must be an object")
		}
		for k := range vm {
			switch k {
			case "dimension", "size", "metric", "function", "sourceModel", "service":
			default:
				return o, errCreateOptions("unknown 'vector' field '" + k + "'")
			}
		}
		if _, ok := vm["service"]; ok {
			return o, errCreateOptions("vectorize 'service' is not supported by dataapitest")
		}
		d := vm["dimension"]
		if d == nil {
			d = vm["size"]
		}
		n, ok := d.(json.Number)
		if !ok || !parseNum(n).isInt || parseNum(n).i <= 0 || parseNum(n).i > maxVectorLen {
			return o, errCreateOptions(fmt.Sprintf("'dimension' must be an integer between 1 and %d, got %s", maxVectorLen, jsonText(d)))
		}
		o.dimension = int(parseNum(n).i)
		mv := vm["metric"]
		if mv == nil {
			mv = vm["function"]
		}
		o.metric = "cosine"
		if mv != nil {
			s, _ := mv.(string)
			if s != "cosine" && s != "dot_product" && s != "euclidean" {
				return o, errCreateOptions("'metric' must be one of cosine, dot_product, euclidean; got " + jsonText(mv))
			}
			o.metric = s
		}
	}
	if v, ok := m["indexing"]; ok && v != nil {
		im, ok := v.(map[string]any)
		if !ok {
			return o, errIndexingDef("'indexing' must be an object")
		}
		allow, hasA := im["allow"]
		deny, hasD := im["deny"]
		if hasA == hasD || len(im) != 1 {
			return o, errIndexingDef("`allow` and `deny` cannot be used together, one of them is required")
		}
		list := deny
		if hasA {
			list = allow
		}
		arr, ok := list.([]any)
		if !ok {
			return o, errIndexingDef("`allow` or `deny` must be an array of strings")
		}
		o.index = indexRule{set: true, allow: hasA}
		for _, e := range arr {
			s, ok := e.(string)
			if !ok || s == "" {
				return o, errIndexingDef("`allow` or `deny` must contain non-empty strings")
			}
			if strings.HasPrefix(s, "$") && s != "$vector" {
				return o, errIndexingDef("path '" + s + "' must not start with '$'")
			}
			if slices.Contains(o.index.paths, s) {
				return o, errIndexingDef("`allow` or `deny` contains duplicates")
			}
			o.index.paths = append(o.index.paths, s)
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

func (c *collection) similarity(doc map[string]any, q []float64) (float64, bool) {
	arr, ok := doc["$vector"].([]any)
	if !ok || len(arr) != len(q) {
		return 0, false
	}
	var dot, na, nb, d2 float64
	for i, e := range arr {
		x := parseNum(e.(json.Number)).f
		dot += x * q[i]
		na += x * x
		nb += q[i] * q[i]
		d2 += (x - q[i]) * (x - q[i])
	}
	switch c.opts.metric {
	case "dot_product":
		return (1 + dot) / 2, true
	case "euclidean":
		return 1 / (1 + d2), true
	}
	if na == 0 || nb == 0 {
		return 0, true
	}
	return (1 + dot/math.Sqrt(na*nb)) / 2, true
}

// ---- insert ----

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
	type attempt struct {
		key string
		id  any
		doc map[string]any
		err *apiError
	}
	atts := make([]attempt, len(docs))
	for i, d := range docs { // every document is shredded before any write
		a := &atts[i]
		a.key, a.id, a.doc, a.err = q.c.prepare(d)
		if a.err != nil {
			if m, ok := d.(map[string]any); ok {
				a.id = m["_id"]
			}
		}
	}
	const (
		stOK = iota
		stErr
		stSkipped
	)
	states := make([]int, len(docs))
	var errs []*apiError
	errIdx := make([]int, len(docs))
	q.c.mu.Lock()
	failed := false
	for i := range atts {
		a := &atts[i]
		if ordered && failed {
			states[i] = stSkipped
			continue
		}
		e := a.err
		if e == nil {
			e = q.c.insertLocked(a.key, a.id, a.doc)
		}
		if e != nil {
			states[i] = stErr
			errIdx[i] = len(errs)
			errs = append(errs, e)
			failed = true
		}
	}
	q.c.mu.Unlock()
	res := &result{errors: errs}
	if perDoc {
		resp := make([]any, len(docs))
		for i, st := range states {
			r := map[string]any{"_id": atts[i].id}
			switch st {
			case stOK:
				r["status"] = "OK"
			case stErr:
				r["status"] = "ERROR"
				r["errorsIdx"] = errIdx[i]
			default:
				r["status"] = "SKIPPED"
			}
			resp[i] = r
		}
		res.status = map[string]any{"documentResponses": resp}
		return res
	}
	ids := []any{}
	for i, st := range states {
		if st == stOK {
			ids = append(ids, atts[i].id)
		}
	}
	res.status = map[string]any{"insertedIds": ids}
	return res
}

// ---- read ----

type pageState struct {
	after     uint64
	remaining int // -1: no limit
}

func encodePage(p pageState) string {
	return base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("dataapitest:%d:%d", p.after, p.remaining)))
}

func decodePage(s string) (pageState, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return pageState{}, false
	}
	parts := strings.Split(string(b), ":")
	if len(parts) != 3 || parts[0] != "dataapitest" {
		return pageState{}, false
	}
	a, err1 := strconv.ParseUint(parts[1], 10, 64)
	r, err2 := strconv.Atoi(parts[2])
	return pageState{after: a, remaining: r}, err1 == nil && err2 == nil
}

func (q *request) find() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	proj, err := q.projection()
	if err != nil {
		return errResult(err)
	}
	spec, err := q.sort()
	if err != nil {
		return errResult(err)
	}
	withSim, err := q.optBool("includeSimilarity")
	if err != nil {
		return errResult(err)
	}
	if _, err := q.optBool("includeSortVector"); err != nil {
		return errResult(err)
	}
	one := q.cmd == "findOne"
	limit, hasLimit, err := q.optInt("limit")
	if err != nil {
		return errResult(err)
	}
	if hasLimit && limit <= 0 {
		return errResult(errFieldValue("options.limit", fmt.Sprintf("`%d`", limit), "limit should be greater than `0`"))
	}
	skip, hasSkip, err := q.optInt("skip")
	if err != nil {
		return errResult(err)
	}
	if hasSkip && skip < 0 {
		return errResult(errFieldValue("options.skip", fmt.Sprintf("`%d`", skip), "skip should be greater than or equal to `0`"))
	}
	if hasSkip && (spec == nil || spec.vector != nil) {
		return errResult(errFieldValue("options.skip", fmt.Sprintf("`%d`", skip), "skip options should be used with sort clause"))
	}
	ps, err := q.optString("pageState")
	if err != nil {
		return errResult(err)
	}
	if ps == "" {
		if ps, err = q.optString("pagingState"); err != nil {
			return errResult(err)
		}
	}
	if ps != "" && spec != nil {
		return errResult(errSort("pageState is not supported with non-empty sort clause"))
	}
	page := pageState{remaining: -1}
	if hasLimit {
		page.remaining = limit
	}
	if ps != "" {
		var ok bool
		if page, ok = decodePage(ps); !ok {
			return errResult(errFieldValue("options.pageState", strconv.Quote(ps), "not a page state issued by this server"))
		}
	}
	q.c.mu.RLock()
	defer q.c.mu.RUnlock()
	list := q.c.candidates(f, page.after)
	if spec != nil && spec.vector == nil && len(list) > maxSortRows {
		return errResult(errSortOverload())
	}
	list, sims := q.c.ordered(list, spec)
	render := func(d *stored) map[string]any {
		out := proj.apply(d.doc)
		if withSim && sims != nil {
			out = maps.Clone(out)
			out["$similarity"] = sims[d]
		}
		return out
	}
	if one {
		if len(list) == 0 {
			return &result{data: map[string]any{"document": nil}}
		}
		return &result{data: map[string]any{"document": render(list[0])}}
	}
	n := q.s.cfg.PageSize
	if page.remaining >= 0 {
		n = min(n, page.remaining)
	}
	var next any
	if spec != nil {
		if spec.vector != nil {
			n = q.s.cfg.PageSize
			if hasLimit {
				n = min(limit, maxVectorLimit)
			}
		}
		list = list[min(skip, len(list)):]
		list = list[:min(n, len(list))]
	} else {
		if len(list) > n {
			rem := -1
			if page.remaining >= 0 {
				rem = page.remaining - n
			}
			if rem != 0 {
				next = encodePage(pageState{after: list[n-1].seq, remaining: rem})
			}
			list = list[:n]
		}
	}
	docs := make([]any, len(list))
	for i, d := range list {
		docs[i] = render(d)
	}
	return &result{data: map[string]any{"documents": docs, "nextPageState": next}}
}

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

// ---- update / replace ----

func (q *request) returnAfter() (bool, *apiError) {
	rd, err := q.optString("returnDocument")
	if err != nil {
		return false, err
	}
	switch rd {
	case "", "before":
		return false, nil
	case "after":
		return true, nil
	}
	return false, errFieldValue("options.returnDocument", strconv.Quote(rd), "value must be 'before' or 'after'")
}

func (q *request) modifyOne() *result {
	f, err := q.filter()
	if err != nil {
		return errResult(err)
	}
	spec, err := q.sort()
	if err != nil {
		return errResult(err)
	}
	upsert, err := q.optBool("upsert")
	if err != nil {
		return errResult(err)
	}
	var proj *projection
	after := false
	if q.cmd != "updateOne" {
		if proj, err = q.projection(); err != nil {
			return errResult(err)
		}
		if after, err = q.returnAfter(); err != nil {
			return errResult(err)
		}
	}
	var update, replacement map[string]any
	if q.cmd == "findOneAndReplace" {
		if replacement, err = q.obj("replacement"); err != nil {
			return errResult(err)
		}
	} else {
		if update, err = q.obj("update"); err != nil {
			return errResult(err)
		}
		if err := validateUpdate(update); err != nil {
			return errResult(err)
		}
	}
	c := q.c
	c.mu.Lock()
	defer c.mu.Unlock()
	list, _ := c.ordered(c.candidates(f, 0), spec)
	status := map[string]any{"matchedCount": 0, "modifiedCount": 0}
	var before, now map[string]any
	if len(list) > 0 {
		d := list[0]
		status["matchedCount"] = 1
		before = d.doc
		var doc map[string]any
		if replacement != nil {
			if rid, ok := replacement["_id"]; ok {
				if k, e := idKey(rid); e != nil || k != mustKey(d.id) {
					return errResult(errReplaceDifferentID(rid, d.id))
				}
			}
			doc = deepCopy(replacement).(map[string]any)
			doc["_id"] = d.id
		} else {
			doc = deepCopy(d.doc).(map[string]any)
			if err := applyUpdate(doc, update, false); err != nil {
				return errResult(err.withIDs(d.id))
			}
		}
		if err := c.checkDoc(doc); err != nil {
			return errResult(err.withIDs(d.id))
		}
		now = doc
		if !equal(doc, d.doc) {
			c.docs[mustKey(d.id)] = &stored{seq: d.seq, id: d.id, doc: doc}
			status["modifiedCount"] = 1
		}
	} else if upsert {
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
				return errResult(err)
			}
		}
		key, id, doc, err := c.prepare(doc)
		if err != nil {
			return errResult(err)
		}
		if err := c.insertLocked(key, id, doc); err != nil {
			return errResult(err)
		}
		status["upsertedId"] = id
		now = doc
	}
	if q.cmd == "updateOne" {
		return &result{status: status}
	}
	out := before
	if after {
		out = now
	}
	var rendered any
	if out != nil {
		rendered = proj.apply(out)
	}
	return &result{data: map[string]any{"document": rendered}, status: status}
}

func mustKey(id any) string {
	k, _ := idKey(id)
	return k
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
	page := pageState{remaining: -1}
	if ps != "" {
		var ok bool
		if page, ok = decodePage(ps); !ok {
			return errResult(errFieldValue("options.pageState", strconv.Quote(ps), "not a page state issued by this server"))
		}
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
		doc := deepCopy(d.doc).(map[string]any)
		e := applyUpdate(doc, update, false)
		if e == nil {
			e = c.checkDoc(doc)
		}
		if e != nil {
			res.errors = append(res.errors, e.withIDs(d.id))
			continue
		}
		if !equal(doc, d.doc) {
			c.docs[mustKey(d.id)] = &stored{seq: d.seq, id: d.id, doc: doc}
			modified++
		}
	}
	status["matchedCount"] = matched
	status["modifiedCount"] = modified
	if matched == 0 && upsert && ps == "" {
		doc := map[string]any{}
		upsertSeed(f, doc)
		if err := applyUpdate(doc, update, true); err != nil {
			return errResult(err)
		}
		key, id, doc, err := c.prepare(doc)
		if err != nil {
			return errResult(err)
		}
		if err := c.insertLocked(key, id, doc); err != nil {
			return errResult(err)
		}
		status["upsertedId"] = id
	}
	return res
}

// ---- delete ----

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
