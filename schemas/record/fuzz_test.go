package record

import (
	"encoding/json"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// FuzzConvertEnriched converts arbitrary items. Properties: no panic; every error is
// permanent fault.Validation; a converted item is a valid JSON object whose id (ID) is the
// item's own id, as the package promises, and converting is deterministic.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzConvertEnriched$' -fuzztime 10m ./schemas/record/
func FuzzConvertEnriched(f *testing.F) {
	for _, s := range []string{
		`{"chunk_id":"c","original_content":"o","enhanced_content":"e","entities":["x"],"confidence":0.8}`,
		`{"id":"i","enhanced_content":"","original_content":"o","metadata":{"page":3}}`,
		`{"chunk\u005fid":"a\u00e9","enhanced_content":null,"metadata":null}`,
		`{"chunk_id":"c","metadata":[1]}`, `{"chunk_id":7}`, `[1]`, `{"a":1}{}`, ` {} `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		idBefore, idErr := ID(raw)
		got, err := ConvertEnriched(raw)
		if err != nil {
			if !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("ConvertEnriched error is not a permanent validation error: %v", err)
			}
			return
		}
		if !json.Valid(got) {
			t.Fatalf("ConvertEnriched(%q) = %q, not valid JSON", raw, got)
		}
		idAfter, errAfter := ID(got)
		if (idErr == nil) != (errAfter == nil) || idBefore != idAfter {
			t.Fatalf("id before %q (%v), after %q (%v)", idBefore, idErr, idAfter, errAfter)
		}
		again, err := ConvertEnriched(raw)
		if err != nil || string(again) != string(got) {
			t.Fatalf("second conversion differs: %q, %v", again, err)
		}
	})
}
