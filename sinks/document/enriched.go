package document

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// ConvertEnriched turns one legacy Pass B enriched_chunks item into a canonical chunk record,
// as the legacy loader did (reference ttrpg-center.md §1.2):
//
//   - chunk_id is kept as is (no default id is ever invented; Build rejects a record without one);
//   - content is enhanced_content when it is a non-empty string, else original_content;
//   - metadata gets chunk_type "enriched", entities and categories (default []), complexity
//     (default "unknown") and confidence (default 0.0), over any metadata the item carried;
//   - the consumed fields (enhanced_content, original_content, entities, categories,
//     complexity, confidence) are dropped; every other field passes through untouched.
//
// The result is a compact JSON object with keys chunk_id, content, metadata first. An item
// that is not a JSON object, or whose content fields or metadata have the wrong type, gives
// fault.Permanent(fault.Validation, …). ConvertEnriched is safe for concurrent use.
func ConvertEnriched(raw json.RawMessage) (json.RawMessage, error) {
	fields, err := decodeObject(raw, true)
	if err != nil {
		return nil, err
	}
	if err := convertEnriched(fields); err != nil {
		return nil, err
	}
	ms := make([]member, 0, len(fields))
	for _, k := range [...]string{"chunk_id", "content", "metadata"} {
		if v, ok := fields[k]; ok {
			ms = append(ms, member{k, v})
			delete(fields, k)
		}
	}
	ms = appendSorted(ms, fields)
	return appendObject(make([]byte, 0, len(raw)+128), ms), nil
}

// decodeObject decodes the top level of a JSON object, keeping values raw: the values alias
// raw, which must not change while they are in use. With validate, all of raw is validated
// first (json.Valid); without, the split is only structural and the caller must validate
// every value it uses (Build does, through Limits.Check on the body). Either way it is
// cheaper than json.Unmarshal into a map, which validates, then scans and copies every
// value again.
func decodeObject(raw []byte, validate bool) (map[string]json.RawMessage, error) {
	return decodeObjectInto(make(map[string]json.RawMessage, 16), raw, validate)
}

// decodeObjectInto is decodeObject into fields, which must be empty.
func decodeObjectInto(fields map[string]json.RawMessage, raw []byte, validate bool) (map[string]json.RawMessage, error) {
	if c := firstByte(raw); c != '{' {
		return nil, fault.Permanentf(fault.Validation, "record must be a JSON object, got %s", jsonType(raw))
	}
	if validate && !json.Valid(raw) {
		return nil, syntaxError(raw)
	}
	var keyErr error
	err := eachMember(raw, func(key []byte, esc bool, val []byte) bool {
		k := string(key)
		if esc {
			q := make([]byte, 0, len(key)+2)
			q = append(append(append(q, '"'), key...), '"')
			if keyErr = json.Unmarshal(q, &k); keyErr != nil {
				return false
			}
		}
		fields[k] = val // a repeated key: the last wins, as with encoding/json
		return true
	})
	if err == nil {
		err = keyErr
	}
	if err != nil {
		if !json.Valid(raw) {
			return nil, syntaxError(raw)
		}
		return nil, fault.Permanentf(fault.Validation, "decode record: %w", err)
	}
	return fields, nil
}

// syntaxError describes why raw is not valid JSON.
func syntaxError(raw []byte) error {
	var v json.RawMessage
	err := json.Unmarshal(raw, &v) // for the syntax error with its offset
	if err == nil {
		err = errMalformed
	}
	return fault.Permanentf(fault.Validation, "decode record: %w", err)
}

// appendSorted appends the members of fields to ms in key order.
func appendSorted(ms []member, fields map[string]json.RawMessage) []member {
	start := len(ms)
	for k, v := range fields {
		ms = append(ms, member{k, v})
	}
	tail := ms[start:]
	slices.SortFunc(tail, byKey)
	return ms
}

