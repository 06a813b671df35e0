package requirements

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Member is one key/value pair of an Object.
type Member struct {
	Key   string
	Value any
}

// Object is a JSON object that keeps its keys in insertion order, as a Python dict does. The
// checksum of a requirements version depends on that order, so documents are kept as Objects,
// never as Go maps.
//
// Values inside an Object are nil, bool, string, json.Number, int, int64, float64, []any or
// *Object (what DecodeOrdered produces, plus the Go numbers code may add). An Object is not
// safe for concurrent mutation; reading it concurrently is safe.
type Object struct {
	members []Member
}

// NewObject returns an Object holding members in order. A later duplicate key replaces the
// earlier value in place, as assigning to a Python dict does.
func NewObject(members ...Member) *Object {
	o := &Object{members: make([]Member, 0, len(members))}
	for _, m := range members {
		o.Set(m.Key, m.Value)
	}
	return o
}

// Len returns the number of keys.
func (o *Object) Len() int {
	if o == nil {
		return 0
	}
	return len(o.members)
}

// Members returns the members in order. The caller owns the slice, not the values in it.
func (o *Object) Members() []Member {
	if o == nil {
		return nil
	}
	return slices.Clone(o.members)
}

// Get returns the value of key and whether it is present.
func (o *Object) Get(key string) (any, bool) {
	if o == nil {
		return nil, false
	}
	for _, m := range o.members {
		if m.Key == key {
			return m.Value, true
		}
	}
	return nil, false
}

// Set sets key to v, keeping key's position when it is already present and appending it
// otherwise.
func (o *Object) Set(key string, v any) {
	for i := range o.members {
		if o.members[i].Key == key {
			o.members[i].Value = v
			return
		}
	}
	o.members = append(o.members, Member{Key: key, Value: v})
}

// Delete removes key, keeping the order of the others. It reports whether key was present.
func (o *Object) Delete(key string) bool {
	for i := range o.members {
		if o.members[i].Key == key {
			o.members = slices.Delete(o.members, i, i+1)
			return true
		}
	}
	return false
}

// Clone returns a deep copy of o.
func (o *Object) Clone() *Object {
	if o == nil {
		return nil
	}
	c := &Object{members: make([]Member, len(o.members))}
	for i, m := range o.members {
		c.members[i] = Member{Key: m.Key, Value: cloneValue(m.Value)}
	}
	return c
}

func cloneValue(v any) any {
	switch x := v.(type) {
	case *Object:
		return x.Clone()
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}

// MarshalJSON encodes o compactly with its keys in order (separators "," and ":", non-ASCII
// escaped as \uXXXX, numbers as Python prints them).
func (o *Object) MarshalJSON() ([]byte, error) {
	return Dumps(o, DumpOptions{Indent: -1, ItemSeparator: ",", KeySeparator: ":"})
}

// UnmarshalJSON decodes one JSON object, keeping key order.
func (o *Object) UnmarshalJSON(b []byte) error {
	v, err := DecodeOrdered(b)
	if err != nil {
		return err
	}
	obj, ok := v.(*Object)
	if !ok {
		return fmt.Errorf("decode ordered object: got %T, want a JSON object", v)
	}
	*o = *obj
	return nil
}

// DecodeOrdered decodes exactly one JSON value from b, keeping object key order: objects
// become *Object, arrays []any, numbers json.Number (their literal text), strings string.
// A duplicate key keeps its first position and its last value, like Python's json.loads.
// Trailing data after the value is an error.
func DecodeOrdered(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("decode JSON: trailing data after the value")
	}
	return v, nil
}

func decodeValue(d *json.Decoder) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &Object{}
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				key, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is %T", kt)
				}
				v, err := decodeValue(d)
				if err != nil {
					return nil, err
				}
				o.Set(key, v)
			}
			if _, err := d.Token(); err != nil { // '}'
				return nil, err
			}
			return o, nil
		case '[':
			arr := []any{}
			for d.More() {
				v, err := decodeValue(d)
				if err != nil {
					return nil, err
				}
				arr = append(arr, v)
			}
			if _, err := d.Token(); err != nil { // ']'
				return nil, err
			}
			return arr, nil
		}
		return nil, fmt.Errorf("unexpected delimiter %q", t)
	default:
		return t, nil // nil, bool, string, json.Number
	}
}

