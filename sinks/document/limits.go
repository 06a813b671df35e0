package document

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
)

// Limits are the Data API's document limits (reference data-api.md §5). Every document sink
// enforces them at intake, so a document the embedded store accepts also loads into AstraDB.
// A zero field means the Data API default, given in the field's comment; a negative value
// is invalid.
type Limits struct {
	// MaxStringBytes bounds the UTF-8 length of an indexed string value. Default 8000.
	MaxStringBytes int
	// MaxDocChars bounds the serialized document, counted in UTF-16 code units like the
	// server's Java string length. Default 4,000,000.
	MaxDocChars int
	// MaxDepth bounds nesting; the document root object is depth 1 and every nested object
	// or array adds one. Default 16.
	MaxDepth int
	// MaxArrayLen bounds the elements of an indexed array. Default 1000. A top-level
	// "$vector" may have up to 4096 elements instead.
	MaxArrayLen int
	// MaxObjectProps bounds the properties of one indexed object. Default 1000.
	MaxObjectProps int
	// MaxDocProps bounds the indexed properties of the whole document, at every depth.
	// Default 2000.
	MaxDocProps int
	// MaxPathLen bounds the length, in characters, of a dotted property path such as
	// "metadata.section". Default 1000.
	MaxPathLen int
	// MaxNumberLen bounds the characters of a number literal, anywhere in the document.
	// Default 100.
	MaxNumberLen int
	// Unindexed names top-level fields the collection excludes from indexing. They are
	// exempt from the string, array, property and path limits but still count towards the
	// document size and depth, and the number and field-name rules still apply. nil means
	// ["embedding"] (the chunk collection denies indexing on it, reference ttrpg-center.md
	// §1.7); a non-nil empty slice means every field is indexed.
	Unindexed []string
}

// Data API defaults (data-api.md §5).
const (
	defaultMaxStringBytes = 8000
	defaultMaxDocChars    = 4_000_000
	defaultMaxDepth       = 16
	defaultMaxArrayLen    = 1000
	defaultMaxObjectProps = 1000
	defaultMaxDocProps    = 2000
	defaultMaxPathLen     = 1000
	defaultMaxNumberLen   = 100
	maxVectorLen          = 4096
	defaultUnindexed      = "embedding"
)

// Names of the limits, as found in LimitError.Limit.
const (
	LimitStringBytes = "string length"       // an indexed string value, in UTF-8 bytes
	LimitDocChars    = "document size"       // the serialized document, in UTF-16 chars
	LimitDepth       = "nesting depth"       // objects and arrays, the root is 1
	LimitArrayLen    = "array length"        // elements of an indexed array
	LimitObjectProps = "object properties"   // properties of one indexed object
	LimitDocProps    = "document properties" // indexed properties in the whole document
	LimitPathLen     = "path length"         // a dotted property path, in chars
	LimitNumberLen   = "number length"       // a number literal, in chars
	LimitFieldName   = "field name"          // naming rules; Detail says which
)

// DataAPILimits returns the Data API's default limits, with "embedding" unindexed.
func DataAPILimits() Limits {
	return Limits{}.withDefaults()
}

// withDefaults returns l with zero fields set to the defaults. Unindexed stays nil when nil:
// isUnindexed treats nil as the default list, which keeps Check free of allocations.
func (l Limits) withDefaults() Limits {
	set := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	set(&l.MaxStringBytes, defaultMaxStringBytes)
	set(&l.MaxDocChars, defaultMaxDocChars)
	set(&l.MaxDepth, defaultMaxDepth)
	set(&l.MaxArrayLen, defaultMaxArrayLen)
	set(&l.MaxObjectProps, defaultMaxObjectProps)
	set(&l.MaxDocProps, defaultMaxDocProps)
	set(&l.MaxPathLen, defaultMaxPathLen)
	set(&l.MaxNumberLen, defaultMaxNumberLen)
	return l
}

