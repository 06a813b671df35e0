package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sources/httpapi/console"
)

const (
	maxHeaderBytes = 64 << 10
	// readyTimeout bounds each /readyz run.
	readyTimeout = 2 * time.Second
)

// ErrServerClosed is returned by Run when the server was closed or already run.
var ErrServerClosed = errors.New("httpapi: server closed")

// Server is the HTTP API. New binds its listener; Run serves until its context ends; Close
// releases the listener of a server that will not be run. Its methods are safe for concurrent
// use.
type Server struct {
	// featureIDs makes the ids of submitted feature requests, unique within this server.
	featureIDs requirements.RequestIDs
	cfg        Config
	log        *slog.Logger
	ln         net.Listener
	srv        *http.Server
	mux        *http.ServeMux
	guarded    http.Handler // mux behind the cross-origin check (crossorigin.go)
	handler    http.Handler
	metrics    *httpMetrics
	registry   *prometheus.Registry
	loopback   bool // the listener is bound to a loopback address only
	// bodyIdleTimeout bounds each read of an upload; a field so tests can shorten it.
	bodyIdleTimeout time.Duration
	auth            atomic.Pointer[authState]
	limits          *limiters
	spool           *intake.ByteBudget
	// stopStreams is closed when the server starts shutting down, so long-lived responses
	// (server-sent events) end instead of holding Shutdown until its timeout.
	stopStreams     chan struct{}
	stopStreamsOnce sync.Once
	// patterns lists every registered route ("METHOD /path"), for the OpenAPI parity test.
	patterns []string

	// mu guards started and closed.
	mu      sync.Mutex
	started bool
	closed  bool
}

// New validates cfg, registers the HTTP metrics and binds the listener (or takes
// Config.Listener), so a bad address or a port in use fails here. The caller must then call
// Run (which closes the listener when it returns) or Close. When New fails it closes
// Config.Listener. New does not start goroutines.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, fmt.Errorf("http api config: %w", err)
	}
	cfg.Ready = append([]Check(nil), cfg.Ready...)

	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	m, err := newHTTPMetrics(reg)
	if err != nil {
		if cfg.Listener != nil {
			cfg.Listener.Close()
		}
		return nil, err
	}

	ln := cfg.Listener
	if ln == nil {
		if ln, err = Listen(cfg.Addr, len(cfg.Tokens) > 0); err != nil {
			return nil, err
		}
	} else if err := checkLoopback(ln, len(cfg.Tokens) > 0); err != nil {
		ln.Close()
		return nil, err
	}
	loopback := isLoopbackAddr(ln.Addr())

	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		ln:       ln,
		mux:      http.NewServeMux(),
		metrics:  m,
		registry: reg,
		loopback: loopback,

		bodyIdleTimeout: cfg.BodyIdleTimeout,
		limits:          newLimiters(cfg.RateLimits, cfg.MaxFeedsPerToken),
		spool:           intake.NewByteBudget(cfg.MaxSpoolBytes),
	}
	s.ln = &capListener{Listener: ln, slots: make(chan struct{}, cfg.MaxConns), rejected: func() { m.rejected.WithLabelValues("connections").Inc() }}
	s.auth.Store(newAuthState(cfg.Tokens, loopback))
	s.routes()
	s.guarded = s.guardCrossOrigin(s.mux, cfg.TrustedOrigins)
	s.handler = traced(http.HandlerFunc(s.serveHTTP))
	s.srv = &http.Server{
		Handler:           s.handler,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	s.stopStreams = make(chan struct{})
	s.srv.RegisterOnShutdown(func() { s.stopStreamsOnce.Do(func() { close(s.stopStreams) }) })
	return s, nil
}

