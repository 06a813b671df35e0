package graph

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
)

// DefaultMaxVisits is Options.MaxVisits's default: the most (node, depth) steps one Neighbors
// call may take. A step costs an index lookup of the node's edges, so 200,000 bound a
// traversal to about a second, while any query that finds its 1,000 neighbours within a
// few hops of an ordinary node stays far below it.
const DefaultMaxVisits = 200_000

// ErrTraversalTooLarge is returned (wrapped) by Neighbors when the walk passes
// Options.MaxVisits steps: the query is too expensive as asked (ask for less depth or fewer
// edge types). It is permanent for that query.
var ErrTraversalTooLarge = errors.New("graph: traversal visits too many nodes")

func (o Options) maxVisits() int {
	if o.MaxVisits == 0 {
		return DefaultMaxVisits
	}
	return o.MaxVisits
}

// walkAgg collects a walk's (id, depth) rows: each id's smallest depth is its BFS distance.
type walkAgg struct {
	start  string
	budget int
	rows   int
	best   map[string]int
}

func newWalkAgg(start string, budget int) *walkAgg {
	return &walkAgg{start: start, budget: budget, best: map[string]int{}}
}

// add records one row; it fails with ErrTraversalTooLarge past the budget and with ctx's
// error once ctx ended (checked every 1024 rows).
func (a *walkAgg) add(ctx context.Context, id string, depth int) error {
	a.rows++
	if a.rows > a.budget {
		return fmt.Errorf("graph: neighbors of %q: more than %d steps: %w", a.start, a.budget, ErrTraversalTooLarge)
	}
	if a.rows%1024 == 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("graph: neighbors of %q: %w", a.start, err)
		}
	}
	if id == a.start {
		return nil
	}
	if d, ok := a.best[id]; !ok || depth < d {
		a.best[id] = depth
	}
	return nil
}

// nearest returns at most MaxNeighbors ids, the nearest first, ties by id in byte order (as
// SQLite's BINARY and PostgreSQL's "C" collations order them).
func (a *walkAgg) nearest() []string {
	ids := make([]string, 0, len(a.best))
	for id := range a.best {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(x, y string) int {
		return cmp.Or(cmp.Compare(a.best[x], a.best[y]), cmp.Compare(x, y))
	})
	return ids[:min(len(ids), MaxNeighbors)]
}

// inOrder returns nodes reordered as ids lists them; ids without a node (deleted meanwhile)
// are skipped.
func inOrder(ids []string, nodes []Node) []Node {
	byID := make(map[string]Node, len(nodes))
	for _, n := range nodes {
		byID[n.ID] = n
	}
	out := make([]Node, 0, len(ids))
	for _, id := range ids {
		if n, ok := byID[id]; ok {
			out = append(out, n)
		}
	}
	return out
}

// neighborReads are one store's reads for Neighbors. Their errors are classified by the
// store's driver classifier.
type neighborReads struct {
	// walk feeds the walk from agg.start up to depth (≥ 1) into agg; its errors name the
	// start node.
	walk func(agg *walkAgg, depth int) error
	// nodes returns the stored nodes among ids, in any order.
	nodes func(ids []string) ([]Node, error)
	// exists reports whether the start node is stored.
	exists func() (bool, error)
}

// neighbors is Neighbors over one store's reads, once env is checked: a walk bounded by
// budget visits, then one lookup of the nearest MaxNeighbors nodes; a start node that has
// no neighbours must exist, else the error wraps ErrNotFound.
func neighbors(env, id string, depth, budget int, r neighborReads) ([]Node, error) {
	var nodes []Node
	if depth = clampDepth(depth); depth > 0 {
		agg := newWalkAgg(id, budget)
		if err := r.walk(agg, depth); err != nil {
			return nil, err
		}
		if ids := agg.nearest(); len(ids) > 0 {
			found, err := r.nodes(ids)
			if err != nil {
				return nil, fmt.Errorf("graph: neighbors of %q: %w", id, err)
			}
			nodes = inOrder(ids, found)
		}
	}
	if len(nodes) == 0 {
		ok, err := r.exists()
		if err != nil {
			return nil, fmt.Errorf("graph: neighbors of %q: %w", id, err)
		}
		if !ok {
			return nil, fmt.Errorf("graph: neighbors of %q in %s: %w", id, env, ErrNotFound)
		}
	}
	return nodes, nil
}
