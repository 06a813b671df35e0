package dataapitest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Shredder limits (data-api.md §5).
const (
	maxStringBytes = 8000
	maxDocChars    = 4_000_000
	maxDepth       = 16
	maxArrayLen    = 1000
	maxVectorLen   = 4096
	maxObjectProps = 1000
	maxDocProps    = 2000
	maxPathLen     = 1000
	maxInValues    = 100
	maxFilterExprs = 64
	maxSortRows    = 10_000
	maxCount       = 1000
	maxDeleteMany  = 20
	maxVectorLimit = 1000
)

// indexRule is a collection's indexing option: deny or allow lists of dotted paths.
type indexRule struct {
	set   bool // an indexing option was given
	allow bool // paths is an allow list (else a deny list)
	paths []string
}

// indexed reports whether path is indexed. "_id" always is.
func (r indexRule) indexed(path string) bool {
	if !r.set || path == "_id" {
		return true
	}
	hit := false
	for _, p := range r.paths {
		if p == "*" || p == path || strings.HasPrefix(path, p+".") {
			hit = true
			break
		}
	}
	return hit == r.allow
}

// shredder validates one document against the collection's limits and indexing rules.
type shredder struct {
	rule     indexRule
	docProps int
}

// checkDoc validates doc (a document to store) and returns the first violation, in the
// server's order: document size first, then a walk of the document.
func (c *collection) checkDoc(doc map[string]any) *apiError {
	if n := jsonChars(doc); n > maxDocChars {
		return errDocLimit(fmt.Sprintf("document size (%d chars) exceeds maximum allowed (%d)", n, maxDocChars))
	}
	if d := depthOf(doc); d > maxDepth {
		return errDocLimit(fmt.Sprintf("document depth exceeds maximum allowed (%d)", maxDepth))
	}
	s := shredder{rule: c.opts.index}
	for k, v := range doc {
		switch k {
		case "$vector":
			if err := c.checkVector(v); err != nil {
				return err
			}
			continue
		case "$vectorize":
			if v != nil {
				return errNoEmbeddingService(c.name)
			}
			continue
		case "$lexical":
			if _, ok := v.(string); !ok && v != nil {
				return reqErr("DOCUMENT", "SHRED_BAD_DOCUMENT_LEXICAL_TYPE", "Bad $lexical value to shred",
					"Bad $lexical value to shred: the value for field '$lexical' must be a String, not %s.", jsonType(v))
			}
			continue
		}
		if err := s.field(k, "", v); err != nil {
			return err
		}
	}
	if s.docProps > maxDocProps {
		return errDocLimit(fmt.Sprintf("total number of indexed properties (%d) in document exceeds maximum allowed (%d)", s.docProps, maxDocProps))
	}
	return nil
}

func (s *shredder) field(name, parent string, v any) *apiError {
	if name == "" {
		return errFieldName("empty field name not allowed")
	}
	if name[0] == '$' {
		return errFieldName(fmt.Sprintf("field name ('%s') starts with '$'", name))
	}
	path := name
	if parent != "" {
		path = parent + "." + name
	}
	return s.value(path, v)
}

func (s *shredder) value(path string, v any) *apiError {
	indexed := s.rule.indexed(path)
	if indexed {
		s.docProps++
		if len(path) > maxPathLen {
			if n := utf16Len(path); n > maxPathLen {
				return errDocLimit(fmt.Sprintf("field path length (%d) exceeds maximum allowed (%d) (path ends with '%s')", n, maxPathLen, path[len(path)-20:]))
			}
		}
	}
	switch x := v.(type) {
	case string:
		if indexed && len(x) > maxStringBytes {
			return errDocLimit(fmt.Sprintf("indexed String value (field '%s') length (%d bytes) exceeds maximum allowed (%d bytes)", path, len(x), maxStringBytes))
		}
	case []any:
		if indexed && len(x) > maxArrayLen {
			return errDocLimit(fmt.Sprintf("number of elements an indexed Array (field '%s') has (%d) exceeds maximum allowed (%d)", path, len(x), maxArrayLen))
		}
		for _, e := range x {
			if err := s.element(path, e); err != nil {
				return err
			}
		}
	case map[string]any:
		if k, ok := ejsonKind(x); ok {
			return checkEJSON(k, x[k])
		}
		if indexed && len(x) > maxObjectProps {
			return errDocLimit(fmt.Sprintf("number of properties an indexed Object (field '%s') has (%d) exceeds maximum allowed (%d)", path, len(x), maxObjectProps))
		}
		for k, e := range x {
			if err := s.field(k, path, e); err != nil {
				return err
			}
		}
	}
	return nil
}