// Listen binds addr for the API, as New does when Config.Listener is nil: it fails at once on
// a port in use, and without authenticated (no tokens) it refuses an address that is not
// loopback, before and after binding (a name such as "localhost" might resolve elsewhere).
// The caller owns the listener: pass it to NewStarting or Config.Listener, or close it.
func Listen(addr string, authenticated bool) (net.Listener, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if !authenticated && !isLoopbackHost(host) {
		return nil, fmt.Errorf("listen on %s: not a loopback address: without tokens the API serves loopback only (127.0.0.0/8, ::1, localhost); configure tokens to listen elsewhere", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if err := checkLoopback(ln, authenticated); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// checkLoopback refuses a listener bound beyond loopback when the API has no tokens.
func checkLoopback(ln net.Listener, authenticated bool) error {
	if !authenticated && !isLoopbackAddr(ln.Addr()) {
		return fmt.Errorf("listen on %s: bound to non-loopback %s without tokens; configure tokens or use a loopback address", ln.Addr(), ln.Addr())
	}
	return nil
}

// isLoopbackAddr reports whether a is a TCP address on a loopback interface.
func isLoopbackAddr(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// Addr returns the address the listener is bound to, with the actual port when Config.Addr
// asked for port 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler returns the API's handler (routing, authentication, metrics, access log), for tests
// or for mounting behind another server. It is safe for concurrent use.
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves on the listener bound by New until ctx ends, then shuts down gracefully: it stops
// accepting, waits for in-flight requests up to Config.ShutdownTimeout, then closes the
// remaining connections. It blocks until all that is done and returns nil after a clean
// shutdown, an error when the shutdown timed out or serving failed, and ErrServerClosed when
// the server was closed or already run.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.started = true
	s.mu.Unlock()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.srv.Serve(s.ln) }()
	s.log.Info("HTTP API listening", "addr", "http://"+s.Addr(), "console", "http://"+s.Addr()+console.Prefix, "auth", len(s.auth.Load().entries) > 0)

	select {
	case err := <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			return nil // Close was called
		}
		return fmt.Errorf("serve http api on %s: %w", s.Addr(), err)
	case <-ctx.Done():
	}

	s.log.Info("http api shutting down", "addr", s.Addr(), "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	shutErr := s.srv.Shutdown(sctx)
	if shutErr != nil {
		_ = s.srv.Close() // force the connections still open
	}
	if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve http api on %s: %w", s.Addr(), err)
	}
	if shutErr != nil {
		return fmt.Errorf("shut down http api within %s: %w", s.cfg.ShutdownTimeout, shutErr)
	}
	return nil
}

// Close stops the server at once: it closes the listener and every connection without waiting
// for in-flight requests. Use it to release a server that will not be run, or to abort Run
// (which then returns nil). It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		if err := s.ln.Close(); err != nil {
			return fmt.Errorf("close listener %s: %w", s.Addr(), err)
		}
		return nil
	}
	if err := s.srv.Close(); err != nil {
		return fmt.Errorf("close http api: %w", err)
	}
	return nil
}

// routes registers every route. Patterns use Go 1.22 method+path syntax; the path part is the
// route label in metrics and logs.
func (s *Server) routes() {
	s.jobRoutes() // jobs.go
	s.handle("GET /v1/chunks/{id}", s.require(ScopeRead, s.getChunk))
	s.handle("GET /v1/whoami", s.require(ScopeRead, s.whoami)) // auth.go
	s.handle("GET /v1/consumers", s.require(ScopeRead, s.ifEnabled(s.cfg.Broker != nil,
		"Broker statistics (streams and consumer lag) are not enabled on this server.", s.listConsumers))) // consumers.go
	s.dlqRoutes()          // dlq.go
	s.graphRoutes()        // graph.go
	s.requirementsRoutes() // requirements.go
	s.handle("GET /healthz", s.healthz)
	s.handle("GET /openapi.json", s.openapi)
	s.handle("GET /readyz", s.readyz)
	s.consoleRoutes()
	s.handle("GET /metrics", s.require(ScopeRead, promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}).ServeHTTP))
}

// consoleRoutes serves the operator console (sources/httpapi/console) at /ui/: static files,
// no token needed to load them; everything they show comes from the routes above, with the
// operator's token. They are not API operations, so the OpenAPI document leaves them out.
func (s *Server) consoleRoutes() {
	files := console.Handler()
	s.handleRoute("GET /ui/", files.ServeHTTP, false)
	s.handleRoute("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, console.Prefix, http.StatusMovedPermanently)
	}, false)
}

// handle registers h for pattern and records the route on each request it serves.
func (s *Server) handle(pattern string, h http.HandlerFunc) {
	s.handleRoute(pattern, h, true)
}

