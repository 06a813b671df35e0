// Package dataapi is a client of the Astra DB Data API (AstraDB, or a self-hosted Data API
// on HCD/DSE), spoken directly over net/http (reference data-api.md is the wire protocol):
// astra-db-go is not served by the module proxy.
//
// Client sends Data API commands with a bounded connection pool and retries transient
// failures; every error it returns is classified with pipeline/fault, and *APIError and
// *HTTPError carry what the server said. Its methods are named after the commands they send:
// CreateCollection, FindCollections and DeleteCollection (collections.go); InsertMany,
// FindOne, Find, FindPage, FindOneAndReplace, UpdateOne, DeleteMany and CountDocuments
// (documents.go).
//
// The application token is sent in the Token header only. It never appears in errors, logs,
// metrics or the String/LogValue output of Config.
package dataapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// Config configures a Client. Zero fields take the defaults given in their comments; the
// defaults follow the Python seed's ASYNC_DB_CONFIG (pool 20, query timeout 30 s, 3 attempts,
// backoff factor 2, max backoff 10 s).
type Config struct {
	// Endpoint is the Data API endpoint, e.g. https://<db>-<region>.apps.astra.datastax.com,
	// or http://localhost:8181 for a local Data API on HCD/DSE. Required.
	Endpoint string
	// Token is the application token, sent as the Token header. Required. It never appears
	// in errors, logs or the String/LogValue output: a secret.String.
	Token secret.String
	// Keyspace is the keyspace of every command. Default "default_keyspace".
	Keyspace string
	// APIPath is the path prefix before /{keyspace}. Default "/api/json/v1" (Astra, and the
	// test double); a self-hosted Data API without Astra's gateway serves "/v1".
	APIPath string
	// MaxConns bounds the requests in flight and the connections to the endpoint. Default 20.
	MaxConns int
	// RequestTimeout bounds one HTTP attempt, from sending to reading the whole response.
	// Default 30 s.
	RequestTimeout time.Duration
	// IdleConnTimeout closes connections idle this long. Default 90 s.
	IdleConnTimeout time.Duration
	// MaxAttempts is the number of attempts of one command, the first included, when it
	// fails transiently. Default 3; 1 disables retries.
	MaxAttempts int
	// BackoffFactor multiplies the delay after each failed attempt. Default 2; must be >= 1.
	BackoffFactor float64
	// BaseBackoff is the delay after the first failed attempt, before jitter. Default 100 ms.
	BaseBackoff time.Duration
	// MaxBackoff caps the delay between attempts, including a server's Retry-After.
	// Default 10 s.
	MaxBackoff time.Duration
	// UserAgent is sent as the User-Agent header. Default "sluice/dev".
	UserAgent string
	// Logger receives retry warnings and debug records. Optional; nil discards them.
	Logger *slog.Logger
	// HTTPClient replaces the client built from the fields above (tests). Optional. Its
	// Timeout should be 0: RequestTimeout applies per attempt. Close does not touch it.
	HTTPClient *http.Client
}

const (
	defaultKeyspace        = "default_keyspace"
	defaultAPIPath         = "/api/json/v1"
	defaultMaxConns        = 20
	defaultRequestTimeout  = 30 * time.Second
	defaultIdleConnTimeout = 90 * time.Second
	defaultMaxAttempts     = 3
	defaultBackoffFactor   = 2
	defaultBaseBackoff     = 100 * time.Millisecond
	defaultMaxBackoff      = 10 * time.Second
	defaultUserAgent       = "sluice/dev"

	// maxResponseBytes bounds a response body: a find page of 50 documents of the 4M-char
	// maximum, in UTF-8, with room to spare.
	maxResponseBytes = 1 << 30
)

// nameRE is the Data API's keyspace and collection naming rule (reference data-api.md §1.1).
var nameRE = regexp.MustCompile(`^\w{1,48}$`)

// ValidName reports whether name is a valid keyspace or collection name: 1 to 48 letters,
// digits or underscores (reference data-api.md §1.1). Every method refuses other names
// with a permanent fault.Rejected error before sending anything.
func ValidName(name string) bool { return nameRE.MatchString(name) }

func (c *Config) setDefaults() {
	if c.Keyspace == "" {
		c.Keyspace = defaultKeyspace
	}
	if c.APIPath == "" {
		c.APIPath = defaultAPIPath
	}
	if c.MaxConns == 0 {
		c.MaxConns = defaultMaxConns
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = defaultRequestTimeout
	}
	if c.IdleConnTimeout == 0 {
		c.IdleConnTimeout = defaultIdleConnTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = defaultMaxAttempts
	}
	if c.BackoffFactor == 0 {
		c.BackoffFactor = defaultBackoffFactor
	}
	if c.BaseBackoff == 0 {
		c.BaseBackoff = defaultBaseBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = defaultMaxBackoff
	}
	if c.UserAgent == "" {
		c.UserAgent = defaultUserAgent
	}
}

