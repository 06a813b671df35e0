package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Bounds of the starting phase.
const (
	// retryStarting is the Retry-After, in seconds, of answers while the process starts: it
	// retries its stores 1 s, 2 s, 4 s … apart, so a client should look again soon.
	retryStarting = 2
	// maxStartingStatus bounds the start-up status /readyz shows, in bytes: a store's error
	// may quote a whole response body.
	maxStartingStatus = 512
	// startingHandoverTimeout bounds how long Handover waits for requests in flight on the
	// starting server. Its answers are immediate, so only a connection that has sent nothing
	// yet can take this long; new connections wait in the kernel's accept queue meanwhile, so
	// it must stay short.
	startingHandoverTimeout = time.Second
	// startingReadHeaderTimeout bounds reading a request's headers while starting.
	startingReadHeaderTimeout = 5 * time.Second
)

// StartingConfig configures a Starting server.
type StartingConfig struct {
	// Listener is the API's listener, bound by Listen. Required; it must have a SetDeadline
	// method (TCP and Unix listeners do). Starting owns it until Handover gives it back;
	// Close closes it.
	Listener net.Listener
	// MaxConns bounds open connections while starting, like Config.MaxConns. Optional; 0
	// means 1024; negative is invalid.
	MaxConns int
	// Logger receives serving errors (Debug). Optional; nil discards.
	Logger *slog.Logger
}

// Starting answers on the API's listener while the process opens its broker and stores, so
// the port is held from the first moment (a port in use fails at once) and an orchestrator
// can tell "starting, waiting for X" from "dead": GET /healthz answers 200, GET /readyz 503
// problem+json whose checks say what start-up waits for (see Report), every other request 503
// with Retry-After. Every answer closes its connection, so no client stays attached to it.
// Handover then stops it and gives the listener to New (Config.Listener): connections that
// arrive meanwhile wait in the accept queue, none is refused. Its methods are safe for
// concurrent use.
type Starting struct {
	ln     *handoffListener
	srv    *http.Server
	served chan error // Serve's result; buffered 1
	// conns counts the connections the server holds (ConnState: new to closed). Adds happen
	// on the Serve goroutine only, so Wait is safe once Serve has returned.
	conns sync.WaitGroup

	// mu guards status and done.
	mu     sync.Mutex
	status string
	done   bool // Handover or Close was called
}

// NewStarting starts serving cfg.Listener in a goroutine of its own; Handover or Close stops
// it and waits for it. It fails without a listener or when the listener cannot take a
// deadline (needed to stop accepting without closing the socket).
func NewStarting(cfg StartingConfig) (*Starting, error) {
	var errs []error
	dl, ok := cfg.Listener.(interface{ SetDeadline(time.Time) error })
	if cfg.Listener == nil {
		errs = append(errs, errors.New("Listener is required"))
	} else if !ok {
		errs = append(errs, fmt.Errorf("Listener %T has no SetDeadline method", cfg.Listener))
	}
	if cfg.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("MaxConns %d is negative", cfg.MaxConns))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("starting api server config: %w", err)
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Starting{
		ln:     &handoffListener{Listener: cfg.Listener, dl: dl},
		served: make(chan error, 1),
		status: "starting",
	}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: startingReadHeaderTimeout,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Done()
			}
		},
	}
	cl := &capListener{Listener: s.ln, slots: make(chan struct{}, cfg.MaxConns)}
	go func() { s.served <- s.srv.Serve(cl) }()
	return s, nil
}

// Addr returns the address the listener is bound to.
func (s *Starting) Addr() string { return s.ln.Addr().String() }

// Report records what start-up is doing now ("opening the broker", "waiting for AstraDB:
// HTTP 503 …"), shown as the "startup" check of GET /readyz until Handover. Anyone who can
// reach /readyz reads it: it must hold no secret. It is cut to 512 bytes. It does not block.
func (s *Starting) Report(status string) {
	status = clipStatus(status)
	s.mu.Lock()
	s.status = status
	s.mu.Unlock()
}

func (s *Starting) current() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