// Validate reports every negative limit at once.
func (l Limits) Validate() error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxStringBytes", l.MaxStringBytes}, {"MaxDocChars", l.MaxDocChars},
		{"MaxDepth", l.MaxDepth}, {"MaxArrayLen", l.MaxArrayLen},
		{"MaxObjectProps", l.MaxObjectProps}, {"MaxDocProps", l.MaxDocProps},
		{"MaxPathLen", l.MaxPathLen}, {"MaxNumberLen", l.MaxNumberLen},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("limits: %s must not be negative, got %d", f.name, f.v))
		}
	}
	for _, u := range l.Unindexed {
		if u == "" {
			errs = append(errs, errors.New("limits: Unindexed holds an empty field name"))
		}
	}
	return errors.Join(errs...)
}

func (l *Limits) isUnindexed(key []byte) bool {
	if l.Unindexed == nil {
		return string(key) == defaultUnindexed
	}
	for _, u := range l.Unindexed {
		if string(key) == u {
			return true
		}
	}
	return false
}

// LimitError says which limit a document breaks, where, and by how much.
type LimitError struct {
	// Path is the dotted property path of the offending value ("" for the whole document).
	// Array elements share their array's path, as in the Data API.
	Path string
	// Limit is one of the Limit* constants.
	Limit string
	// Max is the configured maximum and Actual the value found (both 0 for LimitFieldName).
	Max, Actual int
	// Detail explains a LimitFieldName violation.
	Detail string
}

// Error describes the violation, e.g.
// `field "metadata.nested.child": nesting depth 21 exceeds maximum 16`.
func (e *LimitError) Error() string {
	var b strings.Builder
	if e.Path != "" || e.Limit == LimitFieldName {
		p := e.Path
		if len(p) > 200 {
			cut := 200
			for cut > 0 && !utf8.RuneStart(p[cut]) {
				cut--
			}
			p = p[:cut] + "..."
		}
		b.WriteString("field ")
		b.WriteString(strconv.Quote(p))
		b.WriteString(": ")
	}
	if e.Limit == LimitFieldName {
		b.WriteString("invalid field name: ")
		b.WriteString(e.Detail)
		return b.String()
	}
	unit := ""
	switch e.Limit {
	case LimitStringBytes:
		unit = " bytes"
	case LimitDocChars, LimitPathLen, LimitNumberLen:
		unit = " chars"
	}
	fmt.Fprintf(&b, "%s %d%s exceeds maximum %d%s", e.Limit, e.Actual, unit, e.Max, unit)
	return b.String()
}

// Check verifies that body, a JSON object, stays within l. It makes one pass over the bytes
// without allocating (except to report a violation), and validates the JSON text on the way
// (grammar, escapes, UTF-8), so a body that passes is well-formed. A violation is returned
// as fault.Permanent(fault.Limit, *LimitError); a body that is not a well-formed JSON object
// in valid UTF-8 gives fault.Permanent(fault.Validation, …). Check is safe for concurrent use.
//
// The first violation found in document order is reported, except that a nesting-depth
// violation is reported with the deepest level of its subtree and takes precedence over
// what lies inside that subtree.
func (l Limits) Check(body []byte) error {
	return l.check(body, new(scratch))
}

// check is Check with the caller's scratch space (Builder keeps a pool of them).
func (l Limits) check(body []byte, sc *scratch) error {
	c := checker{l: l.withDefaults(), b: body}
	if err := c.run(sc); err != nil {
		var le *LimitError
		if errors.As(err, &le) {
			return fault.Permanent(fault.Limit, le)
		}
		return fault.Permanent(fault.Validation, err)
	}
	return nil
}

type frame struct {
	array   bool
	indexed bool // values in this container are indexed
	vector  bool // the top-level $vector array
	count   int  // properties or elements so far
	base    int  // len(path) when the container started: its own path
}

// checker holds the counters of one Check. The container stack and the current path live
// in run's locals (backed by the arrays of a scratch), so that a normal document is checked
// without allocating.
type checker struct {
	l Limits
	b []byte

	docProps int
	cont     int // UTF-8 continuation bytes, to count UTF-16 chars
	four     int // 4-byte UTF-8 sequences (2 UTF-16 chars each)

	// Set once a depth violation is found; the subtree is then scanned only for its depth.
	deep     bool
	deepAt   int // stack length of the first frame past the limit
	deepMax  int
	deepPath string
}

func (c *checker) errMalformed(i int) error {
	return fmt.Errorf("check document limits: malformed JSON at offset %d", i)
}

func pathErr(path []byte, limit string, max, actual int) error {
	return &LimitError{Path: string(path), Limit: limit, Max: max, Actual: actual}
}

