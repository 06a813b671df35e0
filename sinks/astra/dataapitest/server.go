package dataapitest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// Config configures a Server. The zero value is valid: every zero field takes its default.
type Config struct {
	// Token is the application token accepted in the Token header (X-Cassandra-Token is
	// also accepted, as the server does). Optional; default "AstraCS:test-token".
	Token string
	// Keyspaces lists the keyspaces that exist. Optional; default ["default_keyspace"].
	Keyspaces []string
	// MaxCollections bounds the collections of the database across keyspaces; creating one
	// more fails with TOO_MANY_COLLECTIONS. Optional; default 5 (the server's
	// application.yaml value). Negative is treated as the default.
	MaxCollections int
	// MaxInsertMany bounds the documents of one insertMany; more fails the whole request
	// with COMMAND_FIELD_VALUE_INVALID. Optional; default 100.
	MaxInsertMany int
	// PageSize is the find page size, also the number of documents one updateMany call
	// processes. Optional; default 20.
	PageSize int
	// Seed seeds the random number generator behind SetFaultRate. Optional; default 1.
	Seed int64
}

func (c Config) withDefaults() Config {
	if c.Token == "" {
		c.Token = "AstraCS:test-token"
	}
	if len(c.Keyspaces) == 0 {
		c.Keyspaces = []string{"default_keyspace"}
	}
	if c.MaxCollections <= 0 {
		c.MaxCollections = 5
	}
	if c.MaxInsertMany <= 0 {
		c.MaxInsertMany = 100
	}
	if c.PageSize <= 0 {
		c.PageSize = 20
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c
}

// Fault is a failure the Server can inject instead of (or after) serving a request.
type Fault string

// The injectable faults. None of them is recorded as a violation.
const (
	// FaultHTTP429 answers 429 Too Many Requests with a plain-text body; nothing is written.
	FaultHTTP429 Fault = "http429"
	// FaultHTTP503 answers 503 Service Unavailable with a plain-text body; nothing is written.
	FaultHTTP503 Fault = "http503"
	// FaultHTTP504 answers 504 Gateway Timeout with a plain-text body; nothing is written.
	FaultHTTP504 Fault = "http504"
	// FaultTimeout holds the request without answering until the client gives up (its
	// context or connection closes), the Server closes, or 60 s pass; nothing is written.
	FaultTimeout Fault = "timeout"
	// FaultRetryableCode answers HTTP 200 with a SERVER-family errorCode,
	// TIMEOUT_WRITING_DATA or UNAVAILABLE_DATABASE (chosen at random); nothing is written.
	FaultRetryableCode Fault = "retryable"
	// FaultLostResponse applies the command, then drops the response by closing the
	// connection (or answers 504 when the connection cannot be hijacked). A retried insert
	// then meets DOCUMENT_ALREADY_EXISTS.
	FaultLostResponse Fault = "lost"
	// FaultUnauthorized answers 401 with UNAUTHENTICATED_REQUEST; nothing is written.
	FaultUnauthorized Fault = "unauthorized"
)

// Stats is a snapshot of what the Server saw since it started or since ResetStats.
type Stats struct {
	// Requests counts requests by command name ("" for requests whose command could not
	// be read: bad path, method, or body).
	Requests map[string]int
	// MaxConcurrent is the largest number of requests in flight at once.
	MaxConcurrent int
	// InFlight is the number of requests in flight now.
	InFlight int
	// Violations describes each request a correct client never sends, one line each: bad
	// or missing token, wrong Content-Type, invalid JSON, unknown command or field, too many
	// documents, a limit violation, unknown keyspace or collection, wrong method or path,
	// and every other REQUEST-family error except DOCUMENT_ALREADY_EXISTS.
	Violations []string
	// Faults counts the injected faults by kind.
	Faults map[Fault]int
}

// Server is a running Data API double. All methods are safe for concurrent use.
type Server struct {
	cfg       Config
	ts        *httptest.Server
	closing   chan struct{}
	closeOnce sync.Once

	mu        sync.RWMutex // guards keyspaces and the collections maps inside it
	keyspaces map[string]map[string]*collection

	fmu        sync.Mutex // guards queue, rate, rateFaults, rng, filter, latFixed, latPerDoc
	queue      []queuedFault
	rate       float64
	rateFaults []Fault
	rng        *rand.Rand
	filter     map[string]bool
	latFixed   time.Duration
	latPerDoc  time.Duration

	smu   sync.Mutex // guards stats
	stats Stats

	// testHeld, when set by a test before any traffic, receives once per request that
	// FaultTimeout starts holding.
	testHeld chan struct{}
}

type queuedFault struct {
	n int
	f Fault
}

// New starts a Server on a loopback port. The caller must call Close, which stops it and
// waits for in-flight requests.
func New(cfg Config) *Server {
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:       cfg,
		closing:   make(chan struct{}),
		keyspaces: map[string]map[string]*collection{},
		rng:       rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(cfg.Seed)^0x9e3779b97f4a7c15)),
	}
	for _, ks := range cfg.Keyspaces {
		s.keyspaces[ks] = map[string]*collection{}
	}
	s.resetStatsLocked()
	s.ts = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// URL returns the endpoint, e.g. "http://127.0.0.1:PORT"; clients POST to