// Validate reports every problem with c at once, judging zero fields by their defaults.
// Its errors never contain the token.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	if c.Endpoint == "" {
		errs = append(errs, errors.New("astra config: Endpoint is required"))
	} else if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, errors.New("astra config: Endpoint must be an http:// or https:// URL with a host"))
	} else if u.User != nil {
		errs = append(errs, errors.New("astra config: Endpoint must not contain user information"))
	}
	if c.Token == "" {
		errs = append(errs, errors.New("astra config: Token is required"))
	} else if strings.ContainsAny(string(c.Token), "\r\n") {
		errs = append(errs, errors.New("astra config: Token must not contain line breaks"))
	}
	if !nameRE.MatchString(c.Keyspace) {
		errs = append(errs, fmt.Errorf("astra config: Keyspace %q must be 1-48 letters, digits or underscores", c.Keyspace))
	}
	if !strings.HasPrefix(c.APIPath, "/") {
		errs = append(errs, fmt.Errorf("astra config: APIPath %q must start with '/'", c.APIPath))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"MaxConns", int64(c.MaxConns)}, {"RequestTimeout", int64(c.RequestTimeout)},
		{"IdleConnTimeout", int64(c.IdleConnTimeout)}, {"MaxAttempts", int64(c.MaxAttempts)},
		{"BaseBackoff", int64(c.BaseBackoff)}, {"MaxBackoff", int64(c.MaxBackoff)},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("astra config: %s must not be negative, got %d", f.name, f.v))
		}
	}
	if c.BackoffFactor < 1 || math.IsNaN(c.BackoffFactor) || math.IsInf(c.BackoffFactor, 0) {
		errs = append(errs, fmt.Errorf("astra config: BackoffFactor must be a finite number >= 1, got %v", c.BackoffFactor))
	}
	return errors.Join(errs...)
}

// String describes c without the token.
func (c Config) String() string {
	return fmt.Sprintf("dataapi.Config{Endpoint:%q Keyspace:%q Token:%s MaxConns:%d RequestTimeout:%s MaxAttempts:%d}",
		c.Endpoint, c.Keyspace, redactedToken(c.Token), c.MaxConns, c.RequestTimeout, c.MaxAttempts)
}

// GoString is String, so that %#v does not print the token either.
func (c Config) GoString() string { return c.String() }

// LogValue logs c without the token.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("endpoint", c.Endpoint),
		slog.String("keyspace", c.Keyspace),
		slog.String("token", redactedToken(c.Token)),
		slog.Int("max_conns", c.MaxConns),
		slog.Duration("request_timeout", c.RequestTimeout),
		slog.Int("max_attempts", c.MaxAttempts),
	)
}

func redactedToken(tok secret.String) string {
	if tok == "" {
		return "unset"
	}
	return secret.Redacted
}

// Client sends Data API commands to one endpoint and keyspace. It is safe for concurrent
// use; at most Config.MaxConns requests are in flight at any time (further callers wait,
// honouring their ctx). Call Close when done to release idle connections.
//
// Every error a method returns is classified with pipeline/fault: credentials refused
// (HTTP 401/403) are permanent fault.Auth; document limit violations permanent fault.Limit;
// other request errors permanent fault.Rejected; transport failures, timeouts, HTTP 429/5xx
// and the retryable codes of reference data-api.md §6 transient, after up to
// Config.MaxAttempts attempts with exponential backoff and jitter. A cancelled ctx gives a
// transient error wrapping ctx's cause.
type Client struct {
	cfg     Config
	http    *http.Client
	ownHTTP bool
	base    string        // endpoint + APIPath + "/" + keyspace
	sem     chan struct{} // one slot per request in flight
	log     *slog.Logger
}

// NewClient returns a Client for cfg, or the errors of cfg.Validate. It does not contact
// the server.
func NewClient(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new astra client: %w", err)
	}
	c := &Client{
		cfg:  cfg,
		http: cfg.HTTPClient,
		base: strings.TrimRight(cfg.Endpoint, "/") + strings.TrimRight(cfg.APIPath, "/") + "/" + cfg.Keyspace,
		sem:  make(chan struct{}, cfg.MaxConns),
		log:  cfg.Logger,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.http == nil {
		c.ownHTTP = true
		c.http = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxConnsPerHost:       cfg.MaxConns,
			MaxIdleConns:          cfg.MaxConns,
			MaxIdleConnsPerHost:   cfg.MaxConns,
			IdleConnTimeout:       cfg.IdleConnTimeout,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}}
	}
	return c, nil
}

