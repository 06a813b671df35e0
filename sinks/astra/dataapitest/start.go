package dataapitest

import (
	"strings"
	"testing"
)

// Start starts a Server for cfg that the test tb owns: at tb's cleanup it closes the
// server and fails tb unless the violations the server recorded are exactly
// wantViolations, in order, each matched as a substring (none by default, the client
// under test being expected to send only correct requests). Call it from the test
// goroutine.
func Start(tb testing.TB, cfg Config, wantViolations ...string) *Server {
	tb.Helper()
	srv := New(cfg)
	tb.Cleanup(func() {
		v := srv.Stats().Violations
		srv.Close()
		if len(v) != len(wantViolations) {
			tb.Errorf("double recorded %d violations, want %d: %q", len(v), len(wantViolations), v)
			return
		}
		for i, w := range wantViolations {
			if !strings.Contains(v[i], w) {
				tb.Errorf("violation %d = %q, want it to mention %q", i, v[i], w)
			}
		}
	})
	return srv
}