// {URL}/api/json/v1/{keyspace}[/{collection}] (also accepted: {URL}/v1/…).
func (s *Server) URL() string { return s.ts.URL }

// Token returns the accepted application token.
func (s *Server) Token() string { return s.cfg.Token }

// Close releases held (FaultTimeout, latency) requests, stops the server and waits for
// in-flight requests. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.ts.CloseClientConnections()
		s.ts.Close()
	})
}

// InjectNext makes the next n requests (of the filtered commands, see SetCommandFilter)
// fail with f. Calls queue up in order.
func (s *Server) InjectNext(n int, f Fault) {
	if n <= 0 {
		return
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.queue = append(s.queue, queuedFault{n: n, f: f})
}

// SetFaultRate makes each request (of the filtered commands) independently fail, with
// probability rate, with one of faults chosen at random from the seeded generator. A rate
// of 0 or no faults turns it off. Faults queued by InjectNext come first.
func (s *Server) SetFaultRate(rate float64, faults ...Fault) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.rate, s.rateFaults = rate, slices.Clone(faults)
}

// SetLatency adds fixed to every request, plus perDoc for each document of an insertMany
// (and once for an insertOne). A held request is released when its client gives up or the
// Server closes.
func (s *Server) SetLatency(fixed, perDoc time.Duration) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.latFixed, s.latPerDoc = fixed, perDoc
}

// SetCommandFilter restricts fault injection to the named commands (e.g. "insertMany");
// no arguments means all commands.
func (s *Server) SetCommandFilter(commands ...string) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.filter = nil
	if len(commands) > 0 {
		s.filter = map[string]bool{}
		for _, c := range commands {
			s.filter[c] = true
		}
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.smu.Lock()
	defer s.smu.Unlock()
	out := s.stats
	out.Requests = make(map[string]int, len(s.stats.Requests))
	for k, v := range s.stats.Requests {
		out.Requests[k] = v
	}
	out.Faults = make(map[Fault]int, len(s.stats.Faults))
	for k, v := range s.stats.Faults {
		out.Faults[k] = v
	}
	out.Violations = slices.Clone(s.stats.Violations)
	return out
}

// ResetStats clears the counters; MaxConcurrent restarts from the requests in flight.
func (s *Server) ResetStats() {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.resetStatsLocked()
}

func (s *Server) resetStatsLocked() {
	s.stats = Stats{Requests: map[string]int{}, Faults: map[Fault]int{},
		InFlight: s.stats.InFlight, MaxConcurrent: s.stats.InFlight}
}

// Documents returns a snapshot of a collection's documents, keyed by _id in string form
// (a string _id as is, $uuid/$objectId as their text, others as JSON text), each as
// stored, with "_id". It returns nil for an unknown keyspace or collection.
func (s *Server) Documents(keyspace, collection string) map[string]json.RawMessage {
	c := s.collection(keyspace, collection)
	if c == nil {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]json.RawMessage, len(c.docs))
	for _, d := range c.docs {
		b, err := json.Marshal(d.doc)
		if err != nil {
			panic(fmt.Sprintf("dataapitest: marshal stored document: %v", err)) // cannot happen: parsed JSON
		}
		out[idString(d.id)] = b
	}
	return out
}

