package requirements_test

import (
	"slices"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// chain builds a trail of two interleaved requests: A1 B1 A2 A3.
func chain() []requirements.AuditEntry {
	mk := func(id, old, new string) requirements.AuditEntry {
		return requirements.AuditEntry{Timestamp: "2025-10-09T08:53:20.000000Z", RequestID: id, OldStatus: old, NewStatus: new, Admin: "api-admin"}
	}
	a1 := requirements.ChainEntry(nil, mk("FR-111", "", "pending"))
	b1 := requirements.ChainEntry(nil, mk("FR-222", "", "pending"))
	a2 := requirements.ChainEntry(&a1, mk("FR-111", "pending", "approved"))
	a3 := requirements.ChainEntry(&a2, mk("FR-111", "approved", "in_progress"))
	return []requirements.AuditEntry{a1, b1, a2, a3}
}

func TestVerifyChain(t *testing.T) {
	tests := []struct {
		name   string
		tamper func([]requirements.AuditEntry) []requirements.AuditEntry
		want   []string
	}{
		{name: "intact", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry { return e }},
		{name: "field edited", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2].NewStatus = "rejected"
			return e
		}, want: []string{"Line 3: checksum mismatch"}},
		{name: "edited and re-checksummed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2].Admin = "mallory"
			e[2].Checksum = requirements.AuditChecksum(e[2])
			return e
		}, want: []string{"Line 4: chain broken"}},
		{name: "entry removed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return slices.Delete(e, 2, 3)
		}, want: []string{"Line 3: chain broken"}},
		{name: "entries swapped", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			e[2], e[3] = e[3], e[2]
			return e
		}, want: []string{"Line 3: chain broken", "Line 4: chain broken"}},
		{name: "entry replayed", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return append(e, e[3])
		}, want: []string{"Line 5: chain broken"}},
		{name: "other request's interleaving does not matter", tamper: func(e []requirements.AuditEntry) []requirements.AuditEntry {
			return []requirements.AuditEntry{e[0], e[2], e[3], e[1]}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, problems := requirements.VerifyChain(tt.tamper(chain()))
			if ok != (len(tt.want) == 0) || !slices.Equal(problems, tt.want) {
				t.Errorf("VerifyChain = %v %q, want %q", ok, problems, tt.want)
			}
		})
	}
	c := chain()
	if c[0].Seq != 1 || c[0].PrevChecksum != "" || c[2].Seq != 2 || c[2].PrevChecksum != c[0].Checksum || c[1].PrevChecksum != "" {
		t.Errorf("chain links %+v", c)
	}
}

func TestProject(t *testing.T) {
	st, _, err := requirements.Apply(requirements.State{}, submitRequirements(t))
	if err != nil {
		t.Fatal(err)
	}
	vid := st.Version.VersionID
	b := requirements.Project(requirements.Outcome{Applied: true, Type: requirements.TypeSubmitRequirements, Version: st.Version})
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

	s1, _, _ := requirements.Apply(requirements.State{}, submitFeature(reqID))
	cmd := decide(reqID, requirements.ActionReject, ptr("no"), nil)
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
		{name: "submission", o: requirements.Outcome{Applied: true, Type: requirements.TypeSubmitFeatureRequest, Feature: s1.Feature}, nodes: []string{"feature:" + reqID}},
		{name: "decision", o: requirements.Outcome{Applied: true, CommandID: cmd.CommandID, Type: requirements.TypeDecideFeatureRequest, Feature: s2.Feature, Audit: &entry},
			nodes: []string{"feature:" + reqID, "decision:" + reqID + ":2"}, edges: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := requirements.Project(tt.o)
			var ids []string
			for _, n := range b.Nodes {
				ids = append(ids, n.ID)
			}
			if !slices.Equal(ids, tt.nodes) || len(b.Edges) != tt.edges {
				t.Fatalf("nodes %v edges %d", ids, len(b.Edges))
			}
			if tt.edges == 1 {
				d, e := b.Nodes[1], b.Edges[0]
				if d.Type != graph.TypeDecision || d.Properties["decision"] != "rejected" || d.Properties["reason"] != "no" || e.Type != graph.EdgePartOf || e.Target != "feature:"+reqID {
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
	s, _ := newStore(t)
	g, err := graph.OpenSQLite(t.Context(), graph.SQLiteConfig{Path: t.TempDir() + "/graph.db"})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	cmds := []requirements.Command{submitRequirements(t), submitFeature(reqID), decide(reqID, requirements.ActionApprove, ptr("fits"), nil), transition(reqID, requirements.StatusInProgress, nil)}
	for _, c := range cmds {
		out := apply(t, s, c, "")
		if _, err := g.ApplyBatch(t.Context(), graph.DefaultEnv, requirements.Project(out), c.CommandID); err != nil {
			t.Fatalf("%s: %v", c.Type, err)
		}
	}
	n, err := g.GetNode(t.Context(), graph.DefaultEnv, requirements.FeatureNodeID(reqID))
	if err != nil {
		t.Fatal(err)
	}
	if n.Properties["status"] != "in_progress" || n.Properties["approved_by"] != "api-admin" || n.Version != 3 {
		t.Errorf("feature node %+v", n)
	}
	for _, n := range []string{requirements.VersionNodeID(cmds[0].IssuedAt.UnixMilli()), "decision:" + reqID + ":2"} {
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
