// Package client is a Go client for Sluice's HTTP API (sources/httpapi): JSON requests with
// the bearer token, problem+json answers as *Error, 429 and 503 waited out as the Python
// client does (sources/python/sluice_client.py), and server-sent event streams. The operator
// commands of cmd/sluice (jobs, dlq, shell completion) use it.
package client

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// Waiting out 429 and 503, as the Python client does (sources/python/sluice_client.py).
const (
	// MaxResends is how many times one request refused with 429 or 503 is sent again (so at
	// most 9 sends): the server's rate limits refill within seconds, and a broker or store
	// that stays away longer than 8 waits is an outage to report, not to hide.
	MaxResends = 8
	// MaxRetryWait caps one wait, whatever Retry-After says: a command-line user should see
	// progress or an error within half a minute.
	MaxRetryWait = 30 * time.Second
	// firstBackoff is the first wait when the answer has no usable Retry-After; it doubles up
	// to MaxRetryWait.
	firstBackoff = time.Second
	// attemptTimeout bounds one send of a request and the reading of its answer (not the
	// event streams, which last as long as the job).
	attemptTimeout = 60 * time.Second
	// maxProblemBytes bounds the problem+json body read from an error answer.
	maxProblemBytes = 1 << 20
)

// DefaultURL is sluice serve's default address.
const DefaultURL = "http://127.0.0.1:8080"

// Config configures a Client.
type Config struct {
	// URL is the API's base URL, e.g. DefaultURL. Required.
	URL string
	// Token is the bearer token; it is sent on every request and never printed. Optional:
	// empty sends none (a loopback server without tokens). A secret.String.
	Token secret.String
	// HTTP sends the requests. Optional: nil is a new http.Client.
	HTTP *http.Client
	// Waits receives one line for each wait of a 429 or 503 (why, and how long). Optional:
	// nil discards them.
	Waits io.Writer
	// Backoff is the first wait when an answer has no usable Retry-After; it doubles up to
	// MaxRetryWait. Optional: 0 means 1 s.
	Backoff time.Duration
	// NoResend returns a 429 or 503 at once instead of waiting it out (shell completion must
	// answer within a keystroke's patience, or not at all). Optional.
	NoResend bool
}

// Client talks to a running Sluice API. An answer 429 or 503 is waited out (its Retry-After,
// else Config.Backoff doubling, at most MaxRetryWait a wait) and the request sent again, up
// to MaxResends times, when sending it again is safe (see resendable). A Client is safe for
// concurrent use; Config.Waits must then be too.
type Client struct {
	cfg Config
}

// New returns a client of the API at cfg.URL. It does no I/O.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" {
		return nil, errors.New("client: URL is required")
	}
	if _, err := url.Parse(cfg.URL); err != nil {
		return nil, fmt.Errorf("client: URL: %w", err)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	cfg.Backoff = cmp.Or(cfg.Backoff, firstBackoff)
	return &Client{cfg: cfg}, nil
}

// Error is a problem+json answer (RFC 9457) of status 300 or more.
type Error struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

// Error returns the status and title, and the detail when there is one.
func (e *Error) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Title)
}

// Do sends a request with body (when not nil) as JSON and decodes a JSON answer into out
// (when not nil). It blocks until the answer is read, a wait ends with ctx, or the resends are
// used up. An answer of status 300 or more is returned as *Error. A POST or DELETE is sent
// again only after 429; use DoIdempotent for one that may also be sent again after 503.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.doRequest(ctx, method, path, query, body, out, false)
}

// DoIdempotent is Do for a write whose repetition does no harm even after the server acted
// on it in part, so a 503 may be waited out too. The caller says why in a comment.
func (c *Client) DoIdempotent(ctx context.Context, method, path string, query url.Values, body, out any) error {
	return c.doRequest(ctx, method, path, query, body, out, true)
}