// serveHTTP answers every request while starting.
func (s *Starting) serveHTTP(w http.ResponseWriter, r *http.Request) {
	// One answer per connection: a keep-alive connection would stay with this server until
	// Handover closes it, instead of reaching the API as soon as it runs.
	w.Header().Set("Connection", "close")
	info := &reqInfo{id: newRequestID(), route: r.URL.Path}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, info))
	w.Header().Set("X-Request-Id", info.id)
	get := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch {
	case get && r.URL.Path == "/healthz":
		writeHealthz(w)
	case get && r.URL.Path == "/readyz":
		writeNotReady(w, r, "Not ready: the server is starting.", "startup", s.current())
	default:
		w.Header().Set("Retry-After", strconv.Itoa(retryStarting))
		writeProblemDoc(w, r, problemDoc{
			Status: http.StatusServiceUnavailable,
			Detail: "The server is starting (GET /readyz says what it waits for); retry later.",
		})
	}
}

// Handover stops the starting server and returns its listener, accepting again, for
// Config.Listener; the caller owns it from then on. It stops accepting at once, waits until
// every connection accepted got its answer, ctx ends or 1 s has passed, then closes the
// connections left.
// It returns ErrServerClosed after Handover or Close, and an error (closing the listener)
// when serving had failed.
func (s *Starting) Handover(ctx context.Context) (net.Listener, error) {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil, ErrServerClosed
	}
	s.done = true
	s.mu.Unlock()

	// Stop accepting without http.Server.Shutdown: a server shutting down drops a request
	// that arrives on a connection it accepted before, unanswered, and the client sees EOF.
	// Here every connection accepted gets its answer.
	_ = s.ln.Close()
	if err := <-s.served; !errors.Is(err, net.ErrClosed) {
		_ = s.srv.Close()
		s.conns.Wait()
		_ = s.ln.Listener.Close()
		return nil, fmt.Errorf("starting api server on %s: %w", s.Addr(), err)
	}
	drained := make(chan struct{})
	go func() { s.conns.Wait(); close(drained) }()
	timer := time.NewTimer(startingHandoverTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = s.srv.Close() // the connections still open: none sent a request in time
	<-drained
	if err := s.ln.resume(); err != nil {
		_ = s.ln.Listener.Close()
		return nil, fmt.Errorf("hand over listener %s: %w", s.Addr(), err)
	}
	return s.ln.Listener, nil
}

// Close stops the starting server, closes its connections and its listener, for a start-up
// that failed. It is idempotent, and does nothing after Handover.
func (s *Starting) Close() error {
	s.mu.Lock()
	if s.done {
		s.mu.Unlock()
		return nil
	}
	s.done = true
	s.mu.Unlock()
	_ = s.srv.Close()
	<-s.served
	s.conns.Wait()
	if err := s.ln.Listener.Close(); err != nil {
		return fmt.Errorf("close listener %s: %w", s.Addr(), err)
	}
	return nil
}

// handoffListener lets an http.Server stop accepting without closing the socket: Close sets a
// deadline in the past, which makes a blocked Accept return at once, and later Accepts fail
// with net.ErrClosed. Connections not yet accepted stay in the kernel's queue for the next
// server. Accept is called from one goroutine (the http.Server's).
type handoffListener struct {
	net.Listener
	dl      interface{ SetDeadline(time.Time) error }
	stopped atomic.Bool
}

func (l *handoffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil && l.stopped.Load() {
		return nil, net.ErrClosed
	}
	return c, err
}

// Close stops Accept; the socket stays open.
func (l *handoffListener) Close() error {
	if l.stopped.Swap(true) {
		return nil
	}
	return l.dl.SetDeadline(time.Unix(1, 0))
}

// resume clears the deadline Close set, for the next server.
func (l *handoffListener) resume() error { return l.dl.SetDeadline(time.Time{}) }

// clipStatus cuts a start-up status to maxStartingStatus bytes, on a character boundary, and
// marks the cut.
func clipStatus(status string) string {
	if len(status) <= maxStartingStatus {
		return status
	}
	cut := maxStartingStatus
	for cut > 0 && !utf8.RuneStart(status[cut]) {
		cut--
	}
	return status[:cut] + "…"
}
