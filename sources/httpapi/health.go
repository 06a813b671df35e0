package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
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
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) { writeHealthz(w) }

// readyz handles GET /readyz: it runs every check concurrently under one 2 s deadline.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) { writeReady(w, r, s.cfg.Ready, s.log) }

// writeHealthz is the answer of GET /healthz, on the API, the starting server and the ops
// listener alike.
func writeHealthz(w http.ResponseWriter) {
	writeRawJSON(w, http.StatusOK, []byte(`{"status":"ok"}`+"\n"))
}

// writeReady runs checks concurrently under one 2 s deadline (readyTimeout) and answers 200
// {"status":"ready","checks":{name:"ok"}} when every one passed, else 503 problem+json whose
// checks name each outcome (the error text, or "timed out after 2s"). A failed check is
// logged on log at Warn. It blocks for at most the deadline: a check that ignores ctx is left
// to return on its own (its result channel is buffered).
func writeReady(w http.ResponseWriter, r *http.Request, checks []Check, log *slog.Logger) {
	type outcome struct {
		name string
		err  error
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	// Buffered for every check, so a check that ignores ctx and returns late never blocks.
	results := make(chan outcome, len(checks))
	for _, c := range checks {
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
	report := make(map[string]string, len(checks))
	for _, c := range checks {
		report[c.Name] = timedOut
	}
	failed, pending := 0, len(checks)
wait:
	for pending > 0 {
		select {
		case o := <-results:
			pending--
			if o.err != nil {
				report[o.name] = o.err.Error()
				failed++
				log.WarnContext(r.Context(), "readiness check failed", "check", o.name, "err", o.err)
			} else {
				report[o.name] = "ok"
			}
		case <-ctx.Done():
			break wait
		}
	}
	failed += pending
	if failed == 0 {
		body, _ := json.Marshal(map[string]any{"status": "ready", "checks": report}) // strings only: cannot fail
		writeRawJSON(w, http.StatusOK, append(body, '\n'))
		return
	}
	writeProblemDoc(w, r, problemDoc{
		Status: http.StatusServiceUnavailable,
		Detail: fmt.Sprintf("Not ready: %d of %d readiness checks failed or timed out.", failed, len(checks)),
		Checks: report,
	})
}

// writeNotReady answers GET /readyz with 503 problem+json and Retry-After while the process
// is not in a state to run its checks: starting (check "startup" says what it waits for) or
// draining (check "drain").
func writeNotReady(w http.ResponseWriter, r *http.Request, detail, check, status string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryStarting))
	writeProblemDoc(w, r, problemDoc{
		Status: http.StatusServiceUnavailable,
		Detail: detail,
		Checks: map[string]string{check: status},
	})
}