// DumpOptions chooses the shape of Dumps' output, mirroring Python's json.dumps arguments.
// ensure_ascii is always on (Python's default): Sluice only needs Python's default output.
type DumpOptions struct {
	// Indent is the number of spaces per nesting level; negative means no newlines at all
	// (Python indent=None). 0 means newlines without indentation (Python indent=0).
	Indent int
	// SortKeys sorts object keys by code point, as Python sorts str keys (Go compares the
	// UTF-8 bytes, which orders code points the same way).
	SortKeys bool
	// ItemSeparator and KeySeparator are Python's separators. Optional: "" means Python's
	// default, ", " without indent and "," with indent, and ": ".
	ItemSeparator, KeySeparator string
}

// Dumps encodes v exactly as Python's json.dumps(v, indent=…, sort_keys=…) would, with
// ensure_ascii=True and allow_nan=True: keys in Object order (or sorted), every character
// outside printable ASCII escaped as lower-case \uXXXX (surrogate pairs above the BMP),
// floats as Python's repr (1757213987.6643305, 1e-05, 1e+16, 100.0, NaN, Infinity) and integers
// as their digits.
//
// v may hold nil, bool, string, json.Number, int, int64, float64, []any, []string, *Object
// and map[string]any (whose keys are always sorted, Go maps having no order). A json.Number
// with '.', 'e' or 'E' is a Python float, otherwise a Python int, as json.loads would make it.
// Invalid UTF-8 in a string is encoded as \ufffd (Python strings cannot hold it).
// Any other type is an error.
func Dumps(v any, opt DumpOptions) ([]byte, error) {
	e := pyEncoder{opt: opt}
	if e.opt.ItemSeparator == "" {
		if opt.Indent >= 0 {
			e.opt.ItemSeparator = ","
		} else {
			e.opt.ItemSeparator = ", "
		}
	}
	if e.opt.KeySeparator == "" {
		e.opt.KeySeparator = ": "
	}
	if err := e.value(v, 0); err != nil {
		return nil, err
	}
	return e.buf.Bytes(), nil
}

type pyEncoder struct {
	buf bytes.Buffer
	opt DumpOptions
}

func (e *pyEncoder) newline(level int) {
	if e.opt.Indent < 0 {
		return
	}
	e.buf.WriteByte('\n')
	e.buf.WriteString(strings.Repeat(" ", e.opt.Indent*level))
}

func (e *pyEncoder) value(v any, level int) error {
	switch x := v.(type) {
	case nil:
		e.buf.WriteString("null")
	case bool:
		if x {
			e.buf.WriteString("true")
		} else {
			e.buf.WriteString("false")
		}
	case string:
		writePyString(&e.buf, x)
	case json.Number:
		s, err := pyNumber(x)
		if err != nil {
			return err
		}
		e.buf.WriteString(s)
	case int:
		e.buf.WriteString(strconv.Itoa(x))
	case int64:
		e.buf.WriteString(strconv.FormatInt(x, 10))
	case float64:
		e.buf.WriteString(PyFloatRepr(x))
	case []string:
		arr := make([]any, len(x))
		for i, s := range x {
			arr[i] = s
		}
		return e.array(arr, level)
	case []any:
		return e.array(x, level)
	case *Object:
		if x == nil {
			e.buf.WriteString("null")
			return nil
		}
		members := x.members
		if e.opt.SortKeys {
			members = slices.Clone(members)
			slices.SortStableFunc(members, func(a, b Member) int { return strings.Compare(a.Key, b.Key) })
		}
		return e.object(members, level)
	case map[string]any:
		members := make([]Member, 0, len(x))
		for k, val := range x {
			members = append(members, Member{k, val})
		}
		slices.SortFunc(members, func(a, b Member) int { return strings.Compare(a.Key, b.Key) })
		return e.object(members, level)
	default:
		return fmt.Errorf("python json: cannot encode %T", v)
	}
	return nil
}

func (e *pyEncoder) array(x []any, level int) error {
	if len(x) == 0 {
		e.buf.WriteString("[]")
		return nil
	}
	e.buf.WriteByte('[')
	for i, el := range x {
		if i > 0 {
			e.buf.WriteString(e.opt.ItemSeparator)
		}
		e.newline(level + 1)
		if err := e.value(el, level+1); err != nil {
			return err
		}
	}
	e.newline(level)
	e.buf.WriteByte(']')
	return nil
}

