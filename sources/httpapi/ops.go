package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Defaults and bounds of the ops listener.
const (
	// DefaultOpsAddr is the ops listener's address when none is given: loopback, so that
	// nothing beyond the host reaches it unless the operator says so (containers set
	// 0.0.0.0:9090 for their probes and scrapers).
	DefaultOpsAddr = "127.0.0.1:9090"
	// DefaultOpsMaxConns bounds the ops listener's open connections. Probes (a kubelet, a
	// health check) and scrapers (a Prometheus pair) hold a few; the listener needs no token,
	// so the bound keeps anyone who can reach it from taking the process's file descriptors.
	DefaultOpsMaxConns = 64
	// opsMaxScrapes bounds /metrics gatherings at once: each walks every collector, and the
	// PostgreSQL pool gauges take a lock; more scrapers than this get 503 at once.
	opsMaxScrapes = 4
	// opsScrapeTimeout bounds one /metrics answer; Prometheus' default scrape timeout is 10 s.
	opsScrapeTimeout = 10 * time.Second
	// opsWriteTimeout bounds writing any answer (a scrape included), so a client that stops
	// reading cannot hold a connection for ever.
	opsWriteTimeout = 15 * time.Second
	// opsIdleTimeout bounds a keep-alive connection waiting for its next probe or scrape; a
	// scraper comes back every 15 to 60 s.
	opsIdleTimeout = 90 * time.Second
	// opsShutdownTimeout bounds Close's wait for answers in flight (a /readyz takes 2 s at
	// most, a scrape rarely more), so the end of a drain is not held by a slow scraper.
	opsShutdownTimeout = 3 * time.Second
)

// OpsConfig configures an Ops server.
type OpsConfig struct {
	// Listener is the ops listener (see ListenOps). Required; Ops owns it and Close closes it.
	Listener net.Listener
	// Gatherer is what GET /metrics serves: the process's one registry. Required.
	Gatherer prometheus.Gatherer
	// MaxConns bounds open connections. Optional; 0 means DefaultOpsMaxConns; negative is
	// invalid.
	MaxConns int
	// Logger receives failed readiness checks (Warn) and serving errors (Debug). Optional;
	// nil discards.
	Logger *slog.Logger
}

// opsPhase is where the process is in its life, as /readyz tells it.
type opsPhase int

const (
	opsStarting opsPhase = iota
	opsReady
	opsDraining
)

// Ops is a process's ops listener: GET /healthz (200 while the process runs), GET /readyz
// (503 naming what start-up waits for, then the process's readiness checks, then 503 while it
// drains) and GET /metrics (Prometheus text of the process's registry), on an address of its
// own and without any token, so that every sluice process — a worker too, which has no API —
// can be probed and scraped. It serves from NewOps until Close. Its methods are safe for
// concurrent use.
type Ops struct {
	ln      net.Listener
	srv     *http.Server
	log     *slog.Logger
	metrics http.Handler
	served  chan error // Serve's result; buffered 1

	// mu guards phase, status and checks.
	mu     sync.Mutex
	phase  opsPhase
	status string  // start-up (Report) or drain status
	checks []Check // readiness checks from Ready on
	// closeOnce makes Close idempotent; closeErr is its result.
	closeOnce sync.Once
	closeErr  error
}

// ListenOps binds addr ("" means DefaultOpsAddr) for the ops listener; a port in use fails
// here, naming the address. Any address is allowed: the ops listener shows no data and no
// secret (readiness errors must hold none, see Check), only whether the process works and
// its metrics. The caller owns the listener: pass it to NewOps or close it.
func ListenOps(addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultOpsAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ops listener on %s: %w", addr, err)
	}
	return ln, nil
}

