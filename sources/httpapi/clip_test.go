package httpapi

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// A start-up status is cut to maxStartingStatus bytes; cut in the middle of a character, the
// /readyz body carried a broken one (a store's error quoting non-ASCII text).
func TestClipStatusKeepsCharactersWhole(t *testing.T) {
	for _, tc := range []struct {
		name, in string
	}{
		{"short", "opening the broker"},
		{"at the bound", strings.Repeat("a", maxStartingStatus)},
		{"ascii over", strings.Repeat("a", maxStartingStatus+10)},
		{"multibyte across the cut", strings.Repeat("a", maxStartingStatus-1) + "é…é"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := clipStatus(tc.in)
			if !utf8.ValidString(got) {
				t.Fatalf("clipStatus gave invalid UTF-8: %q", got[len(got)-8:])
			}
			if len(tc.in) <= maxStartingStatus {
				if got != tc.in {
					t.Fatalf("a status within the bound was changed: %q", got)
				}
				return
			}
			body := strings.TrimSuffix(got, "…")
			if len(body) > maxStartingStatus || !strings.HasPrefix(tc.in, body) || body == got {
				t.Fatalf("clipStatus(%d bytes) = %d bytes %q…", len(tc.in), len(got), got[:16])
			}
		})
	}
}