// convertEnriched applies the ConvertEnriched rules to decoded fields in place.
func convertEnriched(fields map[string]json.RawMessage) error {
	enhanced, eok := fields["enhanced_content"]
	original, ook := fields["original_content"]
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		ok   bool
	}{{"enhanced_content", enhanced, eok}, {"original_content", original, ook}} {
		if f.ok && !isNull(f.raw) && firstByte(f.raw) != '"' {
			return fault.Permanentf(fault.Validation, "%s must be a string, got %s", f.name, jsonType(f.raw))
		}
	}
	switch {
	case eok && !isNull(enhanced) && string(enhanced) != `""`:
		fields["content"] = enhanced
	case ook && !isNull(original):
		fields["content"] = original
	case eok && !isNull(enhanced):
		fields["content"] = enhanced
	}

	md := []member{{"chunk_type", json.RawMessage(`"enriched"`)}}
	for _, d := range []struct{ name, def string }{
		{"entities", `[]`}, {"categories", `[]`}, {"complexity", `"unknown"`}, {"confidence", `0.0`},
	} {
		v, ok := fields[d.name]
		if !ok || isNull(v) {
			v = json.RawMessage(d.def)
		}
		md = append(md, member{d.name, v})
	}
	if old, ok := fields["metadata"]; ok && !isNull(old) {
		oldFields, err := decodeObject(old, true)
		if err != nil {
			return fault.Permanentf(fault.Validation, "metadata must be an object, got %s", jsonType(old))
		}
		for _, m := range md {
			delete(oldFields, m.key)
		}
		md = appendSorted(md, oldFields)
	}
	fields["metadata"] = appendObject(nil, md)
	for _, f := range [...]string{"enhanced_content", "original_content", "entities", "categories", "complexity", "confidence"} {
		delete(fields, f)
	}
	return nil
}

// needsEnrichedConversion reports whether a record is a legacy enriched item: no content or
// text, but enhanced_content or original_content.
func needsEnrichedConversion(fields map[string]json.RawMessage) bool {
	if _, ok := fields["content"]; ok {
		return false
	}
	if _, ok := fields["text"]; ok {
		return false
	}
	_, e := fields["enhanced_content"]
	_, o := fields["original_content"]
	return e || o
}

// RecordID returns the chunk id of a record under the same rules as Build: chunk_id, else
// id (a field that is null counts as absent); it must be a non-empty JSON string. raw must
// be a JSON object. A legacy enriched item has the same id before and after ConvertEnriched.
// Errors are fault.Permanent(fault.Validation, …) whose text is the bare reason, such as
// "no id" or "id must be a string, got number". RecordID is safe for concurrent use and
// does not decode the rest of the record.
func RecordID(raw json.RawMessage) (string, error) {
	if firstByte(raw) != '{' {
		return "", fault.Permanentf(fault.Validation, "record must be a JSON object, got %s", jsonType(raw))
	}
	var chunkID, id []byte
	err := eachMember(raw, func(key []byte, esc bool, val []byte) bool {
		switch {
		case keyIs(key, esc, "chunk_id"):
			chunkID = val
		case keyIs(key, esc, "id"):
			id = val
		}
		return true
	})
	if err != nil {
		return "", fault.Permanentf(fault.Validation, "record is not well-formed JSON")
	}
	v, _, err := pickID(chunkID, id)
	return v, err
}

// pickID applies the id rules to the raw chunk_id and id values (nil when absent) and
// returns the id and the field it came from.
func pickID(chunkID, id []byte) (string, string, error) {
	raw, field := chunkID, "chunk_id"
	if isNull(raw) {
		raw, field = id, "id"
	}
	if isNull(raw) {
		return "", "", fault.Permanentf(fault.Validation, "no id")
	}
	if firstByte(raw) != '"' {
		return "", "", fault.Permanentf(fault.Validation, "%s must be a string, got %s", field, jsonType(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", "", fault.Permanent(fault.Validation, fmt.Errorf("decode %s: %w", field, err))
	}
	if s == "" {
		return "", "", fault.Permanentf(fault.Validation, "%s is empty", field)
	}
	// The contract (schemas/chunk.v1.json $defs/id) has no control characters in an id: it
	// becomes the document _id and part of Nats-Msg-Id, and the API refuses such an id at
	// its doors, so a chunk stored under one could never be read back.
	if i := strings.IndexFunc(s, func(c rune) bool { return c < 0x20 || c == 0x7f }); i >= 0 {
		return "", "", fault.Permanentf(fault.Validation, "%s has a control character (U+%04X at byte %d)", field, s[i], i)
	}
	return s, field, nil
}
