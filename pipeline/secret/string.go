package secret

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
)

// Redacted is what a String prints, logs and marshals to instead of its value.
const Redacted = "[REDACTED]"

// String is a secret held in memory — a password, a token, a key — that never shows itself:
// fmt (every verb, %v of a struct holding one in an exported field included), log/slog
// (LogValue) and encoding/json (MarshalJSON) all give Redacted, so logging a configuration that
// holds one is safe by its type, not by remembering to leave the field out. An empty String
// prints as "" so that "is it set?" stays visible. The value is had only by converting:
// string(s), at the one place it is sent (a request header, a connect option).
//
// What the type cannot cover: a String in an unexported struct field printed by fmt (fmt
// cannot call its methods there), and a string(s) copied out. Decoding (JSON, flags) fills it
// as a plain string.
type String string

// String returns Redacted, or "" when s is empty.
func (s String) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// GoString is String, so that %#v does not print the value either.
func (s String) GoString() string { return s.String() }

// Format prints String for every verb (%s, %v, %q, %x, %d...), so that no verb reaches the
// bytes.
func (s String) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", s.String())
		return
	}
	_, _ = f.Write([]byte(s.String()))
}

// LogValue logs String.
func (s String) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON marshals String: "[REDACTED]" or "".
func (s String) MarshalJSON() ([]byte, error) { return fmt.Appendf(nil, "%q", s.String()), nil }

// MarshalText marshals String, for encoders (and slog's text handler) that use text.
func (s String) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// DSN is a data source name that may hold a password — postgres://user:pass@host/db, its
// ?password= parameter, or the key=value form (password=pass) — or none (an SQLite path). Like
// String it never shows the password: fmt, log/slog and encoding/json give Masked. The whole
// value is had by converting: string(d).
type DSN string

// passwordParam finds a password in a DSN's query or key=value form.
var passwordParam = regexp.MustCompile(`(?i)(\bpassword=)('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// Masked returns d with its password, if any, replaced by Redacted; the rest (scheme, user,
// host, database) stays, so a log still says which store it is.
func (d DSN) Masked() string {
	s := string(d)
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.User != nil {
		if _, has := u.User.Password(); has {
			s = strings.Replace(u.Redacted(), ":xxxxx@", ":"+Redacted+"@", 1)
		}
	}
	return passwordParam.ReplaceAllString(s, "${1}"+Redacted)
}

// String returns Masked.
func (d DSN) String() string { return d.Masked() }

// GoString returns Masked.
func (d DSN) GoString() string { return d.Masked() }

// Format prints Masked for every verb.
func (d DSN) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprintf(f, "%q", d.Masked())
		return
	}
	_, _ = f.Write([]byte(d.Masked()))
}

// LogValue logs Masked.
func (d DSN) LogValue() slog.Value { return slog.StringValue(d.Masked()) }

// MarshalJSON marshals Masked.
func (d DSN) MarshalJSON() ([]byte, error) { return fmt.Appendf(nil, "%q", d.Masked()), nil }

// MarshalText marshals Masked.
func (d DSN) MarshalText() ([]byte, error) { return []byte(d.Masked()), nil }
