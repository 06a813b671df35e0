package httpapi

import (
	"context"
	"fmt"
	"net/http"
)

// Check is one readiness check run by GET /readyz.
type Check struct {
	// Name identifies the check in the /readyz answer. Required, unique.
	Name string
	// Check returns nil when the dependency is ready. It is called concurrently with the other
	// checks and must honour ctx, which carries a 2 s deadline. Its error text is shown in the
	// /readyz answer, which needs no authentication: keep secrets out of it. Required.
	Check func(ctx context.Context) error
}

// healthz handles GET /healthz: the process is up and serving.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeRawJSON(w, http.StatusOK, []byte(`{"status":"ok"}`+"\n"))
}

// readyz handles GET /readyz: it runs every check concurrently under one 2 s deadline.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	type outcome struct {
		name string
		err  error
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	// Buffered for every check, so a check that ignores ctx and returns late never blocks.
	results := make(chan outcome, len(s.cfg.Ready))
	for _, c := range s.cfg.Ready {
		go func() {
			defer func() {
				if p := recover(); p != nil {
					results <- outcome{c.Name, fmt.Errorf("check panicked: %v", p)}
				}
			}()
			results <- outcome{c.Name, c.Check(ctx)}
		}()
	}
	timedOut := fmt.Sprintf("timed out after %s", readyTimeout)
	checks := make(map[string]string, len(s.cfg.Ready))
	for _, c := range s.cfg.Ready {
		checks[c.Name] = timedOut
	}
	failed, pending := 0, len(s.cfg.Ready)
wait:
	for pending > 0 {
		select {
		case o := <-results:
			pending--
			if o.err != nil {
				checks[o.name] = o.err.Error()
				failed++
				s.log.WarnContext(r.Context(), "readiness check failed", "check", o.name, "error", o.err)
			} else {
				checks[o.name] = "ok"
			}
		case <-ctx.Done():
			break wait
		}
	}
	failed += pending
	if failed == 0 {
		s.writeJSON(w, r, http.StatusOK, map[string]any{"status": "ready", "checks": checks})
		return
	}
	s.writeProblem(w, r, problemDoc{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Not ready: %d of %d readiness checks failed or timed out.", failed, len(s.cfg.Ready)),
		Checks: checks,
	})
}
