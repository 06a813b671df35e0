package main

// Logging: the logger main builds from SLUICE_LOG_LEVEL and SLUICE_LOG_FORMAT (docs/operations.md,
// "Logs"). Every command logs through it; packages get it as a constructor argument.

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/pipeline/telemetry"
)

// Log formats (SLUICE_LOG_FORMAT).
const (
	logJSON = "json"
	logText = "text"
)

// parseLogFormat reads SLUICE_LOG_FORMAT's value: json or text (any case); empty picks JSON
// when stderr is not a terminal (a file, a pipe, a container's log collector) and text when a
// person is reading it. Anything else is refused at start-up, like a bad SLUICE_LOG_LEVEL: a
// format silently ignored would send the log collector lines it cannot parse.
func parseLogFormat(v string, stderr io.Writer) (string, error) {
	switch f := strings.ToLower(strings.TrimSpace(v)); f {
	case logJSON, logText:
		return f, nil
	case "":
		if isTerminal(stderr) {
			return logText, nil
		}
		return logJSON, nil
	default:
		return "", usageError{fmt.Sprintf("SLUICE_LOG_FORMAT %q: want json or text", v)}
	}
}

// newLogger returns the logger writing to w at level in format (logJSON or logText; anything
// else is text). Attributes whose key names a secret (redactKey) are written as
// secret.Redacted whatever their value — the belt to secret.String's braces, for a secret
// someone forgot to type. It is safe for concurrent use, as slog's handlers are.
func newLogger(w io.Writer, level slog.Leveler, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: redactAttr}
	var h slog.Handler
	if format == logJSON {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	// telemetry.LogHandler puts trace_id and span_id on the lines logged with a traced ctx.
	return slog.New(telemetry.LogHandler(h))
}

// redactAttr is the handlers' ReplaceAttr: an attribute whose key names a secret has its value
// replaced by secret.Redacted, unless it is a bool or a number (tokens_required=true says
// nothing secret). slog resolves LogValuers (secret.String) before calling it.
func redactAttr(_ []string, a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString, slog.KindAny:
		if redactKey(a.Key) {
			a.Value = slog.StringValue(secret.Redacted)
		}
	}
	return a
}

// redactKey reports whether an attribute key names a secret: it contains token, password,
// secret, authorization, api_key or credential, in any case ("token", "NATS_PASSWORD",
// "astra_token", "Authorization").
func redactKey(key string) bool {
	k := strings.ToLower(key)
	for _, s := range [...]string{"token", "password", "passwd", "secret", "authorization", "api_key", "apikey", "credential"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}
