package graph

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// graphFixtures are the graph files of the Python system, one per format Decode reads.
var graphFixtures = []string{
	"graph_snapshot.json",                               // Pass E
	"job_1757237159_c8623a8fec21_graphstore_batch.json", // GraphStore batch
	"job_1757237159_c8623a8fec21_pass_c_graph.json",     // legacy Pass C
}

// smallGraphSeed cuts a graph fixture down to its first few nodes, edges and cross-references,
// keeping every other top-level field: the fuzzer mutates a 2 KB file far faster than a
// 800 KB one, and the shape is what matters.
func smallGraphSeed(f *testing.F, name string) []byte {
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "chunks", name))
	if err != nil {
		f.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		f.Fatal(err)
	}
	for k, raw := range top {
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) == nil {
			top[k], _ = json.Marshal(list[:min(len(list), 3)])
			continue
		}
		var obj map[string]json.RawMessage
		if k == "nodes" && json.Unmarshal(raw, &obj) == nil {
			keys := slices.Sorted(func(yield func(string) bool) {
				for k := range obj {
					if !yield(k) {
						return
					}
				}
			})
			small := map[string]json.RawMessage{}
			for _, k := range keys[:min(len(keys), 3)] {
				small[k] = obj[k]
			}
			top[k], _ = json.Marshal(small)
		}
	}
	out, err := json.Marshal(top)
	if err != nil {
		f.Fatal(err)
	}
	return out
}

// FuzzDecode reads arbitrary bytes as a graph file of any format. Properties: no panic; a
// refusal is a permanent validation error wrapping ErrInvalid; an accepted file gives a
// batch that encodes as a GraphStore batch which decodes to the same batch (ids, types,
// endpoints, properties; timestamps are the store's and not compared); and when the batch
// passes validation, every edge id is EdgeID(source, type, target), ids are unique and every
// endpoint outside the batch is listed as external.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzDecode$' -fuzztime 10m ./sinks/graph/
func FuzzDecode(f *testing.F) {
	for _, name := range graphFixtures {
		f.Add(smallGraphSeed(f, name))
	}
	for _, s := range []string{
		`{"nodes":[{"id":"a","type":"Rule","properties":{"n":1e400}},{"id":"b","type":"Rule"}],"edges":[{"source":"a","type":"cites","target":"b"}]}`,
		`{"nodes":[{"id":"a","type":"Rule"}],"edges":[{"id":"edge:0000000000000000","source":"a","type":"cites","target":"a"}]}`,
		`{"nodes":[{"id":"a","type":"Rule","created_at":1e300}],"edges":[]}`,
		`{"nodes":{"x":{"node_type":"entity","title":"T"}},"cross_references":[{"ref_id":"c_ref_0","source_element":"s","target_element":"t","ref_type":"odd"}]}`,
		`{"nodes":[{"id":"n","node_type":"Concept","embedding_vector":[1]}],"edges":[{"from":"n","to":"n","type":"related_to"}]}`,
		`{"nodes":[{"id":"a\u0000","type":"Rule"}]}`,
		`{"edges":[]}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, _, format, err := Decode(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("Decode error is not a permanent validation error wrapping ErrInvalid: %v", err)
			}
			return
		}
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encode the %s batch: %v", format, err)
		}
		back, err := FromGraphStoreBatch(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("the %s batch encodes to %s, which does not decode: %v", format, enc, err)
		}
		if got, want := comparable(t, back), comparable(t, b); got != want {
			t.Fatalf("round trip changed the %s batch:\n got %s\nwant %s", format, got, want)
		}
		p, err := prepare(DefaultEnv, b, Options{})
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !fault.IsPermanent(err) {
				t.Fatalf("prepare error is not a permanent ErrInvalid: %v", err)
			}
			return
		}
		nodes := map[string]bool{}
		for _, n := range p.nodes {
			if nodes[n.ID] {
				t.Fatalf("node %q twice in a prepared batch", n.ID)
			}
			nodes[n.ID] = true
		}
		edges := map[string]bool{}
		for _, e := range p.edges {
			if e.ID != EdgeID(e.Source, e.Type, e.Target) {
				t.Fatalf("edge %s -%s-> %s has id %q, want %q", e.Source, e.Type, e.Target, e.ID, EdgeID(e.Source, e.Type, e.Target))
			}
			if edges[e.ID] {
				t.Fatalf("edge %q twice in a prepared batch", e.ID)
			}
			edges[e.ID] = true
			for _, end := range []string{e.Source, e.Target} {
				if !nodes[end] && !slices.Contains(p.external, end) {
					t.Fatalf("endpoint %q is neither a node of the batch nor external", end)
				}
			}
		}
	})
}

// comparable renders what a batch means (timestamps and versions dropped) as JSON text.
func comparable(t *testing.T, b Batch) string {
	t.Helper()
	var sb strings.Builder
	for _, n := range b.Nodes {
		n.CreatedAt, n.UpdatedAt, n.Version = time.Time{}, time.Time{}, 0
		enc, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		sb.Write(enc)
		sb.WriteByte('\n')
	}
	for _, e := range b.Edges {
		e.CreatedAt, e.UpdatedAt, e.Version = time.Time{}, time.Time{}, 0
		enc, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		sb.Write(enc)
		sb.WriteByte('\n')
	}
	return sb.String()
}
