package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// LocalPrincipal is the principal of every request when no tokens are configured.
const LocalPrincipal = "local"

// principalKey is the context key of the authenticated principal.
type principalKey struct{}

// principal is who require let in: the token's name and its highest Scope.level, or
// LocalPrincipal with every scope when the server is open (no tokens, loopback only).
type principal struct {
	name  string
	level int
	open  bool
}

// Principal returns the name of the token that authenticated the request carrying ctx
// (LocalPrincipal when the server runs without tokens). ok is false outside an authenticated
// route. The name comes from the server's token list, never from a request header.
func Principal(ctx context.Context) (string, bool) {
	p, ok := ctx.Value(principalKey{}).(principal)
	return p.name, ok
}

// authEntry is one configured token, kept as its SHA-256 hash.
type authEntry struct {
	hash  [sha256.Size]byte
	name  string
	level int // the highest Scope.level granted
}

// authState is an immutable snapshot of the configured tokens; SetTokens swaps it.
type authState struct {
	entries []authEntry
	// open: no tokens configured and the listener is loopback-only, so every request is
	// allowed as LocalPrincipal.
	open bool
}

func newAuthState(tokens []Token, loopback bool) *authState {
	st := &authState{entries: make([]authEntry, 0, len(tokens))}
	for _, t := range tokens {
		lvl := 0
		for _, s := range t.Scopes {
			lvl = max(lvl, s.level())
		}
		st.entries = append(st.entries, authEntry{hash: sha256.Sum256([]byte(t.Token)), name: t.Name, level: lvl})
	}
	st.open = len(st.entries) == 0 && loopback
	return st
}

// authenticate finds the entry whose token equals presented. It hashes presented and compares
// it against every entry in constant time without an early exit, so timing reveals neither
// which token matched nor how much of it.
func (st *authState) authenticate(presented string) (authEntry, bool) {
	h := sha256.Sum256([]byte(presented))
	found := -1
	for i := range st.entries {
		eq := subtle.ConstantTimeCompare(h[:], st.entries[i].hash[:])
		found = subtle.ConstantTimeSelect(eq, i, found)
	}
	if found < 0 {
		return authEntry{}, false
	}
	return st.entries[found], true
}

// bearerToken extracts the token from the request's single Authorization header or, on a
// WebSocket upgrade without one, from its subprotocols: "Sec-WebSocket-Protocol: bearer,
// <token>" (what a browser's new WebSocket(url, ["bearer", token]) sends; the server selects
// WSBearerSubprotocol).
func bearerToken(r *http.Request) (string, bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return subprotocolToken(r)
	}
	if len(vals) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// subprotocolToken is the token offered after WSBearerSubprotocol in a WebSocket upgrade's
// Sec-WebSocket-Protocol list.
func subprotocolToken(r *http.Request) (string, bool) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		return "", false
	}
	var protos []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			protos = append(protos, strings.TrimSpace(p))
		}
	}
	for i, p := range protos {
		if strings.EqualFold(p, WSBearerSubprotocol) && i+1 < len(protos) && protos[i+1] != "" {
			return protos[i+1], true
		}
	}
	return "", false
}

// SetTokens replaces the accepted tokens; requests already authenticated are unaffected. It is
// safe for concurrent use with request handling. Validate the list with ValidateTokens (or
// LoadTokens) first: SetTokens skips, and logs by name, any token that is invalid on its own.
// An empty list makes a loopback-only server open to every request again; on a server
// listening beyond loopback it rejects every authenticated request (fails closed).
func (s *Server) SetTokens(tokens []Token) {
	valid := make([]Token, 0, len(tokens))
	for i, t := range tokens {
		if err := validateToken(t); err != nil {
			s.log.Warn("ignoring invalid API token", "index", i, "name", t.Name, "err", err)
			continue
		}
		valid = append(valid, t)
	}
	s.auth.Store(newAuthState(valid, s.loopback))
	s.limits.resetBuckets()
}

// TokensPollInterval is how often WatchTokens looks at the tokens file: a rotated token takes
// effect within it, and one stat every 2 s costs nothing.
const TokensPollInterval = 2 * time.Second

// WatchTokens reloads the tokens file at path (LoadTokens) into s (SetTokens) when the file
// changes (modification time or size, checked every TokensPollInterval) or a value arrives on
// reload (the caller's SIGHUP; nil: none), so tokens rotate without a restart. A file that
// fails to load keeps the tokens in force and is logged ("keeping the previous tokens"). It
// blocks until ctx ends, then returns nil. Run at most one per server.
func (s *Server) WatchTokens(ctx context.Context, path string, reload <-chan os.Signal) error {
	return s.watchTokens(ctx, path, reload, TokensPollInterval)
}

