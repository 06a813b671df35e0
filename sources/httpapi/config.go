package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for Config fields left at zero.
const (
	DefaultAddr            = "127.0.0.1:8080"
	DefaultMaxUploadBytes  = 1 << 30 // 1 GiB
	DefaultShutdownTimeout = 10 * time.Second

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
	// errors or metrics.
	Token string `json:"token"`
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
	secrets := make(map[string]int, len(tokens))
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

// validateToken checks one token on its own.
func validateToken(t Token) error {
	var errs []error
	if strings.TrimSpace(t.Name) == "" {
		errs = append(errs, errors.New("name is empty"))
	}
	if len(t.Token) < minTokenLen {
		errs = append(errs, fmt.Errorf("token is shorter than %d characters", minTokenLen))
	}
	if strings.ContainsFunc(t.Token, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		errs = append(errs, errors.New("token contains whitespace or control characters"))
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
	// free port (see Server.Addr).
	Addr string
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
	if err != nil {
		errs = append(errs, fmt.Errorf("Addr %q: %w", addr, err))
	} else if len(c.Tokens) == 0 && !isLoopbackHost(host) {
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
