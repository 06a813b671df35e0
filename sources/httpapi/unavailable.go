package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// ErrUnavailable is wrapped by services for a failure that is nobody's fault and passes: the
// broker is away, a store is restarting, a query ran out of time. The API answers 503 with
// Retry-After. Errors from nats.go that mean the broker is unreachable are recognised without
// it (see unavailable).
var ErrUnavailable = errors.New("temporarily unavailable")

// brokerAway are the nats.go sentinels that mean the broker did not answer or cannot be
// reached: the request may well succeed in a few seconds.
var brokerAway = []error{
	nats.ErrConnectionClosed,
	nats.ErrConnectionDraining,
	nats.ErrConnectionReconnecting,
	nats.ErrDisconnected,
	nats.ErrNoServers,
	nats.ErrNoResponders,
	nats.ErrTimeout,
	jetstream.ErrNoStreamResponse,
	jetstream.ErrAsyncPublishTimeout,
	jetstream.ErrTooManyStalledMsgs,
	jetstream.ErrJetStreamPublisherClosed,
}

// unavailable reports whether err, from serving r, is transient unavailability (503) rather
// than a failure of the server (500): ErrUnavailable, a broker sentinel, or a deadline that
// passed while the client was still waiting. It classifies by type and sentinel only.
func unavailable(r *http.Request, err error) bool {
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	for _, s := range brokerAway {
		if errors.Is(err, s) {
			return true
		}
	}
	// A deadline of the server's own (a publish or query timeout, GraphTimeout), not the
	// client leaving (which cancels the request's context).
	return errors.Is(err, context.DeadlineExceeded) && !errors.Is(r.Context().Err(), context.Canceled)
}

// unavailableProblem answers 503 with Retry-After for an error unavailable accepted.
func (s *Server) unavailableProblem(w http.ResponseWriter, r *http.Request, msg string, err error) {
	attrs := []any{"err", err, "method", r.Method, "path", r.URL.Path}
	if info := reqInfoFrom(r.Context()); info != nil {
		attrs = append(attrs, "request_id", info.id)
	}
	s.log.WarnContext(r.Context(), msg+": unavailable", attrs...)
	w.Header().Set("Retry-After", fmt.Sprint(retryUnavailable))
	s.problem(w, r, http.StatusServiceUnavailable, "A service the request needs (the message broker or a store) is unavailable or did not answer in time; retry later.")
}

// maxIDLen bounds every id taken from a path or a query parameter, in bytes: the longest id
// any store accepts (graph ids, chunk ids as document _id).
const maxIDLen = graph.MaxIDBytes

// idRule checks one id from a request; it returns what a valid one looks like, or "".
type idRule func(string) string

// anyID is the contract's rule for ids without a narrower one (chunk, node, dead-letter,
// feature-request ids): a non-empty UTF-8 string of at most maxIDLen bytes without control
// characters (schemas/chunk.v1.json $defs/id: no U+0000-U+001F, no U+007F; C1 controls are
// refused too, as no producer has a reason to send them in an id).
func anyID(v string) string {
	if v == "" || len(v) > maxIDLen || !utf8.ValidString(v) || containsControl(v) {
		return fmt.Sprintf("1 to %d bytes of UTF-8 without control characters", maxIDLen)
	}
	return ""
}

// keyID is the rule for job ids and other subject tokens (schemas.ValidKey).
func keyID(v string) string {
	if !schemas.ValidKey(v) {
		return fmt.Sprintf("1 to %d characters from A-Z a-z 0-9 _ -", schemas.MaxKeyLen)
	}
	return ""
}

// pathIDRules gives a narrower rule than anyID for some path wildcards, by route prefix.
var pathIDRules = map[string]idRule{
	"/v1/jobs/{id}": keyID,
}

// queryIDRules are the query parameters that carry ids, and their rules.
var queryIDRules = map[string]idRule{
	"job":        keyID,
	"request_id": anyID,
}

// checkIDs validates every path wildcard of pattern and every id query parameter of r
// against the contract. It returns a client-facing reason, or "" when all are valid.
func checkIDs(pattern string, r *http.Request) string {
	_, path, _ := strings.Cut(pattern, " ")
	rest := path
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			break
		}
		name := strings.TrimSuffix(rest[i+1:i+j], "...")
		rest = rest[i+j+1:]
		rule := idRule(anyID)
		for prefix, pr := range pathIDRules {
			if strings.HasPrefix(path, prefix) && strings.Contains(prefix, "{"+name+"}") {
				rule = pr
			}
		}
		if want := rule(r.PathValue(name)); want != "" {
			return fmt.Sprintf("path parameter %s must be %s", name, want)
		}
	}
	q := r.URL.Query()
	for name, rule := range queryIDRules {
		if vs, ok := q[name]; ok {
			for _, v := range vs {
				if v == "" {
					continue // an empty filter means none
				}
				if want := rule(v); want != "" {
					return fmt.Sprintf("query parameter %s must be %s", name, want)
				}
			}
		}
	}
	return ""
}
