package astra

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
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
		val, key := m.val, m.rawKey
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
		case VersionField, PrevJobsField:
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

// member is one top-level member of a JSON object.
type member struct {
	key    string // decoded
	rawKey []byte // with its quotes, as in the body
	val    []byte
}

// topMembers returns the top-level members of body, a well-formed JSON object.
func topMembers(body []byte) ([]member, error) {
	var ms []member
	var kerr error
	err := jsonscan.EachMember(body, func(key []byte, escaped bool, val []byte) bool {
		k, err := jsonscan.DecodeKey(key, escaped)
		if err != nil {
			kerr = err
			return false
		}
		// The raw key with its quotes: key aliases body, so the quotes sit on either side.
		start := cap(body) - cap(key) - 1
		ms = append(ms, member{key: k, rawKey: body[start : start+len(key)+2], val: val})
		return true
	})
	if err == nil {
		err = kerr
	}
	if err != nil {
		return nil, fmt.Errorf("body is not a JSON object: %w", err)
	}
	return ms, nil
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
