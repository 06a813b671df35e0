package reqstore

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// encodeCursor makes an opaque cursor from the sort key of the last row of a page.
func encodeCursor(createdUS int64, requestID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(createdUS, 10) + "|" + requestID))
}

func decodeCursor(c string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return 0, "", fmt.Errorf("cursor %q: %w", c, requirements.ErrBadCursor)
	}
	us, id, ok := strings.Cut(string(raw), "|")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || id == "" {
		return 0, "", fmt.Errorf("cursor %q: %w", c, requirements.ErrBadCursor)
	}
	return n, id, nil
}

func clampLimit(n, def int) int {
	if n <= 0 {
		return def
	}
	return min(n, requirements.MaxListLimit)
}
