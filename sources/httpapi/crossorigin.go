package httpapi

import (
	"net/http"
	"net/url"
)

// guardCrossOrigin wraps h so that state-changing requests (every method but GET, HEAD and
// OPTIONS) sent by a browser from another origin are refused with 403 problem+json and never
// reach h. Without it, in open mode (no tokens, loopback only) any web page the operator
// visits could POST to 127.0.0.1 with a text/plain body — a "simple" request that needs no
// preflight — and replay or purge dead letters or roll jobs back. With tokens a browser
// sends none by itself, so the check costs nothing there. Browsers are recognised by their
// Sec-Fetch-Site header, or an Origin that differs from Host; clients that send neither
// (curl, the CLI, the Python client) pass. Reads are not checked: tokens guard them, and
// their answers are not readable across origins (no CORS headers). origins must be valid
// (Config.Validate checks them).
func (s *Server) guardCrossOrigin(h http.Handler, origins []string) http.Handler {
	cop := http.NewCrossOriginProtection()
	for _, o := range origins {
		_ = cop.AddTrustedOrigin(o) // checked by Config.Validate
	}
	cop.SetDenyHandler(http.HandlerFunc(s.crossOriginRefused))
	return cop.Handler(h)
}

// crossOriginRefused answers a request http.CrossOriginProtection refused and counts it in
// sluice_http_rejected_total{reason="cross_origin"}.
func (s *Server) crossOriginRefused(w http.ResponseWriter, r *http.Request) {
	s.metrics.rejected.WithLabelValues("cross_origin").Inc()
	why := "the browser marked it Sec-Fetch-Site: " + r.Header.Get("Sec-Fetch-Site")
	if r.Header.Get("Sec-Fetch-Site") == "" {
		host := r.Header.Get("Origin")
		if u, err := url.Parse(host); err == nil && u.Host != "" {
			host = u.Host
		}
		why = "its Origin (" + host + ") is not this server (" + r.Host + ")"
	}
	s.problem(w, r, http.StatusForbidden, "Cross-origin request refused: "+why+
		". A browser may change state only from the API's own origin or a trusted origin (SLUICE_API_TRUSTED_ORIGINS); nothing was done.")
}
