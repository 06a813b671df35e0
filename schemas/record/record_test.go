package record

import (
	"encoding/json"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

func TestConvertEnriched(t *testing.T) {
	tests := []struct {
		name, raw, want string
	}{
		{"full item",
			`{"chunk_id":"c","original_content":"o","enhanced_content":"e","entities":["x"],"categories":["combat"],"complexity":"advanced","confidence":0.8}`,
			`{"chunk_id":"c","content":"e","metadata":{"chunk_type":"enriched","entities":["x"],"categories":["combat"],"complexity":"advanced","confidence":0.8}}`},
		{"mock item defaults",
			`{"chunk_id":"chunk_001","enhanced_content":"e <b>","entities":[],"categories":["general"],"complexity":"basic"}`,
			`{"chunk_id":"chunk_001","content":"e <b>","metadata":{"chunk_type":"enriched","entities":[],"categories":["general"],"complexity":"basic","confidence":0.0}}`},
		{"empty enhanced falls back to original, other fields kept",
			`{"chunk_id":"c","enhanced_content":"","original_content":"o","page":3,"metadata":{"page":3,"chunk_type":"text"}}`,
			`{"chunk_id":"c","content":"o","metadata":{"chunk_type":"enriched","entities":[],"categories":[],"complexity":"unknown","confidence":0.0,"page":3},"page":3}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConvertEnriched(json.RawMessage(tc.raw))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
	if _, err := ConvertEnriched(json.RawMessage(`[1]`)); fault.ClassOf(err) != fault.Validation {
		t.Errorf("array item: %v", err)
	}
}

func TestID(t *testing.T) {
	tests := []struct{ name, raw, id, err string }{
		{"chunk_id", `{"content":"x","chunk_id":"a"}`, "a", ""},
		{"id", `{"id":"b"}`, "b", ""},
		{"escaped key and value", `{"chunk\u005fid":"a\u00e9"}`, "aé", ""},
		{"nested id ignored", `{"metadata":{"id":"x"}}`, "", "no id"},
		{"number", `{"id":90210}`, "", "id must be a string, got number"},
		{"not object", `"x"`, "", "record must be a JSON object, got string"},
		// Regression (issue 11, finding 8, found by the binary-level fault suite): a chunk
		// whose id held a control character, against the contract (schemas/chunk.v1.json
		// $defs/id), was written, under an _id the API's doors refuse; it is rejected now.
		{"control character in chunk_id", `{"chunk_id":"bad\u0001id","content":"x"}`, "", "chunk_id has a control character (U+0001 at byte 3)"},
		{"NUL in id", `{"id":"\u0000"}`, "", "id has a control character (U+0000 at byte 0)"},
		{"DEL in id", `{"id":"a\u007f"}`, "", "id has a control character (U+007F at byte 1)"},
		{"tab in id", `{"id":"a\tb"}`, "", "id has a control character (U+0009 at byte 1)"},
		{"C1 and other Unicode kept", `{"id":"a\u0085é✓"}`, "a\u0085é✓", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ID(json.RawMessage(tc.raw))
			if tc.err == "" {
				if err != nil || id != tc.id {
					t.Fatalf("got %q, %v; want %q", id, err, tc.id)
				}
				return
			}
			if err == nil || err.Error() != tc.err || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("got %q, %v; want error %q", id, err, tc.err)
			}
		})
	}
}
