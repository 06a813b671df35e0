package secret

import (
	"fmt"
	"log/slog"
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