func (c *Client) doRequest(ctx context.Context, method, path string, query url.Values, body, out any, idempotent bool) error {
	u := strings.TrimRight(c.cfg.URL, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encode body: %w", method, path, err)
		}
	}
	resp, err := c.send(ctx, request{method: method, url: u, path: path, body: b, idempotent: idempotent, timeout: attemptTimeout})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return decodeProblem(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// resendable reports whether a request answered status may be waited out and sent again.
// Every 429 of this API is a refusal before anything was done (sources/httpapi, require: the
// per-token rate limits and the change-feed cap are checked before the handler runs), so any
// request may be sent again. A 503 is a refusal before acting too when it comes from the
// connection cap (capListener, before the request is read), a broker known to be away
// (require, before the handler), a full upload spool (intake.Loader spools an upload whole
// before it publishes anything), or start-up (Starting) — but internalError
// also answers 503 when a service failed part-way with a transient error (a publish that
// timed out after others succeeded), so only a request that is safe to repeat is sent again
// after 503: GET and HEAD, and writes the caller marked idempotent.
func resendable(method string, status int, idempotent bool) bool {
	switch status {
	case http.StatusTooManyRequests:
		return true
	case http.StatusServiceUnavailable:
		return method == http.MethodGet || method == http.MethodHead || idempotent
	}
	return false
}

// retryDelay is how long an answer asks the client to wait: Retry-After in seconds or as an
// HTTP date (relative to now), else ok is false.
func retryDelay(h http.Header, now time.Time) (d time.Duration, ok bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(MaxRetryWait/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// request is one request as send sends it, again on every try.
type request struct {
	method, url, path string
	body              []byte // sent again from the start on every try; nil: none
	idempotent        bool
	timeout           time.Duration // each try, from its send to the closing of its body; 0: none
	header            http.Header
}

// send sends r until the answer is not a resendable 429/503, MaxResends sends again have been
// made, or ctx ends, and returns the last answer for the caller to read and close. Each wait
// is announced once on Config.Waits.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	backoff := c.cfg.Backoff
	for resends := 0; ; resends++ {
		resp, err := c.try(ctx, r)
		if err != nil {
			return nil, err
		}
		if c.cfg.NoResend || resends >= MaxResends || !resendable(r.method, resp.StatusCode, r.idempotent) {
			return resp, nil
		}
		wait, ok := retryDelay(resp.Header, time.Now())
		if !ok {
			wait = backoff
			backoff = min(2*backoff, MaxRetryWait)
		}
		wait = min(wait, MaxRetryWait)
		// The problem's detail says why (rate limit, broker away, starting): show it.
		problem := decodeProblem(resp)
		resp.Body.Close()
		if c.cfg.Waits != nil {
			fmt.Fprintf(c.cfg.Waits, "sluice: %s %s: %v — sending again in %s (%d of %d)\n", r.method, r.path, problem, wait, resends+1, MaxResends)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s %s: gave up waiting after %v: %w", r.method, r.path, problem, context.Cause(ctx))
		}
	}
}

// try sends r once; the answer's body ends the try's context when closed.
func (c *Client) try(ctx context.Context, r request) (*http.Response, error) {
	actx, cancel := ctx, context.CancelFunc(func() {})
	if r.timeout > 0 {
		actx, cancel = context.WithTimeout(ctx, r.timeout)
	}
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, r.url, rd)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	for k, v := range r.header {
		req.Header[k] = v
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+string(c.cfg.Token))
	}
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	resp.Body = cancelBody{resp.Body, cancel}
	return resp, nil
}

// cancelBody ends its request's context when the answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// decodeProblem reads an error answer as *Error; a body that is not problem+json leaves the
// status and its text.
func decodeProblem(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxProblemBytes)).Decode(e)
	if resp.StatusCode == http.StatusUnauthorized && e.Detail == "" {
		e.Detail = "set SLUICE_TOKEN to a token the server accepts"
	}
	return e
}

// ErrStreamEnded is Events' error when the server closed the stream before fn was satisfied
// (a restart, a proxy's idle timeout): the caller decides whether to reconnect.
var ErrStreamEnded = errors.New("event stream ended")

// Event stream lines: the scanner's first buffer and the longest line it accepts (a job
// record with its 1,000 rejections fits).
const (
	eventLineBuffer = 64 << 10
	maxEventLine    = 4 << 20
)

// Events reads the server-sent event stream at path, calling fn with each event's name and
// data until fn returns true (nil), ctx ends (ctx's error), or the stream ends or breaks
// (ErrStreamEnded, or the read error wrapping it). fn runs on the calling goroutine, one event
// at a time. Opening the stream waits out 429 and 503 as Do does; an answer other than 200 is
// returned as *Error.
func (c *Client) Events(ctx context.Context, path string, fn func(event string, data []byte) bool) error {
	resp, err := c.send(ctx, request{method: http.MethodGet, url: strings.TrimRight(c.cfg.URL, "/") + path, path: path,
		header: http.Header{"Accept": {"text/event-stream"}}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeProblem(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, eventLineBuffer), maxEventLine)
	var event string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" || data != nil {
				if fn(event, data) {
					return nil
				}
			}
			event, data = "", nil
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data = append(data, strings.TrimPrefix(line, "data: ")...)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrStreamEnded, err)
	}
	return ErrStreamEnded
}
