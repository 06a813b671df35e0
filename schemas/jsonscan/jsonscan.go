// Package jsonscan reads and writes JSON text without decoding it: small allocation-free
// helpers that find where a value ends, walk an object's top-level members with their raw
// values, name a value's type, and append keys, strings and objects the way encoding/json
// writes them. Chunk records and documents pass through Sluice as raw JSON (decode once,
// DESIGN.md); these helpers let the record rules and the sinks look inside without a decode.
//
// The helpers are defensive: malformed input gives an error or a false result, never a panic
// or an endless loop. They hold no state and are safe for concurrent use.
package jsonscan

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

// ErrMalformed is returned for JSON text that is not well formed.
var ErrMalformed = errors.New("malformed JSON")

// IsWS reports whether c is JSON insignificant whitespace.
func IsWS(c byte) bool { return c == ' ' || c == '\n' || c == '\r' || c == '\t' }

// SkipWS returns the index of the first non-whitespace byte of b at or after i.
func SkipWS(b []byte, i int) int {
	for i < len(b) && IsWS(b[i]) {
		i++
	}
	return i
}

// FirstByte returns the first non-whitespace byte of b, or 0 when there is none.
func FirstByte(b []byte) byte {
	i := SkipWS(b, 0)
	if i >= len(b) {
		return 0
	}
	return b[i]
}

// Type names the JSON type of the value in raw, for error messages.
func Type(raw []byte) string {
	switch c := FirstByte(raw); {
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

// IsNull reports whether raw is absent or the JSON literal null.
func IsNull(raw []byte) bool {
	c := FirstByte(raw)
	return c == 0 || c == 'n'
}

// StringEnd returns the index just past the closing quote of the string starting at b[i]
// (which must be '"'), and whether the string contains escapes.
func StringEnd(b []byte, i int) (end int, escaped bool, err error) {
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
	return 0, false, ErrMalformed
}

// structural marks the bytes ValueEnd stops at inside a container: quote and brackets.
const structural = "" +
	"                                  \"                             " +
	"                           [ ]                             { }  " +
	"                                                                " +
	"                                                                "

// ValueEnd returns the index just past the JSON value starting at b[i].
func ValueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, ErrMalformed
	}
	switch c := b[i]; c {
	case '"':
		end, _, err := StringEnd(b, i)
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
				end, _, err := StringEnd(b, i)
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
		return 0, ErrMalformed
	default:
		start := i
		for i < len(b) && !IsWS(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
			i++
		}
		if i == start {
			return 0, ErrMalformed
		}
		return i, nil
	}
}

// members is EachMember without the trailing check; it returns the index after the object,
// or -1 when fn stopped early.
func members(obj []byte, fn func(key []byte, escaped bool, val []byte) bool) (int, error) {
	i := SkipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return 0, ErrMalformed
	}
	i = SkipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(obj) || obj[i] != '"' {
			return 0, ErrMalformed
		}
		kend, esc, err := StringEnd(obj, i)
		if err != nil {
			return 0, err
		}
		key := obj[i+1 : kend-1]
		i = SkipWS(obj, kend)
		if i >= len(obj) || obj[i] != ':' {
			return 0, ErrMalformed
		}
		i = SkipWS(obj, i+1)
		vend, err := ValueEnd(obj, i)
		if err != nil {
			return 0, err
		}
		if !fn(key, esc, obj[i:vend]) {
			return -1, nil
		}
		i = SkipWS(obj, vend)
		if i >= len(obj) {
			return 0, ErrMalformed
		}
		if obj[i] == '}' {
			return i + 1, nil
		}
		if obj[i] != ',' {
			return 0, ErrMalformed
		}
		i = SkipWS(obj, i+1)
	}
}

// KeyIs reports whether the raw key (as passed by EachMember) decodes to name.
func KeyIs(key []byte, escaped bool, name string) bool {
	if !escaped {
		return string(key) == name
	}
	var s string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	return json.Unmarshal(q, &s) == nil && s == name
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string the way encoding/json does with SetEscapeHTML(false):
// only '"', '\\', control characters, U+2028 and U+2029 are escaped; invalid UTF-8 becomes
// U+FFFD. Every other byte is copied as is, so text round-trips exactly.
func AppendString(dst []byte, s string) []byte {
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

// AppendRaw appends the raw JSON value v, compacting it first when it spans several lines
// (pretty-printed input), so stored documents do not carry indentation.
func AppendRaw(dst []byte, v []byte) []byte {
	if bytes.IndexByte(v, '\n') < 0 {
		return append(dst, bytes.TrimSpace(v)...)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return append(dst, bytes.TrimSpace(v)...)
	}
	return append(dst, buf.Bytes()...)
}

// Member is one key and raw value of an object being assembled by AppendObject.
type Member struct {
	Key string
	Val []byte
}

// ByKey orders members by key (slices.SortFunc: no reflection, unlike sort.Slice).
func ByKey(a, b Member) int { return strings.Compare(a.Key, b.Key) }

// AppendObject appends a JSON object with the members in order.
func AppendObject(dst []byte, ms []Member) []byte {
	dst = append(dst, '{')
	for i, m := range ms {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendString(dst, m.Key)
		dst = append(dst, ':')
		dst = AppendRaw(dst, m.Val)
	}
	return append(dst, '}')
}

// EachMember calls fn for each top-level member of the JSON object obj, in order: the raw
// key (without its quotes, escapes not decoded), whether the key has escapes, and the raw
// value. fn returns false to stop. It checks the object's structure, not its full grammar
// (use json.Valid for that), and fails with ErrMalformed when obj is not one object, or when
// anything but white space follows the object. It allocates nothing; the slices alias obj.
// Sinks use it to look at a document's top level without decoding it.
func EachMember(obj []byte, fn func(key []byte, escaped bool, val []byte) bool) error {
	end, err := members(obj, fn)
	if err != nil {
		return err
	}
	if end >= 0 && SkipWS(obj, end) != len(obj) {
		return ErrMalformed
	}
	return nil
}

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
