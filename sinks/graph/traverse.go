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