// Collections returns the sorted names of a keyspace's collections (nil if unknown).
func (s *Server) Collections(keyspace string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ks, ok := s.keyspaces[keyspace]
	if !ok {
		return nil
	}
	names := make([]string, 0, len(ks))
	for n := range ks {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (s *Server) collection(ks, name string) *collection {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.keyspaces[ks][name]
}

func (s *Server) violate(format string, args ...any) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.stats.Violations = append(s.stats.Violations, fmt.Sprintf(format, args...))
}

func (s *Server) enter() {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.stats.InFlight++
	s.stats.MaxConcurrent = max(s.stats.MaxConcurrent, s.stats.InFlight)
}

func (s *Server) exit() {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.stats.InFlight--
}

func (s *Server) count(cmd string) {
	s.smu.Lock()
	defer s.smu.Unlock()
	s.stats.Requests[cmd]++
}

// pickFault decides the fault for a request of cmd, and the latency to add.
func (s *Server) pickFault(cmd string, docs int) (Fault, time.Duration, string) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	lat := s.latFixed + time.Duration(docs)*s.latPerDoc
	if s.filter != nil && !s.filter[cmd] {
		return "", lat, ""
	}
	var f Fault
	if len(s.queue) > 0 {
		f = s.queue[0].f
		if s.queue[0].n--; s.queue[0].n == 0 {
			s.queue = s.queue[1:]
		}
	} else if s.rate > 0 && len(s.rateFaults) > 0 && s.rng.Float64() < s.rate {
		f = s.rateFaults[s.rng.IntN(len(s.rateFaults))]
	}
	code := "TIMEOUT_WRITING_DATA"
	if f == FaultRetryableCode && s.rng.IntN(2) == 1 {
		code = "UNAVAILABLE_DATABASE"
	}
	return f, lat, code
}

var pathRE = regexp.MustCompile(`^(?:/api/json)?/v1/([^/]+)(?:/([^/]+))?/?$`)

const maxBodyBytes = 20 << 20 // quarkus.http.limits.max-body-size

// serveHTTP serves one Data API request: it routes and reads it, applies the fault and
// latency injected for it, runs its command and writes the response.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.enter()
	defer s.exit()
	ks, coll, body, ok := s.readRequest(w, r)
	if !ok {
		return
	}
	s.fmu.Lock()
	perDoc := s.latPerDoc > 0
	s.fmu.Unlock()
	cmd, docs := peekCommand(body, perDoc)
	s.count(cmd)

	fault, lat, retryCode := s.pickFault(cmd, docs)
	if fault != "" {
		s.smu.Lock()
		s.stats.Faults[fault]++
		s.smu.Unlock()
	}
	if !s.hold(r, fault, lat) || s.writeFault(w, cmd, fault, retryCode, ks, coll) {
		return
	}
	res := s.handle(r, ks, coll, cmd, body)
	s.recordViolations(cmd, res)
	if fault == FaultLostResponse {
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return
			}
		}
		http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
		return
	}
	s.write(w, cmd, res)
}

// readRequest checks the path and method and reads the body (at most maxBodyBytes). When
// it reports false it has answered the request (404, 405, 413) or the client went away.
func (s *Server) readRequest(w http.ResponseWriter, r *http.Request) (ks, coll string, body []byte, ok bool) {
	m := pathRE.FindStringSubmatch(r.URL.Path)
	if m == nil {
		s.count("")
		s.violate("HTTP 404: unknown path %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return "", "", nil, false
	}
	if r.Method != http.MethodPost {
		s.count("")
		s.violate("HTTP 405: method %s on %s", r.Method, r.URL.Path)
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
		return "", "", nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		s.count("")
		if errors.As(err, &mbe) {
			s.violate("HTTP 413: body over %d bytes", maxBodyBytes)
			http.Error(w, "Request Entity Too Large", http.StatusRequestEntityTooLarge)
		}
		return "", "", nil, false // or the client went away mid-body
	}
	return m[1], m[2], body, true
}

// hold delays the request by lat, or, for FaultTimeout, holds it unanswered for up to 60
// s. It reports false when the request must not be answered: a timeout, or the client or
// the server went away while it waited.
func (s *Server) hold(r *http.Request, fault Fault, lat time.Duration) bool {
	if fault == FaultTimeout {
		hold := time.NewTimer(60 * time.Second)
		defer hold.Stop()
		if s.testHeld != nil {
			s.testHeld <- struct{}{}
		}
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-hold.C:
		}
		return false
	}
	if lat <= 0 {
		return true
	}
	t := time.NewTimer(lat)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-s.closing:
		return false
	}
}

