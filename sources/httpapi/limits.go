package httpapi

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Retry-After values, in seconds, of the answers that ask a client to come back.
const (
	// retryConnsFull: a connection slot frees as soon as any request ends.
	retryConnsFull = 1
	// retrySpoolFull: the spool frees as uploads finish, which takes seconds at least.
	retrySpoolFull = 10
	// retryFeedsFull: a feed slot frees when the client closes one of its feeds.
	retryFeedsFull = 5
	// retryUnavailable: the broker reconnects within seconds (nats.go retries every 2 s).
	retryUnavailable = 5
)

// Rate is a token bucket: PerSecond requests a second on average, Burst at once.
type Rate struct {
	// PerSecond is the sustained rate. Negative means unlimited; 0 means the class default.
	PerSecond float64
	// Burst is how many requests may come at once. 0 means the class default (or 1 when
	// PerSecond is set and the class default is lower).
	Burst int
}

// RateLimits bounds expensive requests per token, per class of route. Each token (each
// principal) has its own bucket per class; a request past it is answered 429 with
// Retry-After. Zero fields take the defaults below; a negative PerSecond turns a class off.
type RateLimits struct {
	// Uploads: POST /v1/jobs and POST /v1/graph. Default 2/s, burst 10: each spools and
	// publishes a whole file.
	Uploads Rate
	// Graph: GET /v1/graph/nodes/{id}/neighbors. Default 20/s, burst 40: each is a
	// traversal that may visit up to the graph visit budget.
	Graph Rate
	// Replay: POST /v1/dlq/replay. Default 1/s, burst 5: each may republish many messages.
	Replay Rate
	// Feeds: opening GET /v1/events, /v1/ws and /v1/jobs/{id}/events. Default 5/s,
	// burst 20: each creates a JetStream consumer.
	Feeds Rate
}

// The default rates (see RateLimits).
var (
	DefaultUploadsRate = Rate{PerSecond: 2, Burst: 10}
	DefaultGraphRate   = Rate{PerSecond: 20, Burst: 40}
	DefaultReplayRate  = Rate{PerSecond: 1, Burst: 5}
	DefaultFeedsRate   = Rate{PerSecond: 5, Burst: 20}
)

func (r *Rate) setDefault(d Rate) {
	if r.PerSecond == 0 {
		r.PerSecond = d.PerSecond
	}
	if r.Burst == 0 {
		r.Burst = max(d.Burst, 1)
	}
}

func (l *RateLimits) setDefaults() {
	l.Uploads.setDefault(DefaultUploadsRate)
	l.Graph.setDefault(DefaultGraphRate)
	l.Replay.setDefault(DefaultReplayRate)
	l.Feeds.setDefault(DefaultFeedsRate)
}

// Validate reports negative bursts and rates that are not numbers.
func (l RateLimits) Validate() error {
	var errs []error
	for _, c := range l.classes() {
		if math.IsNaN(c.r.PerSecond) || math.IsInf(c.r.PerSecond, 0) {
			errs = append(errs, fmt.Errorf("%s: rate %v is not a number", c.name, c.r.PerSecond))
		}
		if c.r.Burst < 0 {
			errs = append(errs, fmt.Errorf("%s: burst %d is negative", c.name, c.r.Burst))
		}
	}
	return errors.Join(errs...)
}

type namedRate struct {
	name  string
	class rateClass
	r     Rate
}

func (l RateLimits) classes() []namedRate {
	return []namedRate{
		{"uploads", classUploads, l.Uploads},
		{"graph", classGraph, l.Graph},
		{"replay", classReplay, l.Replay},
		{"feeds", classFeeds, l.Feeds},
	}
}

// ParseRateLimits reads "class=rate[:burst],…" (classes uploads, graph, replay, feeds; rate a
// number per second or "off"), as SLUICE_API_RATE_LIMITS holds it. Classes left out keep
// their defaults. It does not block.
func ParseRateLimits(s string) (RateLimits, error) {
	var l RateLimits
	if strings.TrimSpace(s) == "" {
		return l, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		name, spec, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return l, fmt.Errorf("rate limit %q: want class=rate[:burst]", part)
		}
		var r Rate
		rs, bs, hasBurst := strings.Cut(spec, ":")
		if rs == "off" {
			r.PerSecond = -1
		} else {
			v, err := strconv.ParseFloat(strings.TrimSuffix(rs, "/s"), 64)
			if err != nil || !(v > 0) || math.IsInf(v, 0) {
				return l, fmt.Errorf("rate limit %q: rate %q is not a positive number or off", part, rs)
			}
			r.PerSecond = v
		}
		if hasBurst {
			b, err := strconv.Atoi(bs)
			if err != nil || b < 1 {
				return l, fmt.Errorf("rate limit %q: burst %q is not a positive integer", part, bs)
			}
			r.Burst = b
		}
		switch name {
		case "uploads":
			l.Uploads = r
		case "graph":
			l.Graph = r
		case "replay":
			l.Replay = r
		case "feeds":
			l.Feeds = r
		default:
			return l, fmt.Errorf("rate limit %q: unknown class %q (uploads, graph, replay, feeds)", part, name)
		}
	}
	return l, nil
}

// rateClass is which bucket (if any) and which caps a route is under.
type rateClass int

