package httpapi

import (
	"encoding/json"
	"net/http"
)

// problemDoc is an RFC 9457 problem details document.
type problemDoc struct {
	// Type is "about:blank" (the title is then the status text) or a Sluice problem URI.
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
	// RequestID matches the X-Request-Id header and the server's log lines.
	RequestID string `json:"request_id,omitempty"`
	// Checks lists readiness check outcomes (GET /readyz only).
	Checks map[string]string `json:"checks,omitempty"`
}

// problem writes a problem+json answer of type about:blank with status and detail. The detail
// is shown to the client: never pass internal error text or secrets.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	s.writeProblem(w, r, problemDoc{Status: status, Detail: detail})
}

// writeProblem fills in p's defaults (type, title, instance, request id) and writes it.
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, p problemDoc) {
	writeProblemDoc(w, r, p)
}

// writeProblemDoc is writeProblem for handlers outside a Server (Starting).
func writeProblemDoc(w http.ResponseWriter, r *http.Request, p problemDoc) {
	if p.Type == "" {
		p.Type = "about:blank"
	}
	if p.Title == "" {
		p.Title = http.StatusText(p.Status)
	}
	if p.Instance == "" {
		p.Instance = r.URL.EscapedPath()
	}
	if info := reqInfoFrom(r.Context()); info != nil {
		p.RequestID = info.id
	}
	body, err := json.Marshal(p)
	if err != nil { // cannot happen for these field types
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500}`)
		p.Status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Length")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// internalError logs err with the request's context and answers 500 with a generic detail,
// or 503 with Retry-After when err is transient unavailability (see unavailable).
func (s *Server) internalError(w http.ResponseWriter, r *http.Request, msg string, err error) {
	if unavailable(r, err) {
		s.metrics.rejected.WithLabelValues("unavailable").Inc()
		s.unavailableProblem(w, r, msg, err)
		return
	}
	attrs := []any{"err", err, "method", r.Method, "path", r.URL.Path}
	if info := reqInfoFrom(r.Context()); info != nil {
		attrs = append(attrs, "request_id", info.id)
	}
	s.log.ErrorContext(r.Context(), msg, attrs...)
	s.problem(w, r, http.StatusInternalServerError, "The server failed to handle the request; the request id identifies it in the server's logs.")
}

// writeJSON answers status with v as JSON. v is encoded before anything is written, so an
// encoding failure still yields a clean 500.
func (s *Server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.internalError(w, r, "encode response", err)
		return
	}
	writeRawJSON(w, status, append(body, '\n'))
}

// writeRawJSON answers status with body as is; body must be JSON.
func writeRawJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// statusClientClosed is nginx's code for a request the client abandoned; it only shows in
// metrics and the access log, as nobody reads the answer.
const statusClientClosed = 499

// ifEnabled returns h when enabled, else a handler that answers 501 with detail: the routes of
// a service the server was not given (Config.DeadLetters, Graph, Events, Requirements). The
// Config does not change after New, so deciding when the route is registered is enough.
func (s *Server) ifEnabled(enabled bool, detail string, h http.HandlerFunc) http.HandlerFunc {
	if enabled {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		s.problem(w, r, http.StatusNotImplemented, detail)
	}
}
