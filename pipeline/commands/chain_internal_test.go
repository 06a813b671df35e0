package commands

import (
	"context"
	"errors"
	"reflect"
	"testing"
)

// TestRunChains: one key's items run one after another in chain order, different keys share a
// round, and once an item fails the later items of its key are skipped — those of other keys
// in the same chain still run.
func TestRunChains(t *testing.T) {
	chains := [][]keyed[string]{
		{{"a", "a1"}, {"b", "b1"}, {"a", "a2"}, {"a", "a3"}, {"c", "c1"}},
		{{"x", "x1"}, {"x", "x2"}},
		{},
	}
	var calls [][]string
	fail := map[string]bool{"a2": true}
	run := func(_ context.Context, vs []string) []error {
		calls = append(calls, append([]string(nil), vs...))
		res := make([]error, len(vs))
		for i, v := range vs {
			if fail[v] {
				res[i] = errors.New("failed " + v)
			}
		}
		return res
	}
	out := runChains(context.Background(), chains, run, func(err error) bool { return err != nil })
	wantCalls := [][]string{{"a1", "b1", "c1", "x1"}, {"a2", "x2"}}
	if !reflect.DeepEqual(calls, wantCalls) {
		t.Fatalf("rounds %v, want %v", calls, wantCalls)
	}
	if out[0][2].res == nil || out[0][2].skipped {
		t.Errorf("a2: %+v, want its failure", out[0][2])
	}
	if !out[0][3].skipped {
		t.Errorf("a3 after the failed a2: %+v, want skipped", out[0][3])
	}
	for _, r := range []chainResult[error]{out[0][0], out[0][1], out[0][4], out[1][0], out[1][1]} {
		if r.res != nil || r.skipped {
			t.Errorf("result %+v, want success", r)
		}
	}
	if len(out[2]) != 0 {
		t.Errorf("empty chain: %v", out[2])
	}
}