func (e *pyEncoder) object(members []Member, level int) error {
	if len(members) == 0 {
		e.buf.WriteString("{}")
		return nil
	}
	e.buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			e.buf.WriteString(e.opt.ItemSeparator)
		}
		e.newline(level + 1)
		writePyString(&e.buf, m.Key)
		e.buf.WriteString(e.opt.KeySeparator)
		if err := e.value(m.Value, level+1); err != nil {
			return err
		}
	}
	e.newline(level)
	e.buf.WriteByte('}')
	return nil
}

const hexDigits = "0123456789abcdef"

// writePyString writes s as Python's ensure_ascii encoder does (py_encode_basestring_ascii):
// '"' and '\\' and \n \r \t \b \f get short escapes; every other character outside ' '..'~'
// becomes \uXXXX with lower-case hex, characters above U+FFFF as a surrogate pair.
func writePyString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch c {
			case '"':
				b.WriteString(`\"`)
			case '\\':
				b.WriteString(`\\`)
			case '\n':
				b.WriteString(`\n`)
			case '\r':
				b.WriteString(`\r`)
			case '\t':
				b.WriteString(`\t`)
			case '\b':
				b.WriteString(`\b`)
			case '\f':
				b.WriteString(`\f`)
			default:
				if c >= ' ' && c <= '~' {
					b.WriteByte(c)
				} else {
					writeU(b, rune(c))
				}
			}
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r > 0xFFFF {
			r -= 0x10000
			writeU(b, 0xD800|(r>>10)&0x3FF)
			writeU(b, 0xDC00|r&0x3FF)
			continue
		}
		writeU(b, r) // includes utf8.RuneError for invalid bytes
	}
	b.WriteByte('"')
}

func writeU(b *bytes.Buffer, r rune) {
	b.WriteString(`\u`)
	b.WriteByte(hexDigits[r>>12&0xF])
	b.WriteByte(hexDigits[r>>8&0xF])
	b.WriteByte(hexDigits[r>>4&0xF])
	b.WriteByte(hexDigits[r&0xF])
}

// pyNumber renders a JSON number literal the way Python re-encodes what json.loads made of
// it: an int literal stays its digits (Python ints are unbounded), anything with a fraction or
// exponent is a float printed by repr.
func pyNumber(n json.Number) (string, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		var i big.Int
		if _, ok := i.SetString(s, 10); !ok {
			return "", fmt.Errorf("python json: bad integer literal %q", s)
		}
		return i.String(), nil // "-0" is the int 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			// Python's float() gives inf for overflow and 0.0 for underflow, like ParseFloat's value.
			return PyFloatRepr(f), nil
		}
		return "", fmt.Errorf("python json: bad float literal %q: %w", s, err)
	}
	return PyFloatRepr(f), nil
}

// PyFloatRepr formats f as Python's repr(float) and json.dumps do: the shortest digits that
// round-trip, in positional notation when the decimal exponent is in [-4, 16) (always with a
// fractional part, "100.0"), otherwise in scientific notation with a signed exponent of at
// least two digits ("1e+16", "1.5e-07"); NaN and infinities as NaN, Infinity, -Infinity.
func PyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	// Shortest round-trip digits: "-d.ddde±XX".
	s := strconv.FormatFloat(f, 'e', -1, 64)
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	mant, expStr, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expStr)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1 // value = 0.digits × 10^decpt
	if f == 0 {
		decpt = 1
	}
	if decpt > -4 && decpt <= 16 {
		switch {
		case decpt <= 0:
			return sign + "0." + strings.Repeat("0", -decpt) + digits
		case decpt >= len(digits):
			return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
		default:
			return sign + digits[:decpt] + "." + digits[decpt:]
		}
	}
	out := sign + digits[:1]
	if len(digits) > 1 {
		out += "." + digits[1:]
	}
	e := decpt - 1
	esign := "+"
	if e < 0 {
		esign, e = "-", -e
	}
	return fmt.Sprintf("%se%s%02d", out, esign, e)
}
