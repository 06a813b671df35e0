// Package record holds the rules of the Python system's chunk record (reference
// ttrpg-center.md §1.2-1.3) that both the file readers and the document builder apply: where
// a record's id comes from (ID, PickID) and how a legacy Pass B enriched item becomes a
// canonical record (ConvertEnriched). Records stay raw JSON: the top level is split with
// package jsonscan, never decoded into Go values.
//
// Every error is fault.Permanent(fault.Validation, …): a record that breaks these rules can
// never succeed. The package holds no state; every function is safe for concurrent use.
package record

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
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
	fields, err := decode(raw, true)
	if err != nil {
		return nil, err
	}
	if err := ConvertEnrichedFields(fields); err != nil {
		return nil, err
	}
	ms := make([]jsonscan.Member, 0, len(fields))
	for _, k := range [...]string{"chunk_id", "content", "metadata"} {
		if v, ok := fields[k]; ok {
			ms = append(ms, jsonscan.Member{Key: k, Val: v})
			delete(fields, k)
		}
	}
	ms = appendSorted(ms, fields)
	return jsonscan.AppendObject(make([]byte, 0, len(raw)+128), ms), nil
}

// decode is DecodeInto a new map.
func decode(raw []byte, validate bool) (map[string]json.RawMessage, error) {
	return DecodeInto(make(map[string]json.RawMessage, 16), raw, validate)
}

// DecodeInto decodes the top level of the JSON object raw into fields (which must be empty),
// keeping values raw: the values alias raw, which must not change while they are in use. A
// repeated key keeps its last value, as with encoding/json. With validate, all of raw is
// validated first (json.Valid); without, the split is only structural and the caller must
// validate every value it uses (document.Builder.Build does, through Limits.Check on the
// body). Either way it is cheaper than json.Unmarshal into a map, which validates, then scans
// and copies every value again. A raw that is not an object gives fault.Validation.
func DecodeInto(fields map[string]json.RawMessage, raw []byte, validate bool) (map[string]json.RawMessage, error) {
	if c := jsonscan.FirstByte(raw); c != '{' {
		return nil, fault.Permanentf(fault.Validation, "record must be a JSON object, got %s", jsonscan.Type(raw))
	}
	if validate && !json.Valid(raw) {
		return nil, SyntaxError(raw)
	}
	var keyErr error
	err := jsonscan.EachMember(raw, func(key []byte, esc bool, val []byte) bool {
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
			return nil, SyntaxError(raw)
		}
		return nil, fault.Permanentf(fault.Validation, "decode record: %w", err)
	}
	return fields, nil
}

// SyntaxError returns a fault.Validation error that says why raw is not valid JSON (with
// encoding/json's offset), for a caller that found raw broken.
func SyntaxError(raw []byte) error {
	var v json.RawMessage
	err := json.Unmarshal(raw, &v) // for the syntax error with its offset
	if err == nil {
		err = jsonscan.ErrMalformed
	}
	return fault.Permanentf(fault.Validation, "decode record: %w", err)
}

// appendSorted appends the members of fields to ms in key order.
func appendSorted(ms []jsonscan.Member, fields map[string]json.RawMessage) []jsonscan.Member {
	start := len(ms)
	for k, v := range fields {
		ms = append(ms, jsonscan.Member{Key: k, Val: v})
	}
	tail := ms[start:]
	slices.SortFunc(tail, jsonscan.ByKey)
	return ms
}

// ConvertEnrichedFields applies the ConvertEnriched rules in place to fields decoded by
// DecodeInto; the new metadata value is a fresh slice, the others still alias the record.
func ConvertEnrichedFields(fields map[string]json.RawMessage) error {
	enhanced, eok := fields["enhanced_content"]
	original, ook := fields["original_content"]
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		ok   bool
	}{{"enhanced_content", enhanced, eok}, {"original_content", original, ook}} {
		if f.ok && !jsonscan.IsNull(f.raw) && jsonscan.FirstByte(f.raw) != '"' {
			return fault.Permanentf(fault.Validation, "%s must be a string, got %s", f.name, jsonscan.Type(f.raw))
		}
	}
	switch {
	case eok && !jsonscan.IsNull(enhanced) && string(enhanced) != `""`:
		fields["content"] = enhanced
	case ook && !jsonscan.IsNull(original):
		fields["content"] = original
	case eok && !jsonscan.IsNull(enhanced):
		fields["content"] = enhanced
	}

	md := []jsonscan.Member{{Key: "chunk_type", Val: json.RawMessage(`"enriched"`)}}
	for _, d := range []struct{ name, def string }{
		{"entities", `[]`}, {"categories", `[]`}, {"complexity", `"unknown"`}, {"confidence", `0.0`},
	} {
		v, ok := fields[d.name]
		if !ok || jsonscan.IsNull(v) {
			v = json.RawMessage(d.def)
		}
		md = append(md, jsonscan.Member{Key: d.name, Val: v})
	}
	if old, ok := fields["metadata"]; ok && !jsonscan.IsNull(old) {
		oldFields, err := decode(old, true)
		if err != nil {
			return fault.Permanentf(fault.Validation, "metadata must be an object, got %s", jsonscan.Type(old))
		}
		for _, m := range md {
			delete(oldFields, m.Key)
		}
		md = appendSorted(md, oldFields)
	}
	fields["metadata"] = jsonscan.AppendObject(nil, md)
	for _, f := range [...]string{"enhanced_content", "original_content", "entities", "categories", "complexity", "confidence"} {
		delete(fields, f)
	}
	return nil
}

// IsEnriched reports whether a record is a legacy enriched item: no content or
// text, but enhanced_content or original_content.
func IsEnriched(fields map[string]json.RawMessage) bool {
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

// ID returns the chunk id of a record under the same rules as document.Builder.Build
// (PickID): chunk_id, else
// id (a field that is null counts as absent); it must be a non-empty JSON string. raw must
// be a JSON object. A legacy enriched item has the same id before and after ConvertEnriched.
// Errors are fault.Permanent(fault.Validation, …) whose text is the bare reason, such as
// "no id" or "id must be a string, got number". ID is safe for concurrent use and
// does not decode the rest of the record.
func ID(raw json.RawMessage) (string, error) {
	if jsonscan.FirstByte(raw) != '{' {
		return "", fault.Permanentf(fault.Validation, "record must be a JSON object, got %s", jsonscan.Type(raw))
	}
	var chunkID, id []byte
	err := jsonscan.EachMember(raw, func(key []byte, esc bool, val []byte) bool {
		switch {
		case jsonscan.KeyIs(key, esc, "chunk_id"):
			chunkID = val
		case jsonscan.KeyIs(key, esc, "id"):
			id = val
		}
		return true
	})
	if err != nil {
		return "", fault.Permanentf(fault.Validation, "record is not well-formed JSON")
	}
	v, _, err := PickID(chunkID, id)
	return v, err
}

// PickID applies the id rules to the raw chunk_id and id values (nil when absent) and
// returns the id and the field it came from ("chunk_id" or "id"). The id must be a non-empty
// JSON string without control characters; a null field counts as absent.
func PickID(chunkID, id []byte) (string, string, error) {
	raw, field := chunkID, "chunk_id"
	if jsonscan.IsNull(raw) {
		raw, field = id, "id"
	}
	if jsonscan.IsNull(raw) {
		return "", "", fault.Permanentf(fault.Validation, "no id")
	}
	if jsonscan.FirstByte(raw) != '"' {
		return "", "", fault.Permanentf(fault.Validation, "%s must be a string, got %s", field, jsonscan.Type(raw))
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
