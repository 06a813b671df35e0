package graph_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/graph"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "chunks", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDetectFormat(t *testing.T) {
	tests := []struct {
		name string
		data []byte
		want graph.Format
		bad  bool
	}{
		{"graphstore fixture", fixture(t, "job_1757237159_c8623a8fec21_graphstore_batch.json"), graph.FormatGraphStore, false},
		{"pass E snapshot", fixture(t, "graph_snapshot.json"), graph.FormatPassE, false},
		{"legacy pass C", fixture(t, "job_1757237159_c8623a8fec21_pass_c_graph.json"), graph.FormatLegacyPassC, false},
		{"mock legacy", []byte(`{"nodes":[{"id":"n1","type":"Rule","content":"x","chunk_refs":[]}],"edges":[{"from":"n1","to":"n1","type":"related_to","weight":1}]}`), graph.FormatLegacyPassC, false},
		{"empty graphstore", []byte(`{"nodes":[],"edges":[]}`), graph.FormatGraphStore, false},
		{"chunk file", fixture(t, "job_1757237159_c8623a8fec21_items.json"), "", true},
		{"not JSON", []byte(`nodes`), "", true},
		{"array", []byte(`[]`), "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := graph.DetectFormat(tc.data)
			if tc.bad {
				if err == nil || !fault.IsPermanent(err) {
					t.Fatalf("DetectFormat = %q, %v; want a permanent error", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DetectFormat = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestFromSnapshot(t *testing.T) {
	b, warns, err := graph.FromSnapshot(bytes.NewReader(fixture(t, "graph_snapshot.json")))
	if err != nil {
		t.Fatal(err)
	}
	hier := 0
	for _, w := range warns {
		if strings.Contains(w.Item, "hierarchy_") {
			hier++
		} else {
			t.Errorf("unexpected warning %s", w)
		}
	}
	if hier != 2 {
		t.Errorf("%d hierarchy warnings, want 2: %v", hier, warns)
	}
	s := newSQLite(t, graph.Options{})
	ctx := context.Background()
	if _, err := s.ApplyBatch(ctx, graph.DefaultEnv, b, "passe"); err != nil {
		t.Fatalf("apply mapped snapshot: %v", err)
	}
	st, err := s.Stats(ctx, graph.DefaultEnv)
	if err != nil {
		t.Fatal(err)
	}
	// 386 sections + 386 chunks, plus one Entity per distinct cross-reference element and class.
	if st.Nodes[graph.TypeSourceDoc] != 772 || st.Nodes[graph.TypeEntity] == 0 {
		t.Errorf("node stats %v, want 772 SourceDoc and some Entity", st.Nodes)
	}
	// 386 contains edges become part_of; 62 spell_to_class are part_of too, 7 rule_to_class
	// depends_on, each cross-reference also cites its chunk (repeated pairs collapse).
	if st.Edges[graph.EdgePartOf] < 386 || st.Edges[graph.EdgeDependsOn] == 0 || st.Edges[graph.EdgeCites] == 0 {
		t.Errorf("edge stats %v", st.Edges)
	}
	chunk := "job_1757237159_c8623a8fec21_c_1_0001"
	n, err := s.GetNode(ctx, graph.DefaultEnv, "source:chunk:"+chunk)
	if err != nil {
		t.Fatal(err)
	}
	if n.Type != graph.TypeSourceDoc || n.Properties["passe_id"] != chunk || n.Properties["passe_type"] != "chunk" || n.Properties["parent_id"] != "section_part_1_section_1" {
		t.Errorf("chunk node %+v", n)
	}
	up, err := s.Neighbors(ctx, graph.DefaultEnv, "source:chunk:"+chunk, 1, []string{graph.EdgePartOf})
	if err != nil || len(up) != 1 || up[0].ID != "source:section:part_1_section_1" {
		t.Errorf("chunk's section: %v %v", up, err)
	}
	e, err := s.GetEdge(ctx, graph.DefaultEnv, graph.EdgeID("source:chunk:"+chunk, graph.EdgePartOf, "source:section:part_1_section_1"))
	if err != nil || e.Properties["kind"] != "contains" {
		t.Errorf("contains edge: %+v %v", e, err)
	}
	wiz, err := s.GetNode(ctx, graph.DefaultEnv, graph.EntityID("Paladin"))
	if err != nil || wiz.Properties["name"] != "Paladin" {
		t.Errorf("class entity: %+v %v", wiz, err)
	}
}

func TestFromLegacyPassC(t *testing.T) {
	b, warns, err := graph.FromLegacyPassC(bytes.NewReader(fixture(t, "job_1757237159_c8623a8fec21_pass_c_graph.json")))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Nodes) != 100 || len(b.Edges) != 443 {
		t.Errorf("%d nodes, %d edges; want 100, 443 (warnings %v)", len(b.Nodes), len(b.Edges), warns)
	}
	s := newSQLite(t, graph.Options{})
	ctx := context.Background()
	if _, err := s.ApplyBatch(ctx, graph.DefaultEnv, b, "legacy"); err != nil {
		t.Fatalf("apply legacy graph: %v", err)
	}
	st, _ := s.Stats(ctx, graph.DefaultEnv)
	if st.TotalNodes() != 100 || st.Edges[graph.EdgeCites] == 0 {
		t.Errorf("stats %+v", st)
	}
	for _, n := range b.Nodes {
		if _, ok := n.Properties["embedding_vector"]; ok {
			t.Fatalf("embedding_vector kept on %s", n.ID)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"node not an object", `{"nodes":[1],"edges":[]}`},
		{"bad property type", `{"nodes":[{"id":"a","type":"Rule","properties":[1]}]}`},
		{"snapshot node not an object", `{"pass":"E","nodes":{"a":5},"edges":[]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, _, err := graph.Decode(strings.NewReader(tc.in))
			if !fault.IsPermanent(err) || !errors.Is(err, graph.ErrInvalid) {
				t.Errorf("Decode = %v, want permanent ErrInvalid", err)
			}
		})
	}
}