// NewOps validates cfg and serves cfg.Listener in a goroutine of its own until Close, which
// waits for it. /readyz answers 503 "starting" until Ready. On error it closes cfg.Listener.
func NewOps(cfg OpsConfig) (*Ops, error) {
	var errs []error
	if cfg.Listener == nil {
		errs = append(errs, errors.New("Listener is required"))
	}
	if cfg.Gatherer == nil {
		errs = append(errs, errors.New("Gatherer is required"))
	}
	if cfg.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("MaxConns %d is negative", cfg.MaxConns))
	}
	if err := errors.Join(errs...); err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return nil, fmt.Errorf("ops listener config: %w", err)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultOpsMaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	o := &Ops{
		ln:     cfg.Listener,
		log:    cfg.Logger,
		served: make(chan error, 1),
		status: "starting",
		metrics: promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog:            slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: opsMaxScrapes,
			Timeout:             opsScrapeTimeout,
		}),
	}
	o.srv = &http.Server{
		Handler:           http.HandlerFunc(o.serveHTTP),
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: startingReadHeaderTimeout,
		WriteTimeout:      opsWriteTimeout,
		IdleTimeout:       opsIdleTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	cl := &capListener{Listener: cfg.Listener, slots: make(chan struct{}, cfg.MaxConns)}
	go func() { o.served <- o.srv.Serve(cl) }()
	return o, nil
}

// Addr returns the address the listener is bound to (with the actual port of ":0").
func (o *Ops) Addr() string { return o.ln.Addr().String() }

// Report records what start-up does now, shown as the "startup" check of GET /readyz until
// Ready. Anyone who can reach the listener reads it: it must hold no secret. It is cut to 512
// bytes. After Ready it does nothing. It does not block.
func (o *Ops) Report(status string) {
	status = clipStatus(status)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.phase == opsStarting {
		o.status = status
	}
}

// Ready ends start-up: from now GET /readyz runs checks (see Check) and answers 200 only when
// every one passes. It does nothing once Draining was called.
func (o *Ops) Ready(checks []Check) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.phase == opsStarting {
		o.phase, o.checks = opsReady, append([]Check(nil), checks...)
	}
}

// Draining says the process is stopping: from now GET /readyz answers 503 with check "drain"
// saying status, while /healthz and /metrics go on answering until Close.
func (o *Ops) Draining(status string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.phase, o.status = opsDraining, status
}

// state returns what /readyz answers from.
func (o *Ops) state() (opsPhase, string, []Check) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.phase, o.status, o.checks
}

// Handler returns the ops listener's handler, for tests. It is safe for concurrent use.
func (o *Ops) Handler() http.Handler { return http.HandlerFunc(o.serveHTTP) }

// serveHTTP answers GET (and HEAD) /healthz, /readyz and /metrics; 405 for another method on
// them, 404 elsewhere.
func (o *Ops) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz", "/metrics":
	default:
		writeProblemDoc(w, r, problemDoc{Status: http.StatusNotFound,
			Detail: "No route matches " + r.URL.EscapedPath() + "; the ops listener serves GET /healthz, /readyz and /metrics."})
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeProblemDoc(w, r, problemDoc{Status: http.StatusMethodNotAllowed, Detail: "The route supports GET and HEAD only."})
		return
	}
	switch r.URL.Path {
	case "/healthz":
		writeHealthz(w)
	case "/metrics":
		o.metrics.ServeHTTP(w, r)
	case "/readyz":
		switch phase, status, checks := o.state(); phase {
		case opsStarting:
			writeNotReady(w, r, "Not ready: the process is starting.", "startup", status)
		case opsDraining:
			writeNotReady(w, r, "Not ready: the process is draining and will stop.", "drain", status)
		default:
			writeReady(w, r, checks, o.log)
		}
	}
}

// Close stops the listener: it stops accepting at once, lets answers in flight finish for up
// to 3 s, then closes every connection, and waits for the serving goroutine. It is
// idempotent; it returns an error when serving had failed.
func (o *Ops) Close() error {
	o.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opsShutdownTimeout)
		defer cancel()
		if err := o.srv.Shutdown(ctx); err != nil {
			_ = o.srv.Close()
		}
		if err := <-o.served; !errors.Is(err, http.ErrServerClosed) {
			o.closeErr = fmt.Errorf("ops listener on %s: %w", o.Addr(), err)
		}
	})
	return o.closeErr
}
