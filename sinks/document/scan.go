package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// This file holds small allocation-free helpers over JSON text that encoding/json already
// validated (or that the caller produced). They are defensive: malformed input gives an
// error or a false result, never a panic or an endless loop.

var errMalformed = errors.New("malformed JSON")

// isWS reports whether c is JSON insignificant whitespace.
func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

// skipWS returns the index of the first non-whitespace byte of b at or after i.
func skipWS(b []byte, i int) int {
	for i < len(b) && isWS(b[i]) {
		i++
	}
	return i
}

// firstByte returns the first non-whitespace byte of b, or 0 when there is none.
func firstByte(b []byte) byte {
	i := skipWS(b, 0)
	if i >= len(b) {
		return 0
	}
	return b[i]
}

// jsonType names the JSON type of the value in raw, for error messages.
func jsonType(raw []byte) string {
	switch c := firstByte(raw); {
	case c == '"':
		return "string"
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == 't' || c == 'f':
		return "boolean"
	case c == 'n':
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	case c == 0:
		return "nothing"
	default:
		return "invalid JSON"
	}
}

// isNull reports whether raw is absent or the JSON literal null.
func isNull(raw []byte) bool {
	c := firstByte(raw)
	return c == 0 || c == 'n'
}

// stringEnd returns the index just past the closing quote of the string starting at b[i]
// (which must be '"'), and whether the string contains escapes.
func stringEnd(b []byte, i int) (end int, escaped bool, err error) {
	i++
	for i < len(b) {
		switch b[i] {
		case '"':
			return i + 1, escaped, nil
		case '\\':
			escaped = true
			i += 2
		default:
			i++
		}
	}
	return 0, false, errMalformed
}

// structural marks the bytes valueEnd stops at inside a container: quote and brackets.
const structural = "" +
	"                                  \"                             " +
	"                           [ ]                             { }  " +
	"                                                                " +
	"                                                                "

// valueEnd returns the index just past the JSON value starting at b[i].
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errMalformed
	}
	switch c := b[i]; c {
	case '"':
		end, _, err := stringEnd(b, i)
		return end, err
	case '{', '[':
		depth := 0
		for i < len(b) {
			// Most bytes of a container are not structural; skip them fast.
			for i < len(b) && structural[b[i]] == ' ' {
				i++
			}
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"':
				end, _, err := stringEnd(b, i)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errMalformed
	default:
		start := i
		for i < len(b) && !isWS(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		if i == start {
			return 0, errMalformed
		}
		return i, nil
	}
}

// eachMember calls fn for every member of the JSON object obj, in order, with the raw key
// (without quotes, escapes not decoded), whether the key has escapes, and the raw value.
// fn returns false to stop. It returns an error when obj does not start with an object, or
// when anything but white space follows the object.
func eachMember(obj []byte, fn func(key []byte, escaped bool, val []byte) bool) error {
	end, err := members(obj, fn)
	if err != nil {
		return err
	}
	if end >= 0 && skipWS(obj, end) != len(obj) {
		return errMalformed
	}
	return nil
}

// members is eachMember without the trailing check; it returns the index after the object,
// or -1 when fn stopped early.
func members(obj []byte, fn func(key []byte, escaped bool, val []byte) bool) (int, error) {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, errMalformed
	}
	i = skipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return 0, errMalformed
		}
		kend, esc, err := stringEnd(obj, i)
		if err != nil {
			return 0, err
		}
		key := obj[i+1 : kend-1]
		i = skipWS(obj, kend)
		if i >= len(obj) || obj[i] != ':' {
			return 0, errMalformed
		}
		i = skipWS(obj, i+1)
		vend, err := valueEnd(obj, i)
		if err != nil {
			return 0, err
		}
		if !fn(key, esc, obj[i:vend]) {
			return -1, nil
		}
		i = skipWS(obj, vend)
		if i >= len(obj) {
			return 0, errMalformed
		}
		if obj[i] == '}' {
			return i + 1, nil
		}
		if obj[i] != ',' {
			return 0, errMalformed
		}
		i = skipWS(obj, i+1)
	}
}

// keyIs reports whether the raw key (as passed by eachMember) decodes to name.
func keyIs(key []byte, escaped bool, name string) bool {
	if !escaped {
		return string(key) == name
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	return json.Unmarshal(q, &s) == nil && s == name
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string the way encoding/json does with SetEscapeHTML(false):
// only '"', '\\', control characters, U+2028 and U+2029 are escaped; invalid UTF-8 becomes
// U+FFFD. Every other byte is copied as is, so text round-trips exactly.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendRaw appends the raw JSON value v, compacting it first when it spans several lines
// (pretty-printed input), so stored documents do not carry indentation.
func appendRaw(dst []byte, v []byte) []byte {
	if bytes.IndexByte(v, '\n') < 0 {
		return append(dst, bytes.TrimSpace(v)...)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return append(dst, bytes.TrimSpace(v)...)
	}
	return append(dst, buf.Bytes()...)
}

// member is one key and raw value of an object being assembled.
type member struct {
	key string
	val []byte
}

// byKey orders members by key (slices.SortFunc: no reflection, unlike sort.Slice).
func byKey(a, b member) int { return strings.Compare(a.key, b.key) }

// appendObject appends a JSON object with the members in order.
func appendObject(dst []byte, ms []member) []byte {
	dst = append(dst, '{')
	for i, m := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, m.key)
		dst = append(dst, ':')
		dst = appendRaw(dst, m.val)
	}
	return append(dst, '}')
}

// EachMember calls fn for each top-level member of the JSON object obj, in order: the raw
// key (without its quotes, escapes not decoded), whether the key has escapes, and the raw
// value. fn returns false to stop. It checks the object's structure, not its full grammar
// (use Limits.Check or json.Valid for that), and fails when obj is not one object. It
// allocates nothing; the slices alias obj. Sinks use it to look at a document's top level
// without decoding it.
func EachMember(obj []byte, fn func(key []byte, escaped bool, val []byte) bool) error {
	return eachMember(obj, fn)
}

// KeyIs reports whether a raw key from EachMember decodes to name.
func KeyIs(key []byte, escaped bool, name string) bool { return keyIs(key, escaped, name) }

// DecodeKey returns a raw key from EachMember as a string.
func DecodeKey(key []byte, escaped bool) (string, error) {
	if !escaped {
		return string(key), nil
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	if err := json.Unmarshal(q, &s); err != nil {
		return "", fmt.Errorf("decode field name: %w", err)
	}
	return s, nil
}
