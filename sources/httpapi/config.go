package httpapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// Defaults for Config fields left at zero.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultMaxUploadBytes  = 1 << 30 // 1 GiB
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultBodyIdleTimeout is how long a read of any request body may wait for the client.
	// A minute lets a slow but alive client upload for as long as it keeps sending.
	DefaultBodyIdleTimeout = time.Minute
	// DefaultReadHeaderTimeout bounds reading a request's headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultIdleTimeout bounds how long a keep-alive connection may wait for its next request.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxConns bounds open client connections: well under the usual 4096+ file
	// descriptors a process gets (Go raises the soft limit to the hard one), leaving room for
	// the broker's files, the stores and the upload spool.
	DefaultMaxConns = 1024
	// DefaultMaxSpoolBytes bounds the upload bytes being received at once (each upload is
	// spooled to disk while it is read): four uploads at the default 1 GiB limit.
	DefaultMaxSpoolBytes = 4 << 30
	// DefaultMaxFeedsPerToken bounds open change feeds (/v1/events, /v1/ws,
	// /v1/jobs/{id}/events) per token: each holds a JetStream consumer while open.
	DefaultMaxFeedsPerToken = 16
	// DefaultGraphTimeout bounds one graph read (node, neighbours, stats).
	DefaultGraphTimeout = 10 * time.Second

	// minTokenLen is the shortest accepted token.
	minTokenLen = 16
	// maxTokensFileBytes bounds what LoadTokens reads.
	maxTokensFileBytes = 1 << 20
)

// Scope is a permission a token grants. ScopeAdmin implies ScopeWrite, which implies ScopeRead.
type Scope string

// The scopes.
const (
	// ScopeRead allows reading jobs, chunks and metrics.
	ScopeRead Scope = "read"
	// ScopeWrite allows submitting jobs and commands, and everything ScopeRead allows.
	ScopeWrite Scope = "write"
	// ScopeAdmin allows operator actions (dead-letter replay, …) and everything ScopeWrite allows.
	ScopeAdmin Scope = "admin"
)

// level orders scopes; 0 is unknown.
func (s Scope) level() int {
	switch s {
	case ScopeRead:
		return 1
	case ScopeWrite:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// Token is one API client's bearer token, as listed in the tokens file.
type Token struct {
	// Name identifies the client in logs and in Principal; it is not secret.
	Name string `json:"name"`
	// Token is the secret bearer token, at least 16 characters. It never appears in logs,
	// errors or metrics: a secret.String (marshalling a Token writes it redacted; decoding
	// reads it).
	Token secret.String `json:"token"`
	// Scopes lists what the token may do; at least one.
	Scopes []Scope `json:"scopes"`
}

// String hides the secret so a Token can be printed or logged safely.
func (t Token) String() string {
	return fmt.Sprintf("Token{Name:%q Scopes:%v}", t.Name, t.Scopes)
}

// LogValue hides the secret when a Token is logged with log/slog.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", t.Name), slog.Any("scopes", t.Scopes))
}

// LoadTokens reads a JSON list of tokens ([{"name","token","scopes":[…]}]) from path and
// validates it with ValidateTokens. It does not block beyond reading the file. Errors name
// tokens by position and name, never by value.
func LoadTokens(path string) ([]Token, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tokens file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokensFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read tokens file %s: %w", path, err)
	}
	if len(data) > maxTokensFileBytes {
		return nil, fmt.Errorf("read tokens file %s: larger than %d bytes", path, maxTokensFileBytes)
	}
	var tokens []Token
	if err := json.Unmarshal(data, &tokens); err != nil {
		// A syntax error quotes the offending character, which may be part of a token: report
		// only where it is.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("parse tokens file %s: invalid JSON at byte offset %d", path, se.Offset)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("parse tokens file %s: want a JSON list of {\"name\",\"token\",\"scopes\"}: wrong type at byte offset %d", path, te.Offset)
		}
		return nil, fmt.Errorf("parse tokens file %s: want a JSON list of {\"name\",\"token\",\"scopes\"}", path)
	}
	if err := ValidateTokens(tokens); err != nil {
		return nil, fmt.Errorf("tokens file %s: %w", path, err)
	}
	return tokens, nil
}

// ValidateTokens reports every problem in tokens at once: empty or duplicate names, tokens
// shorter than 16 characters or with whitespace, duplicate tokens, missing or unknown scopes.
// Errors name tokens by position and name, never by value.
func ValidateTokens(tokens []Token) error {
	var errs []error
	names := make(map[string]int, len(tokens))
	secrets := make(map[secret.String]int, len(tokens))
	for i, t := range tokens {
		if err := validateToken(t); err != nil {
			errs = append(errs, fmt.Errorf("token %d (name %q): %w", i, t.Name, err))
		}
		if t.Name != "" {
			if j, dup := names[t.Name]; dup {
				errs = append(errs, fmt.Errorf("tokens %d and %d have the same name %q", j, i, t.Name))
			} else {
				names[t.Name] = i
			}
		}
		if t.Token != "" {
			if j, dup := secrets[t.Token]; dup {
				errs = append(errs, fmt.Errorf("tokens %d (name %q) and %d (name %q) have the same token value", j, tokens[j].Name, i, t.Name))
			} else {
				secrets[t.Token] = i
			}
		}
	}
	return errors.Join(errs...)
}

