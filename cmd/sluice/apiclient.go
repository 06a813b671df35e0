package main

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
)

// Waiting out 429 and 503, as the Python client does (sources/python/sluice_client.py).
const (
	// maxResends is how many times one request refused with 429 or 503 is sent again (so at
	// most 9 sends): the server's rate limits refill within seconds, and a broker or store
	// that stays away longer than 8 waits is an outage to report, not to hide.
	maxResends = 8
	// maxRetryWait caps one wait, whatever Retry-After says: a command-line user should see
	// progress or an error within half a minute.
	maxRetryWait = 30 * time.Second
	// firstBackoff is the first wait when the answer has no usable Retry-After; it doubles up
	// to maxRetryWait.
	firstBackoff = time.Second
	// attemptTimeout bounds one send of a request and the reading of its answer (not the
	// event streams, which last as long as the job).
	attemptTimeout = 60 * time.Second
)

// apiClient talks to a running sluice API for the operator commands (jobs, dlq). The token
// comes from SLUICE_TOKEN and is never printed. An answer 429 or 503 is waited out (its
// Retry-After, else 1 s doubling, at most 30 s a wait) and the request sent again, up to 8
// times, when sending it again is safe (see resendable); each wait is announced on stderr.
// It is used by one command at a time.
type apiClient struct {
	base   string
	token  string
	http   *http.Client
	stderr io.Writer // waiting messages; nil discards them
	// backoff is the first wait without Retry-After; a field so tests can shorten it.
	backoff time.Duration
	// noResend returns a 429 or 503 at once instead of waiting it out: shell completion must
	// answer within a keystroke's patience, or not at all.
	noResend bool
}

// defaultAPIURL is where the operator commands find the API without --api-url or
// SLUICE_API_URL: sluice serve's default address.
const defaultAPIURL = "http://127.0.0.1:8080"

// newAPIClient is a client of the API at base, with the token from SLUICE_TOKEN; waiting
// messages go to stderr.
func newAPIClient(base string, stderr io.Writer) *apiClient {
	return &apiClient{base: base, token: envOr("SLUICE_TOKEN", ""), http: &http.Client{}, stderr: stderr, backoff: firstBackoff}
}

// apiError is a problem+json answer.
type apiError struct {
	Status int    `json:"status"`
	Title  string `json:"title"`
	Detail string `json:"detail"`
}

func (e *apiError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("%d %s: %s", e.Status, e.Title, e.Detail)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Title)
}

// do sends a request and decodes a JSON answer into out (when not nil). A POST or DELETE is
// sent again only after 429; use doIdempotent for one that may also be sent again after 503.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	return c.doRequest(ctx, method, path, query, body, out, false)
}

// doIdempotent is do for a write whose repetition does no harm even after the server acted
// on it in part, so a 503 may be waited out too. The caller says why in a comment.
func (c *apiClient) doIdempotent(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	return c.doRequest(ctx, method, path, query, body, out, true)
}

func (c *apiClient) doRequest(ctx context.Context, method, path string, query url.Values, body any, out any, idempotent bool) error {
	u := strings.TrimRight(c.base, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return err
		}
	}
	resp, err := c.send(ctx, method, u, path, b, idempotent, attemptTimeout, nil)
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
		return time.Duration(min(n, int64(maxRetryWait/time.Second))) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, t.Sub(now)), true
	}
	return 0, false
}

// send sends the request (body re-sent from b on every try) until the answer is not a
// resendable 429/503, maxResends sends again have been made, or ctx ends, and returns the
// last answer for the caller to read and close. Each try gets timeout (0: none) from its
// send to the closing of its body. Each wait is announced once on stderr.
func (c *apiClient) send(ctx context.Context, method, u, path string, b []byte, idempotent bool, timeout time.Duration, hdr http.Header) (*http.Response, error) {
	backoff := cmp.Or(c.backoff, firstBackoff)
	for resends := 0; ; resends++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, timeout)
		}
		var rd io.Reader
		if b != nil {
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequestWithContext(actx, method, u, rd)
		if err != nil {
			cancel()
			return nil, err
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if b != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		c.auth(req)
		resp, err := c.http.Do(req)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		resp.Body = cancelBody{resp.Body, cancel}
		if c.noResend || resends >= maxResends || !resendable(method, resp.StatusCode, idempotent) {
			return resp, nil
		}
		wait, ok := retryDelay(resp.Header, time.Now())
		if !ok {
			wait = backoff
			backoff = min(2*backoff, maxRetryWait)
		}
		wait = min(wait, maxRetryWait)
		// The problem's detail says why (rate limit, broker away, starting): show it.
		problem := decodeProblem(resp)
		resp.Body.Close()
		if c.stderr != nil {
			fmt.Fprintf(c.stderr, "sluice: %s %s: %v — sending again in %s (%d of %d)\n", method, path, problem, wait, resends+1, maxResends)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s %s: gave up waiting after %v: %w", method, path, problem, context.Cause(ctx))
		}
	}
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

func (c *apiClient) auth(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

func decodeProblem(resp *http.Response) error {
	e := &apiError{Status: resp.StatusCode, Title: http.StatusText(resp.StatusCode)}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(e)
	if resp.StatusCode == http.StatusUnauthorized && e.Detail == "" {
		e.Detail = "set SLUICE_TOKEN to a token the server accepts"
	}
	return e
}

// errStreamEnded is events' error when the server closed the stream before fn was satisfied
// (a restart, a proxy's idle timeout): the caller decides whether to reconnect.
var errStreamEnded = errors.New("event stream ended")

// events reads a server-sent event stream, calling fn with each event's name and data until
// fn returns true (nil), ctx ends (ctx's error), or the stream ends or breaks
// (errStreamEnded, or the read error wrapping it).
func (c *apiClient) events(ctx context.Context, path string, fn func(event string, data []byte) bool) error {
	resp, err := c.send(ctx, http.MethodGet, strings.TrimRight(c.base, "/")+path, path, nil, false, 0, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeProblem(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
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
		return fmt.Errorf("%w: %w", errStreamEnded, err)
	}
	return errStreamEnded
}