// Close closes the idle connections of the client's own transport (not those of a
// Config.HTTPClient). Requests still in flight finish. The Client stays usable; Close is
// idempotent.
func (c *Client) Close() {
	if c.ownHTTP {
		c.http.CloseIdleConnections()
	}
}

// MaxConns returns how many requests the client has in flight at most.
func (c *Client) MaxConns() int { return c.cfg.MaxConns }

// Keyspace returns the keyspace the client sends commands to.
func (c *Client) Keyspace() string { return c.cfg.Keyspace }

// MaxAttempts returns how many attempts the client makes of one command that fails
// transiently (Config.MaxAttempts, the first included).
func (c *Client) MaxAttempts() int { return c.cfg.MaxAttempts }

// Backoff waits the delay the client itself leaves after failed attempt n (1-based) of a
// command: exponential with jitter, at most Config.MaxBackoff. A caller that retries part
// of a request (the documents the database did not write) paces itself with it. It blocks
// until the delay has passed or ctx ends, and then returns ctx's cause.
func (c *Client) Backoff(ctx context.Context, n int) error {
	return sleep(ctx, c.backoff(n, 0))
}

// envelope is a decoded response (reference data-api.md §1.4).
type envelope struct {
	Data   json.RawMessage
	Status json.RawMessage
	Errors []*APIError
}

type wireError struct {
	ErrorCode   string            `json:"errorCode"`
	Message     string            `json:"message"`
	Family      string            `json:"family"`
	Scope       string            `json:"scope"`
	DocumentIDs []json.RawMessage `json:"documentIds"`
}

type wireEnvelope struct {
	Data   json.RawMessage `json:"data"`
	Status json.RawMessage `json:"status"`
	Errors []wireError     `json:"errors"`
}

// decodeEnvelope decodes body, converting its errors to *APIError with the token redacted.
func (c *Client) decodeEnvelope(body []byte, httpStatus int) (*envelope, error) {
	var w wireEnvelope
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	env := &envelope{Data: w.Data, Status: w.Status}
	if isJSONNull(env.Data) {
		env.Data = nil
	}
	if isJSONNull(env.Status) {
		env.Status = nil
	}
	for _, we := range w.Errors {
		e := &APIError{
			Code: we.ErrorCode, Message: c.redact(we.Message), Family: we.Family, Scope: we.Scope,
			HTTPStatus: httpStatus,
		}
		for _, id := range we.DocumentIDs {
			e.DocumentIDs = append(e.DocumentIDs, idString(id))
		}
		env.Errors = append(env.Errors, e)
	}
	return env, nil
}

// idString returns a JSON string id decoded, any other id as its JSON text.
func idString(raw json.RawMessage) string {
	var s string
	if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

func isJSONNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// redact removes the token from s, should a server ever echo it.
func (c *Client) redact(s string) string {
	if c.cfg.Token != "" && strings.Contains(s, string(c.cfg.Token)) {
		return strings.ReplaceAll(s, string(c.cfg.Token), secret.Redacted)
	}
	return s
}

// command sends {name: payload} to the keyspace (coll == "") or to collection coll, retrying
// transient failures. It returns the envelope of a response that succeeded at least in part
// (it may still carry per-document errors), or a classified error when the request failed as
// a whole: transport, HTTP status, or an envelope with errors and neither status nor data.
// rawPayload is a command's arguments already encoded as one valid JSON object; command
// sends it as it is.
type rawPayload []byte

func (c *Client) command(ctx context.Context, coll, name string, payload any) (*envelope, error) {
	return c.commandDocs(ctx, coll, name, -1, payload)
}

// commandDocs is command for a request that carries docs documents (-1: none to count). The
// request, its retries included, is a span (child of ctx's) with its command, collection and
// document count; each retry is an event on it.
func (c *Client) commandDocs(ctx context.Context, coll, name string, docs int, payload any) (env *envelope, err error) {
	ctx, span := telemetry.Tracer(telemetry.ScopeDataAPI).Start(ctx, "data api "+name,
		trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(telemetry.AttrDBSystem.String("astra"), telemetry.AttrDBOperation.String(name))
		if coll != "" {
			span.SetAttributes(telemetry.AttrDBCollection.String(coll))
		}
		if docs >= 0 {
			span.SetAttributes(telemetry.AttrDocuments.Int(docs))
		}
	}
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, string(fault.ClassOf(err)))
		}
		span.End()
	}()
	what := "data api " + name
	if coll != "" {
		what += " on " + coll
		if !nameRE.MatchString(coll) {
			return nil, fault.Permanentf(fault.Rejected, "%s: invalid collection name (1-48 letters, digits or underscores)", what)
		}
	}
	var body []byte
	if raw, ok := payload.(rawPayload); ok {
		body = make([]byte, 0, len(name)+len(raw)+5)
		body = append(append(append(append(body, `{"`...), name...), `":`...), raw...)
		body = append(body, '}')
	} else {
		var err error
		if body, err = json.Marshal(map[string]any{name: payload}); err != nil {
			return nil, fault.Permanent(fault.Validation, fmt.Errorf("%s: encode request: %w", what, err))
		}
	}
	target := c.base
	if coll != "" {
		target += "/" + coll
	}
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, what)
		}
		env, retryAfter, err := c.once(ctx, target, body)
		if err == nil {
			return env, nil
		}
		if ctx.Err() != nil {
			return nil, ctxErr(ctx, what)
		}
		if fault.IsPermanent(err) || attempt >= c.cfg.MaxAttempts {
			return nil, fmt.Errorf("%s (attempt %d of %d): %w", what, attempt, c.cfg.MaxAttempts, err)
		}
		delay := c.backoff(attempt, retryAfter)
		if span.IsRecording() {
			span.AddEvent(telemetry.EventRetry, trace.WithAttributes(attribute.Int("sluice.attempt", attempt),
				telemetry.AttrDelay.String(delay.String()), telemetry.AttrErrorClass.String(string(fault.ClassOf(err)))))
		}
		c.log.WarnContext(ctx, "astra: request failed, retrying",
			"command", name, "collection", coll, "attempt", attempt, "delay", delay, "err", err.Error())
		if err := sleep(ctx, delay); err != nil {
			return nil, ctxErr(ctx, what)
		}
	}
}