func (s *Server) watchTokens(ctx context.Context, path string, reload <-chan os.Signal, every time.Duration) error {
	stamp := func() string {
		st, err := os.Stat(path)
		if err != nil {
			return ""
		}
		return st.ModTime().String() + "/" + strconv.FormatInt(st.Size(), 10)
	}
	last := stamp()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload:
		case <-tick.C:
			if now := stamp(); now == last {
				continue
			}
		}
		last = stamp()
		tokens, err := LoadTokens(path)
		if err != nil {
			s.log.Error("reload API tokens: keeping the previous tokens", "err", err)
			continue
		}
		s.SetTokens(tokens)
		s.log.Info("reloaded API tokens", "tokens", len(tokens))
	}
}

// require wraps h so it runs only for requests carrying a token with at least scope need.
func (s *Server) require(need Scope, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		st := s.auth.Load()
		var name string
		var level int
		if st.open {
			name, level = LocalPrincipal, ScopeAdmin.level()
		} else {
			tok, ok := bearerToken(r)
			var e authEntry
			if ok {
				e, ok = st.authenticate(tok)
			}
			if !ok {
				if _, present := r.Header["Authorization"]; present {
					w.Header().Set("WWW-Authenticate", `Bearer realm="sluice", error="invalid_token"`)
				} else {
					w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
				}
				s.problem(w, r, http.StatusUnauthorized, "A valid bearer token is required (Authorization: Bearer <token>).")
				return
			}
			name, level = e.name, e.level
			if e.level < need.level() {
				if info := reqInfoFrom(r.Context()); info != nil {
					info.principal = name
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="sluice", error="insufficient_scope", scope="`+string(need)+`"`)
				s.problem(w, r, http.StatusForbidden, "This token lacks the "+string(need)+" scope.")
				return
			}
		}
		info := reqInfoFrom(r.Context())
		if info != nil {
			info.principal = name
		}
		if need.level() >= ScopeWrite.level() && r.Method != http.MethodGet && r.Method != http.MethodHead &&
			s.cfg.BrokerConnected != nil && !s.cfg.BrokerConnected() {
			// Fail fast: a publish would only wait for the connection and time out.
			s.metrics.rejected.WithLabelValues("unavailable").Inc()
			s.tooBusy(w, r, http.StatusServiceUnavailable, retryUnavailable*time.Second, "The message broker is unavailable; retry later.")
			return
		}
		if info != nil && info.class != classNone {
			if ok, wait := s.limits.allow(name, info.class); !ok {
				s.metrics.rejected.WithLabelValues("rate").Inc()
				s.tooBusy(w, r, http.StatusTooManyRequests, wait, "This token sends this kind of request too often; see Retry-After.")
				return
			}
			if info.class == classFeeds {
				release, ok := s.limits.openFeed(name)
				if !ok {
					s.metrics.rejected.WithLabelValues("feeds").Inc()
					s.tooBusy(w, r, http.StatusTooManyRequests, retryFeedsFull*time.Second,
						fmt.Sprintf("This token already holds %d change feeds open; close one first.", s.limits.maxFeeds))
					return
				}
				defer release()
			}
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, principal{name: name, level: level, open: st.open})))
	}
}

// whoamiResponse is GET /v1/whoami's answer.
type whoamiResponse struct {
	Principal string `json:"principal"`
	// Scopes lists every scope the token holds: its own and all below it, in the order read,
	// write, admin.
	Scopes []Scope `json:"scopes"`
	// Auth is false when the server runs open (no tokens, loopback only).
	Auth bool `json:"auth"`
}

// whoami answers who the presented token is and what it may do, so a client (the console)
// can hide the actions it cannot take. It needs ScopeRead, which every token holds.
func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	p, _ := r.Context().Value(principalKey{}).(principal)
	scopes := make([]Scope, 0, 3)
	for _, sc := range []Scope{ScopeRead, ScopeWrite, ScopeAdmin} {
		if sc.level() <= p.level {
			scopes = append(scopes, sc)
		}
	}
	s.writeJSON(w, r, http.StatusOK, whoamiResponse{Principal: p.name, Scopes: scopes, Auth: !p.open})
}