// pushed records the depth of a container just pushed onto a stack of length d.
func (c *checker) pushed(d int, path []byte) {
	if d <= c.l.MaxDepth {
		return
	}
	if !c.deep {
		c.deep, c.deepAt = true, d
	}
	if d > c.deepMax {
		c.deepMax = d
		c.deepPath = string(path) // error path only
	}
}

// popped checks the counts of container f, just closed, leaving a stack of length d.
func (c *checker) popped(f frame, d int, path []byte) error {
	if c.deep {
		if d < c.deepAt {
			return &LimitError{Path: c.deepPath, Limit: LimitDepth, Max: c.l.MaxDepth, Actual: c.deepMax}
		}
		return nil
	}
	if !f.indexed {
		return nil
	}
	switch {
	case f.array && f.vector && f.count > maxVectorLen:
		return pathErr(path, LimitArrayLen, maxVectorLen, f.count)
	case f.array && !f.vector && f.count > c.l.MaxArrayLen:
		return pathErr(path, LimitArrayLen, c.l.MaxArrayLen, f.count)
	case !f.array && f.count > c.l.MaxObjectProps:
		return pathErr(path, LimitObjectProps, c.l.MaxObjectProps, f.count)
	}
	return nil
}

const (
	stValue      = iota // a value starts here
	stAfterValue        // after a value: ',' or a closing bracket
	stKeyOrEnd          // just after '{'
	stKey               // after ',' in an object
	stValueOrEnd        // just after '['
)

// scratch holds a check's container stack and path. It comes from a pool rather than run's
// stack frame: checks run on fresh goroutines (one per message), whose small initial stacks
// a kilobyte of frame would make the runtime grow and copy on every message.
type scratch struct {
	stack [32]frame
	path  [256]byte
}

// run checks c.b in one pass, a state machine over JSON tokens: the end of a container
// (end), the start of one, a number, a string or literal (scalar), a comma, an object
// member's key (member). The container stack and the path are run's locals, backed by sc's
// arrays, and pass in and out of the steps by value: slices stored through a pointer would
// make the escape analysis move sc to the heap, and Check allocate.
func (c *checker) run(sc *scratch) error {
	stack, path := sc.stack[:0], sc.path[:0]
	b := c.b
	i := jsonscan.SkipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errors.New("check document limits: body is not a JSON object")
	}
	st := stValue
	indexed, vector := true, false
	for {
		i = jsonscan.SkipWS(b, i)
		if i >= len(b) {
			if st == stAfterValue && len(stack) == 0 {
				break
			}
			return c.errMalformed(i)
		}
		ch := b[i]
		var err error
		if (ch == '}' || ch == ']') && len(stack) > 0 && (st == stAfterValue || st == stValueOrEnd || st == stKeyOrEnd) {
			if stack, path, err = c.end(ch, i, stack, path); err != nil {
				return err
			}
			i++
			st = stAfterValue
			continue
		}
		switch st {
		case stValue:
			switch {
			case ch == '{' || ch == '[':
				stack = append(stack, frame{array: ch == '[', indexed: indexed, vector: vector && ch == '[', base: len(path)})
				c.pushed(len(stack), path)
				i++
				st = stKeyOrEnd
				if ch == '[' {
					st = stValueOrEnd
				}
				continue
			case ch == '-' || (ch >= '0' && ch <= '9'): // here, not in scalar: vectors are most tokens
				end, ok := numberEnd(b, i)
				if !ok {
					return c.errMalformed(i)
				}
				if n := end - i; n > c.l.MaxNumberLen && !c.deep {
					return pathErr(path, LimitNumberLen, c.l.MaxNumberLen, n)
				}
				i = end
			default:
				if i, err = c.scalar(i, indexed, path); err != nil {
					return err
				}
			}
			st = stAfterValue
		case stAfterValue:
			if len(stack) == 0 || ch != ',' {
				return c.errMalformed(i) // data after the root object, or no comma
			}
			i++
			st = stKey
			if top := &stack[len(stack)-1]; top.array {
				top.count++
				indexed, vector = top.indexed, false
				st = stValue
			}
		case stValueOrEnd: // the first element of an array
			top := &stack[len(stack)-1]
			top.count = 1
			indexed, vector = top.indexed, false
			st = stValue
		default: // stKeyOrEnd, stKey
			top := &stack[len(stack)-1]
			top.count++
			if path, i, indexed, vector, err = c.member(path, i, top, len(stack) == 1); err != nil {
				return err
			}
			st = stValue
		}
	}
	return c.docLimits()
}