const (
	classNone rateClass = iota
	classUploads
	classGraph
	classReplay
	classFeeds
)

// routeClasses assigns the expensive routes their class, by registered pattern.
var routeClasses = map[string]rateClass{
	"POST /v1/jobs":                      classUploads,
	"POST /v1/graph":                     classUploads,
	"GET /v1/graph/nodes/{id}/neighbors": classGraph,
	"POST /v1/dlq/replay":                classReplay,
	"GET /v1/events":                     classFeeds,
	"GET /v1/ws":                         classFeeds,
	"GET /v1/jobs/{id}/events":           classFeeds,
	"GET /ws/requirements":               classFeeds,
}

// limiters holds one token bucket per (principal, class) and the open feeds per principal.
// Its size is bounded by the configured tokens (principals come from the token list, never
// from the request); SetTokens resets it. Safe for concurrent use.
type limiters struct {
	rates    map[rateClass]Rate
	maxFeeds int

	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	feeds   map[string]int
}

type bucketKey struct {
	principal string
	class     rateClass
}

func newLimiters(l RateLimits, maxFeeds int) *limiters {
	m := &limiters{rates: map[rateClass]Rate{}, maxFeeds: maxFeeds, buckets: map[bucketKey]*rate.Limiter{}, feeds: map[string]int{}}
	for _, c := range l.classes() {
		m.rates[c.class] = c.r
	}
	return m
}

// allow takes one request from principal's bucket for class. When the bucket is empty it
// returns false and how long until it holds one again.
func (m *limiters) allow(principal string, class rateClass) (bool, time.Duration) {
	r, ok := m.rates[class]
	if !ok || r.PerSecond < 0 {
		return true, 0
	}
	m.mu.Lock()
	k := bucketKey{principal, class}
	b := m.buckets[k]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)
		m.buckets[k] = b
	}
	m.mu.Unlock()
	res := b.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel() // not taken: the client comes back later
		return false, d
	}
	return true, 0
}

// openFeed takes one of principal's feed slots; release gives it back (call it once).
func (m *limiters) openFeed(principal string) (release func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.feeds[principal] >= m.maxFeeds {
		return nil, false
	}
	m.feeds[principal]++
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.feeds[principal]--; m.feeds[principal] <= 0 {
				delete(m.feeds, principal)
			}
		})
	}, true
}

// resetBuckets forgets every bucket (tokens changed); open feeds stay counted.
func (m *limiters) resetBuckets() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.buckets)
}

// retryAfter formats d as whole seconds for Retry-After, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// tooBusy answers status (429 or 503) with Retry-After and a problem.
func (s *Server) tooBusy(w http.ResponseWriter, r *http.Request, status int, after time.Duration, detail string) {
	w.Header().Set("Retry-After", retryAfter(after))
	s.problem(w, r, status, detail)
}

// errSpoolFull is what an upload's body read returns when the spool budget is exhausted.
var errSpoolFull = errors.New("upload spool is full")

// idleBody bounds each read of a request body by the server's body idle timeout: the
// connection's read deadline is renewed before every read, so a client that stops sending
// fails the read (and the connection is closed) while a slow one that keeps sending goes on.
// It is installed by serveHTTP on every request that has a body, before authentication; the
// first deadline is set there too, so a handler that never reads the body (a 401 answer)
// cannot have the server wait forever draining it. Reads must not be concurrent.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	eof     bool
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.eof {
		// Past EOF the server runs a background read on the connection to notice a client
		// that goes away; a deadline set now would make it time out while the handler still
		// works (publishing an upload, waiting for an outcome), and that cancels the request.
		return b.ReadCloser.Read(p)
	}
	// Not supported by every ResponseWriter (httptest.ResponseRecorder): then no deadline.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		// The server clears the deadline when it starts that background read; clear it here
		// too rather than depend on that. After other errors the deadline stays, so the
		// server's drain of an unread body cannot hang.
		b.eof = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// isDeadline reports whether err is a read that hit the body idle deadline.
func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// capListener admits at most cap(slots) connections at once. One more is answered 503 with
// Retry-After and closed at once, so a flood of connections costs one short write each and
// never more file descriptors than the cap (a listener that stopped accepting instead would
// leave them queued in the kernel with no answer). Accept is called from one goroutine (the
// http.Server's); Close of the returned connections is safe from any.
type capListener struct {
	net.Listener
	slots    chan struct{}
	rejected func() // counts a rejected connection; may be nil
}

// connsFullResponse is the whole answer to a connection over the cap.
var connsFullResponse = func() string {
	body := `{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"The server has too many open connections; retry shortly."}` + "\n"
	return "HTTP/1.1 503 Service Unavailable\r\n" +
		"Content-Type: application/problem+json\r\n" +
		"Retry-After: " + strconv.Itoa(retryConnsFull) + "\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}()

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &capConn{Conn: c, release: func() { <-l.slots }}, nil
		default:
		}
		// A fresh socket's send buffer takes this small write at once; the deadline only
		// guards against a pathological peer.
		_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		_, _ = io.WriteString(c, connsFullResponse)
		_ = c.Close()
		if l.rejected != nil {
			l.rejected()
		}
	}
}

// capConn gives its slot back on its first Close.
type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
