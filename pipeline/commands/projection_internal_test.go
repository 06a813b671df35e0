package commands

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
)

func TestProject(t *testing.T) {
	st, _, err := requirements.Apply(requirements.State{}, reqtest.SubmitRequirements(t))
	if err != nil {
		t.Fatal(err)
	}
	vid := st.Version.VersionID
	b := projectOutcome(requirements.Outcome{Applied: true, Type: requirements.TypeSubmitRequirements, Version: st.Version})
	nodes := map[string]graph.Node{}
	for _, n := range b.Nodes {
		if !graph.IsNodeType(n.Type) {
			t.Errorf("node %s has type %s", n.ID, n.Type)
		}
		nodes[n.ID] = n
	}
	v := requirements.VersionNodeID(vid)
	dr1, dr2, nfr := requirements.RequirementNodeID(vid, "DR-001"), requirements.RequirementNodeID(vid, "DR-002"), requirements.RequirementNodeID(vid, "NFR-010")
	if len(nodes) != 4 || nodes[v].Type != graph.TypeArtifact || nodes[v].Properties["semver"] != "2.1.0" || nodes[dr2].Properties["title"] != "History" {
		t.Errorf("nodes %+v", nodes)
	}
	if u := nodes[dr2].Properties["unresolved_dependencies"]; len(u.([]any)) != 1 || u.([]any)[0] != "XX-999" {
		t.Errorf("unresolved %v", u)
	}
	var edges []string
	for _, e := range b.Edges {
		if e.ID != graph.EdgeID(e.Source, e.Type, e.Target) {
			t.Errorf("edge id %s", e.ID)
		}
		edges = append(edges, e.Source+" "+e.Type+" "+e.Target)
	}
	slices.Sort(edges)
	want := []string{dr1 + " part_of " + v, dr2 + " depends_on " + dr1, dr2 + " part_of " + v, nfr + " depends_on " + dr2, nfr + " part_of " + v}
	slices.Sort(want)
	if !slices.Equal(edges, want) {
		t.Errorf("edges\n%q\nwant\n%q", edges, want)
	}

	s1, _, _ := requirements.Apply(requirements.State{}, reqtest.SubmitFeature(reqtest.ReqID))
	cmd := reqtest.Decide(reqtest.ReqID, requirements.ActionReject, reqtest.Ptr("no"), nil)
	s2, entry, err := requirements.Apply(s1, cmd)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		o     requirements.Outcome
		nodes []string
		edges int
	}{
		{name: "refusal projects nothing", o: requirements.Outcome{Refusal: &requirements.Refusal{Code: requirements.RefusalAlreadyDecided}}},
		{name: "submission", o: requirements.Outcome{Applied: true, Type: requirements.TypeSubmitFeatureRequest, Feature: s1.Feature}, nodes: []string{"feature:" + reqtest.ReqID}},
		{name: "decision", o: requirements.Outcome{Applied: true, CommandID: cmd.CommandID, Type: requirements.TypeDecideFeatureRequest, Feature: s2.Feature, Audit: &entry},
			nodes: []string{"feature:" + reqtest.ReqID, "decision:" + reqtest.ReqID + ":2"}, edges: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := projectOutcome(tt.o)
			var ids []string
			for _, n := range b.Nodes {
				ids = append(ids, n.ID)
			}
			if !slices.Equal(ids, tt.nodes) || len(b.Edges) != tt.edges {
				t.Fatalf("nodes %v edges %d", ids, len(b.Edges))
			}
			if tt.edges == 1 {
				d, e := b.Nodes[1], b.Edges[0]
				if d.Type != graph.TypeDecision || d.Properties["decision"] != "rejected" || d.Properties["reason"] != "no" || e.Type != graph.EdgePartOf || e.Target != "feature:"+reqtest.ReqID {
					t.Errorf("decision %+v edge %+v", d, e)
				}
				if b.Nodes[0].Properties["status"] != "rejected" || b.Nodes[0].Properties["rejection_reason"] != "no" {
					t.Errorf("feature node %+v", b.Nodes[0])
				}
			}
		})
	}
}

// TestProjectIntoGraphStore applies the projection of real outcomes to the SQLite graph store:
// the batches are valid (types, ids, endpoints), and the PII rule redacts nothing.
func TestProjectIntoGraphStore(t *testing.T) {
	s, err := reqstore.OpenSQLite(t.Context(), reqstore.SQLiteConfig{Path: filepath.Join(t.TempDir(), "req.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	g, err := graph.OpenSQLite(t.Context(), graph.SQLiteConfig{Path: t.TempDir() + "/graph.db"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cmds := []requirements.Command{reqtest.SubmitRequirements(t), reqtest.SubmitFeature(reqtest.ReqID), reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, reqtest.Ptr("fits"), nil), reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, nil)}
	for _, c := range cmds {
		out, err := s.ApplyCommand(t.Context(), c, "")
		if err != nil {
			t.Fatalf("%s: %v", c.Type, err)
		}
		if _, err := g.ApplyBatch(t.Context(), graph.DefaultEnv, projectOutcome(out), c.CommandID); err != nil {
			t.Fatalf("%s: %v", c.Type, err)
		}
	}
	n, err := g.GetNode(t.Context(), graph.DefaultEnv, requirements.FeatureNodeID(reqtest.ReqID))
	if err != nil {
		t.Fatal(err)
	}
	if n.Properties["status"] != "in_progress" || n.Properties["approved_by"] != "api-admin" || n.Version != 3 {
		t.Errorf("feature node %+v", n)
	}
	for _, n := range []string{requirements.VersionNodeID(cmds[0].IssuedAt.UnixMilli()), "decision:" + reqtest.ReqID + ":2"} {
		got, err := g.GetNode(t.Context(), graph.DefaultEnv, n)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range got.Properties {
			if v == graph.Redacted {
				t.Errorf("%s: property %s redacted", n, k)
			}
		}
	}
}