// end closes the innermost container of stack with the bracket ch at b[i], where a container
// may end, and checks the container's counts. It returns the stack and path without it.
func (c *checker) end(ch byte, i int, stack []frame, path []byte) ([]frame, []byte, error) {
	f := stack[len(stack)-1]
	if (ch == ']') != f.array {
		return stack, path, c.errMalformed(i)
	}
	stack, path = stack[:len(stack)-1], path[:f.base]
	return stack, path, c.popped(f, len(stack), path)
}

// docLimits checks the whole-document counts, once the document is read.
func (c *checker) docLimits() error {
	if c.docProps > c.l.MaxDocProps {
		return &LimitError{Limit: LimitDocProps, Max: c.l.MaxDocProps, Actual: c.docProps}
	}
	if chars := len(c.b) - c.cont + c.four; chars > c.l.MaxDocChars {
		return &LimitError{Limit: LimitDocChars, Max: c.l.MaxDocChars, Actual: chars}
	}
	return nil
}

// member reads an object member's key at b[i] onto path (after its container's own path)
// and the colon after it, and applies the key rules. It returns the path, the index after
// the colon, and whether the member's value is indexed and is the top-level $vector.
func (c *checker) member(path []byte, i int, top *frame, root bool) ([]byte, int, bool, bool, error) {
	b := c.b
	path = path[:top.base]
	if top.base > 0 {
		path = append(path, '.')
	}
	ks := len(path)
	path, i, ok := c.appendKey(path, i)
	if !ok {
		return path, i, false, false, c.errMalformed(i)
	}
	i = jsonscan.SkipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return path, i, false, false, c.errMalformed(i)
	}
	indexed, vector, err := c.key(path, ks, top.indexed, root)
	return path, i + 1, indexed, vector, err
}

// scalar checks the string or literal at b[i], a value at path, and returns the index
// after it. (run checks numbers itself.)
func (c *checker) scalar(i int, indexed bool, path []byte) (int, error) {
	b := c.b
	switch ch := b[i]; {
	case ch == '"':
		n, end, ok := c.scanString(i)
		if !ok {
			return i, c.errMalformed(i)
		}
		if indexed && !c.deep && n > c.l.MaxStringBytes {
			return i, pathErr(path, LimitStringBytes, c.l.MaxStringBytes, n)
		}
		return end, nil
	case ch == 't' && hasAt(b, i, "true"):
		return i + 4, nil
	case ch == 'f' && hasAt(b, i, "false"):
		return i + 5, nil
	case ch == 'n' && hasAt(b, i, "null"):
		return i + 4, nil
	}
	return i, c.errMalformed(i)
}

func hasAt(b []byte, i int, lit string) bool {
	return len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit
}

// key applies the naming, property and path rules to the key just decoded onto path (at
// path[ks:]) in a container whose values are indexed as given, and says whether the value
// that follows is indexed and whether it is the top-level $vector.
func (c *checker) key(path []byte, ks int, parentIndexed, root bool) (indexed, vector bool, err error) {
	if c.deep {
		return false, false, nil
	}
	name := path[ks:]
	switch {
	case len(name) == 0:
		return false, false, &LimitError{Path: string(path), Limit: LimitFieldName, Detail: "empty name"}
	case name[0] == '$':
		if !root || (string(name) != "$vector" && string(name) != "$vectorize" && string(name) != "$lexical") {
			return false, false, &LimitError{Path: string(path), Limit: LimitFieldName,
				Detail: "must not start with '$' (only top-level $vector, $vectorize and $lexical may)"}
		}
	}
	indexed = parentIndexed
	if root && c.l.isUnindexed(name) {
		indexed = false
	}
	if root && (string(name) == "$vectorize" || string(name) == "$lexical") {
		indexed = false // exempt from the string limit; the server handles them itself
	}
	vector = root && string(name) == "$vector"
	if !indexed {
		return false, vector, nil
	}
	c.docProps++
	if len(path) > c.l.MaxPathLen { // bytes >= UTF-16 units, so count only when it may matter
		if n := utf16Len(path); n > c.l.MaxPathLen {
			return false, false, pathErr(path, LimitPathLen, c.l.MaxPathLen, n)
		}
	}
	return true, vector, nil
}