// handleRoute is handle; api says whether the route is an API operation (listed in Patterns,
// which the OpenAPI document must match).
func (s *Server) handleRoute(pattern string, h http.HandlerFunc, api bool) {
	route := pattern
	if _, path, ok := strings.Cut(pattern, " "); ok {
		route = path
	}
	if api {
		s.patterns = append(s.patterns, pattern)
	}
	class := routeClasses[pattern]
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if info := reqInfoFrom(r.Context()); info != nil {
			info.route = route
			info.class = class
		}
		nameSpan(r, pattern, route)
		// Ids are checked against the contract at the door, before anything reads them.
		if reason := checkIDs(pattern, r); reason != "" {
			s.problem(w, r, http.StatusBadRequest, reason+".")
			return
		}
		h(w, r)
	})
}

// reqInfo is per-request state shared between the outer middleware and the handlers. It is
// only touched by the request's goroutine.
type reqInfo struct {
	id        string
	route     string // set once a registered route handles the request
	principal string // set by require
	class     rateClass
}

type reqInfoKey struct{}

func reqInfoFrom(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(reqInfoKey{}).(*reqInfo)
	return info
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// serveHTTP is the outermost handler: request id, metrics, access log, panic recovery, and
// problem+json for the mux's own 404 and 405 answers.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info := &reqInfo{id: newRequestID()}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
	w.Header().Set("X-Request-Id", info.id)
	rw := &responseWriter{ResponseWriter: w, srv: s, req: r, info: info}
	if r.Body != nil && r.Body != http.NoBody {
		// Bound every body read, from the first byte and before authentication; the first
		// deadline also bounds the server's drain of a body the handler left unread.
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(s.bodyIdleTimeout))
		r.Body = &idleBody{ReadCloser: r.Body, rc: rc, timeout: s.bodyIdleTimeout}
	}

	s.metrics.inFlight.Inc()
	defer func() {
		s.metrics.inFlight.Dec()
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.ErrorContext(r.Context(), "http handler panicked", "panic", p, "method", r.Method, "path", r.URL.Path, "request_id", info.id)
			if rw.code == 0 {
				s.problem(rw, r, http.StatusInternalServerError, "The server failed to handle the request; the request id identifies it in the server's logs.")
			}
		}
		route := info.route
		if route == "" {
			route = unmatchedRoute
		}
		code := rw.code
		if code == 0 {
			code = http.StatusOK
		}
		elapsed := time.Since(start)
		s.metrics.observe(r.Method, route, code, elapsed.Seconds())
		if s.log.Enabled(r.Context(), slog.LevelDebug) {
			s.log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
				slog.String("request_id", info.id),
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("route", route),
				slog.Int("status", code),
				slog.Int64("bytes", rw.bytes),
				slog.Duration("duration", elapsed),
				slog.String("principal", info.principal),
				slog.String("remote", r.RemoteAddr),
			)
		}
	}()
	s.guarded.ServeHTTP(rw, r)
}

// responseWriter records the status and size of an answer, and turns the mux's plain-text
// 404 and 405 (written before any route handler ran) into problem+json.
type responseWriter struct {
	http.ResponseWriter
	srv         *Server
	req         *http.Request
	info        *reqInfo
	code        int
	bytes       int64
	intercepted bool // the mux's own body is being dropped
}

func (w *responseWriter) WriteHeader(code int) {
	if w.code != 0 {
		return
	}
	if w.info.route == "" && (code == http.StatusNotFound || code == http.StatusMethodNotAllowed) {
		w.code = code
		detail := "No route matches " + w.req.URL.EscapedPath() + "."
		if code == http.StatusMethodNotAllowed {
			detail = "The route does not support " + w.req.Method + "; see the Allow header."
		}
		w.srv.problem(w.ResponseWriter, w.req, code, detail)
		w.intercepted = true
		return
	}
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.intercepted {
		return len(p), nil
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush forwards to the underlying writer so streaming handlers work through the wrapper.
func (w *responseWriter) Flush() {
	if w.code == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok && !w.intercepted {
		f.Flush()
	}
}