// writeFault answers the request with an injected gateway, authentication or retryable
// error in place of running it, and reports whether it did.
func (s *Server) writeFault(w http.ResponseWriter, cmd string, fault Fault, retryCode, ks, coll string) bool {
	switch fault {
	case FaultHTTP429:
		http.Error(w, "429 Too Many Requests: rate limit exceeded", http.StatusTooManyRequests)
	case FaultHTTP503:
		http.Error(w, "<html><body>503 Service Temporarily Unavailable</body></html>", http.StatusServiceUnavailable)
	case FaultHTTP504:
		http.Error(w, "upstream request timeout", http.StatusGatewayTimeout)
	case FaultUnauthorized:
		e := errBadToken()
		e.violation = false
		s.write(w, cmd, &result{errors: []*apiError{e}})
	case FaultRetryableCode:
		s.write(w, cmd, &result{errors: []*apiError{errRetryable(retryCode, ks, coll)}})
	default:
		return false
	}
	return true
}

// peekCommand reads the command name (the body's first key) and, for insertMany when
// countDocs is set (per-document latency), a document count, without a full parse.
func peekCommand(body []byte, countDocs bool) (string, int) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", 0
	}
	t, err := dec.Token()
	if err != nil {
		return "", 0
	}
	name, _ := t.(string)
	switch name {
	case "insertOne":
		return name, 1
	case "insertMany":
		if !countDocs {
			return name, 0
		}
		var args struct {
			Documents []json.RawMessage `json:"documents"`
		}
		if dec.Decode(&args) == nil {
			return name, len(args.Documents)
		}
	}
	return name, 0
}

// result is a command outcome: the envelope's data, status and errors.
type result struct {
	data   map[string]any
	status map[string]any
	errors []*apiError
}

func errResult(e *apiError) *result { return &result{errors: []*apiError{e}} }

func (s *Server) recordViolations(cmd string, res *result) {
	for _, e := range res.errors {
		if e.violation {
			msg := e.message
			if i := strings.IndexByte(msg, '\n'); i > 0 {
				msg = msg[:i]
			}
			if len(msg) > 200 {
				msg = msg[:200] + "..."
			}
			s.violate("%s: %s: %s", cmdName(cmd), e.code, msg)
		}
	}
}

func cmdName(cmd string) string {
	if cmd == "" {
		return "(no command)"
	}
	return cmd
}

func (s *Server) write(w http.ResponseWriter, _ string, res *result) {
	env := struct {
		Data   map[string]any `json:"data,omitempty"`
		Status map[string]any `json:"status,omitempty"`
		Errors []errObj       `json:"errors,omitempty"`
	}{Status: res.status}
	status := http.StatusOK
	if len(res.errors) > 0 {
		if res.errors[0].status != 0 {
			status = res.errors[0].status
		}
		for _, e := range res.errors {
			env.Errors = append(env.Errors, e.wire())
		}
	} else {
		env.Data = res.data
	}
	b, err := json.Marshal(env)
	if err != nil {
		b = []byte(`{"errors":[{"errorCode":"INTERNAL_SERVER_ERROR","message":"dataapitest: cannot encode response"}]}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// handle authenticates and parses the request and runs its command.
func (s *Server) handle(r *http.Request, ks, coll, cmd string, body []byte) *result {
	tok := r.Header.Get("Token")
	if tok == "" {
		tok = r.Header.Get("X-Cassandra-Token")
	}
	switch {
	case tok == "":
		return errResult(errMissingToken())
	case tok != s.cfg.Token:
		return errResult(errBadToken())
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return errResult(errContentType(ct))
	}
	v, spans, err := parseJSON(body)
	if err != nil {
		var pe *parseError
		if errors.As(err, &pe) && pe.numberLen > 0 {
			return errResult(errDocLimit(fmt.Sprintf("Number value length (%d) exceeds the maximum length (%d)", pe.numberLen, maxNumberLen)))
		}
		return errResult(errNotJSON(err.Error()))
	}
	top, ok := v.(map[string]any)
	if !ok || len(top) != 1 {
		return errResult(errStructure("the request body must be a JSON object with exactly one command"))
	}
	args, ok := top[cmd].(map[string]any)
	if !ok {
		return errResult(errStructure(fmt.Sprintf("the value of command '%s' must be a JSON object", cmd)))
	}
	req := &request{s: s, ks: ks, coll: coll, cmd: cmd, args: args, spans: spans}
	return req.run()
}