// element checks an array element: it shares its array's path, as in the Data API.
func (s *shredder) element(path string, v any) *apiError {
	indexed := s.rule.indexed(path)
	switch x := v.(type) {
	case string:
		if indexed && len(x) > maxStringBytes {
			return errDocLimit(fmt.Sprintf("indexed String value (field '%s') length (%d bytes) exceeds maximum allowed (%d bytes)", path, len(x), maxStringBytes))
		}
	case []any:
		if indexed && len(x) > maxArrayLen {
			return errDocLimit(fmt.Sprintf("number of elements an indexed Array (field '%s') has (%d) exceeds maximum allowed (%d)", path, len(x), maxArrayLen))
		}
		for _, e := range x {
			if err := s.element(path, e); err != nil {
				return err
			}
		}
	case map[string]any:
		if k, ok := ejsonKind(x); ok {
			return checkEJSON(k, x[k])
		}
		if indexed && len(x) > maxObjectProps {
			return errDocLimit(fmt.Sprintf("number of properties an indexed Object (field '%s') has (%d) exceeds maximum allowed (%d)", path, len(x), maxObjectProps))
		}
		for k, e := range x {
			if err := s.field(k, path, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkEJSON(kind string, v any) *apiError {
	switch kind {
	case "$date":
		if n, ok := v.(json.Number); ok && parseNum(n).isInt {
			return nil
		}
		return errEJSON("'$date' value has to be an epoch timestamp, instead got (" + jsonText(v) + ")")
	case "$uuid", "$objectId", "$binary":
		if _, ok := v.(string); ok {
			return nil
		}
		return errEJSON("'" + kind + "' value has to be a String, instead got (" + jsonText(v) + ")")
	}
	return nil
}

func (c *collection) checkVector(v any) *apiError {
	if v == nil {
		return nil
	}
	if c.opts.dimension == 0 {
		return errVectorNotEnabled()
	}
	n := 0
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return errVectorEmpty()
		}
		for _, e := range x {
			if _, ok := e.(json.Number); !ok {
				return errVectorValue(jsonType(e), jsonText(e))
			}
		}
		if len(x) > maxVectorLen {
			return errDocLimit(fmt.Sprintf("number of elements Vector embedding (field '$vector') has (%d) exceeds maximum allowed (%d)", len(x), maxVectorLen))
		}
		n = len(x)
	case map[string]any:
		s, ok := x["$binary"].(string)
		if len(x) != 1 || !ok {
			return errVectorType("the value for field '$vector' must be an array of numbers or a '$binary' object")
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw)%4 != 0 {
			return reqErr("DOCUMENT", "SHRED_BAD_BINARY_VECTOR_VALUE", "Bad binary vector value to shred",
				"Bad binary vector value to shred: Invalid content in EJSON $binary wrapper: not valid Base64-encoded float32 values.")
		}
		n = len(raw) / 4
	default:
		return errVectorType("the value for field '$vector' must be an array of numbers, not " + jsonType(v))
	}
	if n != c.opts.dimension {
		return errVectorMismatch(c.opts.dimension, n)
	}
	return nil
}

func depthOf(v any) int {
	switch x := v.(type) {
	case map[string]any:
		if _, ok := ejsonKind(x); ok {
			return 0 // an EJSON wrapper is a scalar
		}
		d := 0
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	case []any:
		d := 0
		for _, e := range x {
			d = max(d, depthOf(e))
		}
		return d + 1
	}
	return 0
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "NULL"
	case string:
		return "STRING"
	case json.Number:
		return "NUMBER"
	case bool:
		return "BOOLEAN"
	case []any:
		return "ARRAY"
	case map[string]any:
		return "OBJECT"
	}
	return "UNKNOWN"
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// jsonChars is the length of v's compact JSON serialization in UTF-16 code units, the
// server's Java string length of the document.
func jsonChars(v any) int {
	switch x := v.(type) {
	case nil:
		return 4
	case bool:
		if x {
			return 4
		}
		return 5
	case json.Number:
		return len(x)
	case string:
		return strChars(x)
	case []any:
		n := 2 + max(len(x)-1, 0)
		for _, e := range x {
			n += jsonChars(e)
		}
		return n
	case map[string]any:
		n := 2 + max(len(x)-1, 0)
		for k, e := range x {
			n += strChars(k) + 1 + jsonChars(e)
		}
		return n
	}
	return 0
}

func strChars(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t' || c == '\b' || c == '\f':
				n += 2
			case c < 0x20:
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		n += utf16.RuneLen(r)
		i += size
	}
	return n
}