func utf16Len(p []byte) int {
	n := 0
	for len(p) > 0 {
		r, size := utf8.DecodeRune(p)
		p = p[size:]
		n += utf16.RuneLen(r)
	}
	return n
}

// appendKey decodes the JSON string at b[i] onto path and returns the index after it.
func (c *checker) appendKey(path []byte, i int) ([]byte, int, bool) {
	b := c.b
	if i >= len(b) || b[i] != '"' {
		return path, i, false
	}
	i++
	start := i
	for i < len(b) {
		ch := b[i]
		switch {
		case ch == '"':
			path = append(path, b[start:i]...)
			return path, i + 1, true
		case ch == '\\':
			path = append(path, b[start:i]...)
			r, n, ok := unescape(b, i)
			if !ok {
				return path, i, false
			}
			path = utf8.AppendRune(path, r)
			i += n
			start = i
			continue
		case ch < 0x20:
			return path, i, false
		case ch >= 0x80:
			size, ok := c.utf8Seq(i)
			if !ok {
				return path, i, false
			}
			i += size
			continue
		}
		i++
	}
	return path, i, false
}

// scanString measures the JSON string at b[i]: the UTF-8 length of its decoded value and
// the index after it. Lone surrogate escapes count as U+FFFD, as encoding/json decodes them.
func (c *checker) scanString(i int) (n, end int, ok bool) {
	b := c.b
	i++
	for i < len(b) {
		ch := b[i]
		switch {
		case ch == '"':
			return n, i + 1, true
		case ch == '\\':
			r, size, ok := unescape(b, i)
			if !ok {
				return 0, 0, false
			}
			n += utf8.RuneLen(r)
			i += size
			continue
		case ch < 0x20:
			return 0, 0, false // raw control characters are not allowed in JSON strings
		case ch >= 0x80:
			size, ok := c.utf8Seq(i)
			if !ok {
				return 0, 0, false
			}
			n += size
			i += size
			continue
		}
		n++
		i++
	}
	return 0, 0, false
}

// unescape decodes the escape sequence at b[i] ('\\'), returning the rune and the number of
// bytes consumed. A surrogate pair is one rune; a lone surrogate is U+FFFD.
func unescape(b []byte, i int) (rune, int, bool) {
	if i+1 >= len(b) {
		return 0, 0, false
	}
	switch b[i+1] {
	case '"', '\\', '/':
		return rune(b[i+1]), 2, true
	case 'b':
		return '\b', 2, true
	case 'f':
		return '\f', 2, true
	case 'n':
		return '\n', 2, true
	case 'r':
		return '\r', 2, true
	case 't':
		return '\t', 2, true
	case 'u':
		r, ok := hex4(b, i+2)
		if !ok {
			return 0, 0, false
		}
		if !utf16.IsSurrogate(r) {
			return r, 6, true
		}
		if r < 0xDC00 && i+12 <= len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
			if r2, ok := hex4(b, i+8); ok && r2 >= 0xDC00 && r2 < 0xE000 {
				return utf16.DecodeRune(r, r2), 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	return 0, 0, false
}

// utf8Seq validates the UTF-8 sequence at b[i] (a byte >= 0x80) and counts it towards the
// document's UTF-16 length.
func (c *checker) utf8Seq(i int) (int, bool) {
	r, size := utf8.DecodeRune(c.b[i:])
	if r == utf8.RuneError && size == 1 {
		return 0, false
	}
	c.cont += size - 1
	if size == 4 {
		c.four++
	}
	return size, true
}

// numberEnd returns the index after the JSON number at b[i], checking its grammar:
// -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
func numberEnd(b []byte, i int) (int, bool) {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return j, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return j, false
		}
		i = j
	}
	return i, true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, ch := range b[i : i+4] {
		switch {
		case ch >= '0' && ch <= '9':
			r = r<<4 | rune(ch-'0')
		case ch >= 'a' && ch <= 'f':
			r = r<<4 | rune(ch-'a'+10)
		case ch >= 'A' && ch <= 'F':
			r = r<<4 | rune(ch-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}
