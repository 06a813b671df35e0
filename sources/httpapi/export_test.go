package httpapi

import "time"

// SetBodyIdleTimeout shortens the per-read upload timeout for tests. Call it before Run.
func SetBodyIdleTimeout(s *Server, d time.Duration) { s.bodyIdleTimeout = d }

// Patterns returns the registered routes.
func (s *Server) Patterns() []string { return s.patterns }
