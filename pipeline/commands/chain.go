package commands

import (
	"context"
)

// keyed is one item of a chain: a value and the aggregate key whose order it must keep.
type keyed[T any] struct {
	key string
	v   T
}

// chainResult is what became of one item of a chain: its result, or skipped when an earlier
// item of its key failed (then it was not run, so that it cannot overtake that one).
type chainResult[R any] struct {
	res     R
	skipped bool
}

// runChains runs the items of chains — each chain a partition's commands in stream order,
// several chains from several partitions — through run, which takes items of pairwise
// different keys (one store transaction, one graph transaction, one atomic publish). Items go
// in rounds: round r holds every chain's r-th item of each key, so one key's items run one
// after another, in order, and different keys share a round. Once an item fails (failed
// reports it), the later items of its key are skipped. Chains of different partitions never
// share a key. Most rounds are the only one: a partition rarely holds two commands of one key.
func runChains[T, R any](ctx context.Context, chains [][]keyed[T], run func(context.Context, []T) []R, failed func(R) bool) [][]chainResult[R] {
	out := make([][]chainResult[R], len(chains))
	type ref struct{ c, i int }
	var rounds [][]ref
	for c, chain := range chains {
		out[c] = make([]chainResult[R], len(chain))
		seen := make(map[string]int, len(chain))
		for i, it := range chain {
			r := seen[it.key]
			seen[it.key] = r + 1
			for len(rounds) <= r {
				rounds = append(rounds, nil)
			}
			rounds[r] = append(rounds[r], ref{c, i})
		}
	}
	bad := map[string]bool{}
	for _, round := range rounds {
		refs := round[:0:0]
		vs := make([]T, 0, len(round))
		for _, f := range round {
			it := chains[f.c][f.i]
			if bad[it.key] {
				out[f.c][f.i].skipped = true
				continue
			}
			refs = append(refs, f)
			vs = append(vs, it.v)
		}
		if len(vs) == 0 {
			continue
		}
		res := run(ctx, vs)
		for j, f := range refs {
			out[f.c][f.i].res = res[j]
			if failed(res[j]) {
				bad[chains[f.c][f.i].key] = true
			}
		}
	}
	return out
}

// chainGroup is a group whose requests are chains: the partitions hand over their chains at
// about the same moment and runChains writes them together.
func chainGroup[T, R any](waiting int, run func(context.Context, []T) []R, failed func(R) bool) *group[[]keyed[T], []chainResult[R]] {
	return newGroup(waiting, waiting, func(ctx context.Context, chains [][]keyed[T]) [][]chainResult[R] {
		return runChains(ctx, chains, run, failed)
	})
}
