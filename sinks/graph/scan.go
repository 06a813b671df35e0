package graph

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// mergeEncoded merges upd shallowly into the stored JSON properties old and encodes the result.
func mergeEncoded(old string, upd map[string]any) (string, error) {
	cur, err := decodeProps(old)
	if err != nil {
		return "", err
	}
	return encodeProps(mergeProps(cur, upd))
}

func encodeIDs(ids []string) (string, error) {
	b, err := json.Marshal(ids)
	if err != nil {
		return "", fmt.Errorf("graph: encode ids: %w", err)
	}
	return string(b), nil
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

func scanCounts(rows *sql.Rows, into map[string]int) error {
	defer rows.Close()
	for rows.Next() {
		var t string
		var n int
		if err := rows.Scan(&t, &n); err != nil {
			return err
		}
		into[t] = n
	}
	return rows.Err()
}

// MissingEndpointsError is the error of a batch with an edge whose endpoint is neither in
// the batch nor stored. It is permanent for the batch as it stands, but the missing nodes may
// still arrive (another job's nodes, a message still on its way), so a consumer may retry it
// for a while before it dead-letters it: find it with errors.As. It wraps ErrInvalid.
type MissingEndpointsError struct {
	// Missing holds the missing node ids, sorted.
	Missing []string
	msg     string
}

func (e *MissingEndpointsError) Error() string { return fmt.Sprintf("%v: %s", ErrInvalid, e.msg) }

// Unwrap returns ErrInvalid.
func (e *MissingEndpointsError) Unwrap() error { return ErrInvalid }

// missingEndpoints returns a permanent validation error (a *MissingEndpointsError) naming the
// first edge whose endpoint is in missing (sorted), or nil when missing is empty.
func missingEndpoints(edges []Edge, missing []string) error {
	if len(missing) == 0 {
		return nil
	}
	return fault.Permanent(fault.Validation, &MissingEndpointsError{Missing: missing, msg: describeMissing(edges, missing)})
}

func describeMissing(edges []Edge, missing []string) string {
	gone := make(map[string]bool, len(missing))
	for _, id := range missing {
		gone[id] = true
	}
	for _, e := range edges {
		for _, end := range [2]string{e.Source, e.Target} {
			if gone[end] {
				more := ""
				if len(missing) > 1 {
					more = fmt.Sprintf(" (%d missing endpoints in all: %s)", len(missing), strings.Join(firstN(missing, 5), ", "))
				}
				return fmt.Sprintf("edge %s (%s -%s-> %s): endpoint %q is neither in the batch nor stored%s",
					e.ID, e.Source, e.Type, e.Target, end, more)
			}
		}
	}
	return "missing edge endpoints: " + strings.Join(firstN(missing, 5), ", ")
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

func micro(us int64) time.Time { return time.UnixMicro(us).UTC() }

// scanNode reads id, type, properties, created_at, updated_at, version.
func scanNode(scan func(...any) error) (Node, error) {
	var n Node
	var props string
	var c, u int64
	if err := scan(&n.ID, &n.Type, &props, &c, &u, &n.Version); err != nil {
		return Node{}, err
	}
	p, err := decodeProps(props)
	if err != nil {
		return Node{}, err
	}
	n.Properties, n.CreatedAt, n.UpdatedAt = p, micro(c), micro(u)
	return n, nil
}

// scanEdge reads id, source, type, target, properties, created_at, updated_at, version.
func scanEdge(scan func(...any) error) (Edge, error) {
	var e Edge
	var props string
	var c, u int64
	if err := scan(&e.ID, &e.Source, &e.Type, &e.Target, &props, &c, &u, &e.Version); err != nil {
		return Edge{}, err
	}
	p, err := decodeProps(props)
	if err != nil {
		return Edge{}, err
	}
	e.Properties, e.CreatedAt, e.UpdatedAt = p, micro(c), micro(u)
	return e, nil
}
