package dataapitest

import (
	"fmt"
	"maps"
	"slices"
)

// request is one command being served: where it was sent, its parsed arguments (with the
// raw bytes of each of the command's fields in spans, for key order), and, once resolved, its
// collection and options.
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

// run validates the command against its spec and executes it. It holds the server and
// collection locks only inside the command it runs.
func (q *request) run() *result {
	spec, err := q.lookup()
	if err == nil {
		err = q.checkFields(spec)
	}
	if err == nil {
		err = q.checkOptions(spec)
	}
	if err != nil {
		return errResult(err)
	}
	if spec.keyspace {
		return q.runKeyspace()
	}
	return q.runCollection()
}

// lookup finds the command's spec among the keyspace or the collection commands, by the
// path the request came in on.
func (q *request) lookup() (cmdSpec, *apiError) {
	if q.coll == "" {
		spec, ok := keyspaceCommands[q.cmd]
		if !ok {
			return spec, errUnknownCommand(q.cmd, "Keyspace Command", slices.Sorted(maps.Keys(keyspaceCommands)))
		}
		return spec, nil
	}
	spec, ok := collectionCommands[q.cmd]
	if !ok {
		return spec, errUnknownCommand(q.cmd, "Collection Command", slices.Sorted(maps.Keys(collectionCommands)))
	}
	return spec, nil
}

// checkFields rejects unknown fields and null or missing required ones.
func (q *request) checkFields(spec cmdSpec) *apiError {
	for k := range q.args {
		if k == "options" || slices.Contains(spec.fields, k) {
			continue
		}
		return errFieldUnknown(k, fmt.Sprintf("not a known field of command '%s' (known: %v)", q.cmd, spec.fields))
	}
	for _, k := range spec.required {
		if v, ok := q.args[k]; !ok || v == nil {
			return errFieldValue("command."+k, "`null`", "must not be null")
		}
	}
	return nil
}

// checkOptions rejects an "options" that is not an object or holds options the command
// does not know, and keeps the options in q.opts.
func (q *request) checkOptions(spec cmdSpec) *apiError {
	o, has := q.args["options"]
	if !has || o == nil {
		return nil
	}
	om, ok := o.(map[string]any)
	if !ok {
		return errStructure("'options' must be a JSON object")
	}
	if !optionCommands[q.cmd] && len(om) > 0 {
		return errNoOptions(q.cmd)
	}
	for k := range om {
		if !slices.Contains(spec.options, k) {
			return errFieldUnknown("options."+k, fmt.Sprintf("not a known option of command '%s' (known: %v)", q.cmd, spec.options))
		}
	}
	q.opts = om
	return nil
}

// runKeyspace runs a keyspace command (createCollection, findCollections, deleteCollection).
func (q *request) runKeyspace() *result {
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

// runCollection resolves the collection into q.c and runs a collection command on it.
func (q *request) runCollection() *result {
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
		return q.estimatedDocumentCount()
	}
}