// examplePrefix starts every token of deployments/tokens.example.json; a token that starts
// with it is refused.
const examplePrefix = "change-me"

// validateToken checks one token on its own.
func validateToken(t Token) error {
	var errs []error
	if strings.TrimSpace(t.Name) == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if len(t.Token) < minTokenLen {
		errs = append(errs, fmt.Errorf("token is shorter than %d characters", minTokenLen))
	}
	if strings.ContainsFunc(string(t.Token), func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, errors.New("token contains whitespace or control characters"))
	}
	if strings.HasPrefix(strings.ToLower(string(t.Token)), examplePrefix) {
		// deployments/tokens.example.json is public: mounted as the live file (as the compose
		// file once did), its operator token opened the API to anyone who read the repository.
		errs = append(errs, fmt.Errorf("token is an example placeholder (%s…): put a secret of your own, e.g. from openssl rand -hex 24", examplePrefix))
	}
	if len(t.Scopes) == 0 {
		errs = append(errs, errors.New("no scopes"))
	}
	for _, s := range t.Scopes {
		if s.level() == 0 {
			errs = append(errs, fmt.Errorf("unknown scope %q (want read, write or admin)", s))
		}
	}
	return errors.Join(errs...)
}

// Config configures a Server. The zero value of each optional field means its default.
type Config struct {
	// Addr is the TCP address to listen on. Optional; default "127.0.0.1:8080". Port 0 picks a
	// free port (see Server.Addr). Ignored when Listener is set.
	Addr string
	// Listener, when set, is served instead of binding Addr: a listener bound earlier (see
	// Listen) and handed over by Starting.Handover, so the port is held from the start of the
	// process with no gap. The Server owns it from New on (Run and Close close it; so does New
	// when it fails). Without Tokens it must be bound to loopback. Optional.
	Listener net.Listener
	// Tokens are the accepted bearer tokens. Optional: empty means no authentication, and then
	// Addr must be a loopback address (127.0.0.0/8, ::1, localhost) or New fails.
	Tokens []Token
	// Jobs submits and reports load jobs. Required.
	Jobs JobService
	// Chunks reads stored chunks. Required.
	Chunks ChunkReader
	// DeadLetters lists, shows, replays, deletes and purges dead letters (/v1/dlq…).
	// Optional; nil answers those routes with 501.
	DeadLetters DeadLetterService
	// Requirements serves requirement and feature-request commands and reads (/v1/requirements…, /v1/features…, /v1/audit…, /api/…). Optional; nil answers those routes with 501.
	Requirements RequirementsService
	// Events is the change feed (GET /v1/events, GET /v1/ws). Optional; nil answers 501.
	Events EventSource
	// Graph reads the graph store (/v1/graph/nodes…, /v1/graph/stats). Optional; nil answers
	// those routes with 501. POST /v1/graph loads graph files through Jobs.
	Graph GraphService
	// Broker reads the broker's cached statistics for GET /v1/consumers (streams, consumer
	// lag). Optional; nil answers that route with 501.
	Broker BrokerReader
	// TrustedOrigins are browser origins ("scheme://host[:port]") allowed to send
	// state-changing requests (any method but GET, HEAD, OPTIONS) across origins, besides the
	// API's own origin. Cross-origin browser requests from any other origin are refused with
	// 403 (see http.CrossOriginProtection); requests from non-browser clients are not
	// affected. Optional; none by default.
	TrustedOrigins []string
	// Ready lists the readiness checks GET /readyz runs. Optional; none means always ready.
	Ready []Check
	// Registry receives the server's HTTP metrics and is what GET /metrics serves. Optional;
	// nil means a new registry holding the server's metrics plus the Go and process collectors.
	Registry *prometheus.Registry
	// MaxUploadBytes bounds a submitted file; a larger body is answered with 413. Optional;
	// 0 means 1 GiB; negative is invalid.
	MaxUploadBytes int64
	// ShutdownTimeout bounds the graceful shutdown in Run. Optional; 0 means 10 s; negative is
	// invalid.
	ShutdownTimeout time.Duration
	// BodyIdleTimeout bounds each read of a request body, on every route and before
	// authentication: a client that sends nothing for this long has its connection closed
	// (an upload is answered 408 first). Each read that gets data renews it, so a slow but
	// alive upload runs as long as it needs. Optional; 0 means 1 min; negative is invalid.
	BodyIdleTimeout time.Duration
	// ReadHeaderTimeout bounds reading a request's headers. Optional; 0 means 10 s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next request.
	// Optional; 0 means 120 s.
	IdleTimeout time.Duration
	// MaxConns bounds open client connections; one more is answered 503 (Retry-After) and
	// closed at once. Optional; 0 means 1024; negative is invalid.
	MaxConns int
	// MaxSpoolBytes bounds the upload bytes received at once over all uploads (they are
	// spooled to disk): an upload that would pass it is answered 503 with Retry-After.
	// Optional; 0 means 4 GiB; negative is invalid. It must be at least MaxUploadBytes.
	MaxSpoolBytes int64
	// RateLimits bounds expensive requests per token (429 with Retry-After past them).
	// Optional; zero fields mean their defaults (see RateLimits).
	RateLimits RateLimits
	// MaxFeedsPerToken bounds the change feeds one token holds open at once (429 past it).
	// Optional; 0 means 16; negative is invalid.
	MaxFeedsPerToken int
	// GraphTimeout bounds each graph read; past it the answer is 503 with Retry-After.
	// Optional; 0 means 10 s; negative is invalid.
	GraphTimeout time.Duration
	// BrokerConnected reports whether the broker connection is up (for example
	// nc.Status() == nats.CONNECTED). When set, routes that publish (every write or admin
	// route other than GET) answer 503 with Retry-After at once while it is false, instead of
	// waiting for a publish to time out. It must be fast and safe for concurrent use.
	// Optional; nil skips the check (errors are still classified, see ErrUnavailable).
	BrokerConnected func() bool
	// Logger receives errors (Error/Warn) and an access log (Debug). Optional; nil discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxUploadBytes == 0 {
		c.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.BodyIdleTimeout == 0 {
		c.BodyIdleTimeout = DefaultBodyIdleTimeout
	}
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxSpoolBytes == 0 {
		c.MaxSpoolBytes = max(DefaultMaxSpoolBytes, c.MaxUploadBytes)
	}
	c.RateLimits.setDefaults()
	if c.MaxFeedsPerToken == 0 {
		c.MaxFeedsPerToken = DefaultMaxFeedsPerToken
	}
	if c.GraphTimeout == 0 {
		c.GraphTimeout = DefaultGraphTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem in c at once. Zero optional fields are valid (they mean the
// default). It does not touch the network.
func (c Config) Validate() error {
	var errs []error
	addr := c.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	host, _, err := net.SplitHostPort(addr)
	switch {
	case c.Listener != nil:
		// Addr is not used; New checks the listener's address.
	case err != nil:
		errs = append(errs, fmt.Errorf("Addr %q: %w", addr, err))
	case len(c.Tokens) == 0 && !isLoopbackHost(host):
		errs = append(errs, fmt.Errorf("Addr %q is not a loopback address: without Tokens the API serves loopback only (127.0.0.0/8, ::1, localhost); configure tokens to listen elsewhere", addr))
	}
	if err := ValidateTokens(c.Tokens); err != nil {
		errs = append(errs, fmt.Errorf("Tokens: %w", err))
	}
	if c.Jobs == nil {
		errs = append(errs, errors.New("Jobs is required"))
	}
	if c.Chunks == nil {
		errs = append(errs, errors.New("Chunks is required"))
	}
	names := make(map[string]bool, len(c.Ready))
	for i, chk := range c.Ready {
		switch {
		case chk.Name == "":
			errs = append(errs, fmt.Errorf("Ready[%d]: Name is empty", i))
		case names[chk.Name]:
			errs = append(errs, fmt.Errorf("Ready[%d]: duplicate name %q", i, chk.Name))
		}
		names[chk.Name] = true
		if chk.Check == nil {
			errs = append(errs, fmt.Errorf("Ready[%d] (%q): Check is nil", i, chk.Name))
		}
	}
	if c.MaxUploadBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxUploadBytes %d is negative", c.MaxUploadBytes))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("ShutdownTimeout %s is negative", c.ShutdownTimeout))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"BodyIdleTimeout", c.BodyIdleTimeout}, {"ReadHeaderTimeout", c.ReadHeaderTimeout}, {"IdleTimeout", c.IdleTimeout}, {"GraphTimeout", c.GraphTimeout}} {
		if d.v < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.v))
		}
	}
	if c.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("MaxConns %d is negative", c.MaxConns))
	}
	if c.MaxFeedsPerToken < 0 {
		errs = append(errs, fmt.Errorf("MaxFeedsPerToken %d is negative", c.MaxFeedsPerToken))
	}
	if c.MaxSpoolBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxSpoolBytes %d is negative", c.MaxSpoolBytes))
	} else if up := cmp.Or(c.MaxUploadBytes, DefaultMaxUploadBytes); c.MaxSpoolBytes > 0 && c.MaxSpoolBytes < up {
		errs = append(errs, fmt.Errorf("MaxSpoolBytes %d is below MaxUploadBytes %d: the largest upload could never be accepted", c.MaxSpoolBytes, up))
	}
	for i, o := range c.TrustedOrigins {
		if err := http.NewCrossOriginProtection().AddTrustedOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("TrustedOrigins[%d]: %w", i, err))
		}
	}
	if err := c.RateLimits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("RateLimits: %w", err))
	}
	return errors.Join(errs...)
}

// isLoopbackHost reports whether host (from net.SplitHostPort) names only loopback
// interfaces. An empty host means every interface.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
