package httpapi

import (
	"context"
	"os"
	"time"
)

// SetBodyIdleTimeout shortens the per-read upload timeout for tests. Call it before Run.
func SetBodyIdleTimeout(s *Server, d time.Duration) { s.bodyIdleTimeout = d }

// Patterns returns the registered routes.
func (s *Server) Patterns() []string { return s.patterns }

// SpoolUsed is how many upload bytes are reserved in the spool budget.
func SpoolUsed(s *Server) int64 { return s.spool.Used() }

// OpenFeeds is how many change feeds principal holds open (its per-token feed slots taken).
func OpenFeeds(s *Server, principal string) int {
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	return s.limits.feeds[principal]
}

// WatchTokensEvery is WatchTokens polling every d, so tests need not wait 2 s.
func WatchTokensEvery(ctx context.Context, s *Server, path string, reload <-chan os.Signal, d time.Duration) error {
	return s.watchTokens(ctx, path, reload, d)
}
