package graph

import (
	"context"
	"encoding/json"
	"errors"
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

// rowCursor is what a query of either store returns, *sql.Rows (SQLite) and pgx.Rows
// (PostgreSQL), so that both stores read their rows through one path. The caller closes it.
type rowCursor interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanEach calls row with the Scan of each row in turn, until row fails or the rows end.
// row's error is returned as it is; the rows' own error (the query failed while streaming)
// goes through classify, the store's driver classifier.
func scanEach(rows rowCursor, classify func(error) error, row func(scan func(...any) error) error) error {
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return classify(err)
	}
	return nil
}

// scanStrings reads rows of one string column.
func scanStrings(rows rowCursor, classify func(error) error) ([]string, error) {
	var out []string
	err := scanEach(rows, classify, func(scan func(...any) error) error {
		var s string
		err := scan(&s)
		out = append(out, s)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanCounts reads rows of (type, count) into into.
func scanCounts(rows rowCursor, classify func(error) error, into map[string]int) error {
	return scanEach(rows, classify, func(scan func(...any) error) error {
		var t string
		var n int
		if err := scan(&t, &n); err != nil {
			return err
		}
		into[t] = n
		return nil
	})
}

// scanNodes reads rows of the columns scanNode reads.
func scanNodes(rows rowCursor, classify func(error) error) ([]Node, error) {
	var out []Node
	err := scanEach(rows, classify, func(scan func(...any) error) error {
		n, err := scanNode(scan)
		out = append(out, n)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// scanWalk feeds rows of (id, depth), from a walk query of Neighbors, into agg. Its errors
// name the walk's start; classify is applied to the rows' own error.
func scanWalk(ctx context.Context, rows rowCursor, classify func(error) error, agg *walkAgg) error {
	return scanEach(rows, func(err error) error {
		return fmt.Errorf("graph: neighbors of %q: %w", agg.start, classify(err))
	}, func(scan func(...any) error) error {
		var id string
		var depth int
		if err := scan(&id, &depth); err != nil {
			return fmt.Errorf("graph: neighbors of %q: %w", agg.start, err)
		}
		return agg.add(ctx, id, depth)
	})
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

// readOne reads one node or edge (what) from a single-row query: read is scanNode or
// scanEdge, scan the row's Scan. The driver's no-rows error (noRows) becomes ErrNotFound;
// other errors go through classify.
func readOne[T any](what, env, id string, scan func(...any) error, read func(func(...any) error) (T, error), noRows error, classify func(error) error) (T, error) {
	v, err := read(scan)
	if errors.Is(err, noRows) {
		return v, fmt.Errorf("graph: get %s %q in %s: %w", what, id, env, ErrNotFound)
	}
	if err != nil {
		return v, fmt.Errorf("graph: get %s %q: %w", what, id, classify(err))
	}
	return v, nil
}

// found maps the error of a single-row existence query: the driver's no-rows error
// (noRows) is false, other errors go through classify.
func found(err, noRows error, classify func(error) error) (bool, error) {
	switch {
	case errors.Is(err, noRows):
		return false, nil
	case err != nil:
		return false, classify(err)
	}
	return true, nil
}