// InFlight returns the requests in flight now (at most MaxConns), for metrics. Safe for
// concurrent use; it does no I/O.
func (c *Client) InFlight() int { return len(c.sem) }

// once makes one HTTP attempt. It returns the Retry-After delay a 429/503 asked for.
func (c *Client) once(ctx context.Context, target string, body []byte) (*envelope, time.Duration, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, context.Cause(ctx)
	}
	defer func() { <-c.sem }()

	actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fault.Permanent(fault.Validation, fmt.Errorf("build request: %w", err))
	}
	req.Header.Set("Token", string(c.cfg.Token))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.cfg.UserAgent)

	resp, err := c.http.Do(req)
	if err != nil {
		return nil, 0, fault.Retry(fault.Transient, fmt.Errorf("send: %w", err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, 0, fault.Retry(fault.Transient, fmt.Errorf("read response (HTTP %d): %w", resp.StatusCode, err))
	}
	retryAfter := parseRetryAfter(resp.Header.Get("Retry-After"))

	env, decErr := c.decodeEnvelope(data, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		if decErr == nil && len(env.Errors) > 0 {
			he := &HTTPError{StatusCode: resp.StatusCode, RetryAfter: retryAfter}
			if he.Retryable() {
				return nil, retryAfter, fault.Retry(fault.Transient, env.Errors[0])
			}
			return nil, retryAfter, classifyAll(env.Errors)
		}
		return nil, retryAfter, (&HTTPError{StatusCode: resp.StatusCode, RetryAfter: retryAfter}).classify()
	}
	if decErr != nil {
		// A 200 whose body is not an envelope: most likely cut short by a connection
		// failure (or a proxy's page). Worth another attempt.
		return nil, 0, fault.Retry(fault.Transient, fmt.Errorf("decode response: %w", decErr))
	}
	if len(env.Errors) > 0 && env.Status == nil && env.Data == nil {
		return nil, 0, classifyAll(env.Errors)
	}
	return env, 0, nil
}

// backoff returns the delay after failed attempt n (1-based): exponential with "equal
// jitter" (half fixed, half random), at least a server's Retry-After, at most MaxBackoff.
func (c *Client) backoff(n int, retryAfter time.Duration) time.Duration {
	d := float64(c.cfg.BaseBackoff) * math.Pow(c.cfg.BackoffFactor, float64(n-1))
	if d > float64(c.cfg.MaxBackoff) {
		d = float64(c.cfg.MaxBackoff)
	}
	half := time.Duration(d / 2)
	delay := half + time.Duration(rand.Int64N(int64(half)+1))
	if retryAfter > delay {
		delay = retryAfter
	}
	return min(delay, c.cfg.MaxBackoff)
}

// parseRetryAfter reads a Retry-After header in seconds or as an HTTP date; 0 when absent
// or unreadable.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
