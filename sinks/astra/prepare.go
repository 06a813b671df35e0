package astra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/document"
)

// prepare checks d and returns the body to send: d.Body without any VersionField of its
// own, with VersionField set to d.Version and, on a vector collection, "embedding" moved to
// "$vector". Every error is permanent.
func (s *Sink) prepare(d document.Doc) (json.RawMessage, error) {
	if d.ID == "" {
		return nil, fault.Permanentf(fault.Validation, "empty document id")
	}
	// Check validates the JSON (grammar, UTF-8) as well as the limits, so the scan below
	// runs on well-formed input.
	if err := s.cfg.Limits.Check(d.Body); err != nil {
		return nil, err
	}
	members, err := topMembers(d.Body)
	if err != nil {
		return nil, fault.Permanent(fault.Validation, err)
	}
	out := make([]byte, 0, len(d.Body)+40)
	out = append(out, '{')
	seen := make(map[string]bool, len(members))
	var idOK bool
	for _, m := range members {
		if seen[m.key] {
			return nil, fault.Permanentf(fault.Validation, "field %q appears more than once", m.key)
		}
		seen[m.key] = true
		val := d.Body[m.valStart:m.valEnd]
		key := d.Body[m.keyStart:m.keyEnd]
		switch m.key {
		case "_id":
			var id string
			if val[0] != '"' || json.Unmarshal(val, &id) != nil {
				return nil, fault.Permanentf(fault.Validation, `"_id" is %s, want a string`, abbrev(val))
			}
			if id != d.ID {
				return nil, fault.Permanentf(fault.Validation, `"_id" %q differs from the document id`, id)
			}
			idOK = true
		case VersionField:
			continue // ours replaces it
		case unindexedField:
			if !s.cfg.Vector {
				break
			}
			if string(val) == "null" {
				continue
			}
			if n, ok := numberArrayLen(val); !ok || n != s.cfg.VectorDimension {
				return nil, fault.Permanent(fault.Validation, fmt.Errorf(
					"%q must be an array of %d numbers for the vector collection, got %s",
					unindexedField, s.cfg.VectorDimension, describeArray(val, n, ok)))
			}
			key = []byte(`"$vector"`)
			if seen["$vector"] {
				return nil, fault.Permanentf(fault.Validation, `both "embedding" and "$vector" are set`)
			}
			seen["$vector"] = true
		case "$vector":
			if seen[unindexedField] && s.cfg.Vector {
				return nil, fault.Permanentf(fault.Validation, `both "embedding" and "$vector" are set`)
			}
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, key...)
		out = append(out, ':')
		out = append(out, val...)
	}
	if !idOK {
		return nil, fault.Permanentf(fault.Validation, `body has no "_id"`)
	}
	out = append(out, `,"`+VersionField+`":`...)
	out = strconv.AppendUint(out, d.Version, 10)
	out = append(out, '}')
	return out, nil
}

func abbrev(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

func describeArray(val []byte, n int, ok bool) string {
	if !ok {
		return "a " + jsonKind(val)
	}
	return strconv.Itoa(n) + " numbers"
}

func jsonKind(v []byte) string {
	switch v[0] {
	case '{':
		return "object"
	case '[':
		return "array that is not all numbers"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// member locates one top-level member of a JSON object.
type member struct {
	key              string // decoded
	keyStart, keyEnd int    // the raw key, quotes included
	valStart, valEnd int
}

// topMembers returns the top-level members of body, a well-formed JSON object.
func topMembers(body []byte) ([]member, error) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, errors.New("body is not a JSON object")
	}
	var ms []member
	i++
	for {
		i = skipSpace(body, i)
		if i >= len(body) {
			return nil, errors.New("body is not a JSON object: unterminated")
		}
		if body[i] == '}' {
			return ms, nil
		}
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
		var m member
		m.keyStart = i
		m.keyEnd = skipString(body, i)
		raw := body[m.keyStart:m.keyEnd]
		if bytes.IndexByte(raw, '\\') < 0 {
			m.key = string(raw[1 : len(raw)-1])
		} else if err := json.Unmarshal(raw, &m.key); err != nil {
			return nil, fmt.Errorf("decode field name: %w", err)
		}
		i = skipSpace(body, m.keyEnd)
		i = skipSpace(body, i+1) // the ':'
		m.valStart = i
		m.valEnd = skipValue(body, i)
		i = m.valEnd
		ms = append(ms, m)
	}
}

// numberArrayLen returns the length of val when it is an array of numbers only.
func numberArrayLen(val []byte) (int, bool) {
	if val[0] != '[' {
		return 0, false
	}
	n := 0
	i := skipSpace(val, 1)
	if i < len(val) && val[i] == ']' {
		return 0, true
	}
	for i < len(val) {
		i = skipSpace(val, i)
		c := val[i]
		if c != '-' && (c < '0' || c > '9') {
			return 0, false
		}
		for i < len(val) && val[i] != ',' && val[i] != ']' && !isSpace(val[i]) {
			i++
		}
		n++
		i = skipSpace(val, i)
		if i < len(val) && val[i] == ']' {
			return n, true
		}
		i++ // the ','
	}
	return 0, false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index just past the well-formed JSON value starting at b[i].
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default: // number, true, false, null
		for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && !isSpace(b[i]) {
			i++
		}
		return i
	}
}
