package commands

import (
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/graph"
)

// projectOutcome turns an applied requirement outcome into the graph batch to upsert; an outcome that applied
// nothing (refused) gives an empty batch. It is pure.
//
//   - A requirements version becomes an Artifact node (kind requirements_version) and each of
//     its functional and non-functional items an Artifact node (kind requirement) linked
//     part_of the version and depends_on each dependency that is an item of the same version;
//     dependencies naming no item of the version are kept in the item's
//     unresolved_dependencies property (the graph store refuses edges to missing nodes).
//   - A feature-request submission or transition upserts the request's Artifact node (kind
//     feature_request) with its current fields.
//   - A decision also adds a Decision node (one per decision, id decision:{request_id}:{version})
//     linked part_of the feature request.
//
// Property names avoid the graph store's PII substrings (email, phone, ssn, password, token,
// key), which it would redact.
func projectOutcome(o requirements.Outcome) graph.Batch {
	var b graph.Batch
	if !o.Applied || o.Refusal != nil {
		return b
	}
	if v := o.Version; v != nil {
		projectVersion(&b, *v)
	}
	if f := o.Feature; f != nil {
		b.Nodes = append(b.Nodes, graph.Node{ID: requirements.FeatureNodeID(f.RequestID), Type: graph.TypeArtifact, Properties: featureProps(*f)})
		if o.Type == requirements.TypeDecideFeatureRequest && o.Audit != nil {
			a := o.Audit
			id := requirements.DecisionNodePrefix + f.RequestID + ":" + strconv.FormatInt(f.Version, 10)
			props := map[string]any{
				"request_id": f.RequestID, "decision": a.NewStatus, "old_status": a.OldStatus,
				"decided_by": a.Admin, "decided_at": a.Timestamp, "command_id": o.CommandID,
			}
			if a.Reason != nil {
				props["reason"] = *a.Reason
			}
			b.Nodes = append(b.Nodes, graph.Node{ID: id, Type: graph.TypeDecision, Properties: props})
			b.Edges = append(b.Edges, graph.Edge{ID: graph.EdgeID(id, graph.EdgePartOf, requirements.FeatureNodeID(f.RequestID)), Source: id, Type: graph.EdgePartOf, Target: requirements.FeatureNodeID(f.RequestID)})
		}
	}
	return b
}

func featureProps(f requirements.FeatureRequest) map[string]any {
	p := map[string]any{
		"kind": "feature_request", "request_id": f.RequestID, "title": f.Title, "description": f.Description,
		"priority": f.Priority, "requester": f.Requester, "status": string(f.Status), "created_at": f.CreatedAt,
		"record_version": f.Version,
	}
	if f.UpdatedAt != nil {
		p["updated_at"] = *f.UpdatedAt
	}
	if f.ApprovedBy != nil {
		p["approved_by"] = *f.ApprovedBy
	}
	if f.RejectionReason != nil {
		p["rejection_reason"] = *f.RejectionReason
	}
	return p
}

func projectVersion(b *graph.Batch, v requirements.Version) {
	vid := requirements.VersionNodeID(v.VersionID)
	props := map[string]any{"kind": "requirements_version", "version_id": v.VersionID, "submitted_by": v.Author, "timestamp": v.Timestamp, "checksum": v.Checksum}
	for _, k := range []string{"title", "version", "description"} {
		if s, ok := v.Document.GetString(k); ok {
			if k == "version" {
				k = "semver"
			}
			props[k] = s
		}
	}
	b.Nodes = append(b.Nodes, graph.Node{ID: vid, Type: graph.TypeArtifact, Properties: props})

	reqs, _ := v.Document.Get("requirements")
	ro, _ := reqs.(*requirements.Object)
	type item struct {
		id   string
		deps []string
	}
	var items []item
	present := map[string]bool{}
	for _, list := range []string{"functional", "non_functional"} {
		arr, _ := ro.Get(list)
		elems, _ := arr.([]any)
		for _, e := range elems {
			o, ok := e.(*requirements.Object)
			if !ok {
				continue
			}
			id, ok := o.GetString("id")
			if !ok || id == "" || present[id] {
				continue // the schema and checkRules rule these out for Sluice-written versions
			}
			present[id] = true
			p := map[string]any{"kind": "requirement", "requirement_id": id, "list": list, "version_id": v.VersionID}
			for _, k := range []string{"title", "description", "priority", "category", "risk_level"} {
				if s, ok := o.GetString(k); ok {
					p[k] = s
				}
			}
			var deps []string
			dv, _ := o.Get("dependencies")
			da, _ := dv.([]any)
			for _, d := range da {
				if s, ok := d.(string); ok {
					deps = append(deps, s)
				}
			}
			items = append(items, item{id, deps})
			nid := requirements.RequirementNodeID(v.VersionID, id)
			b.Nodes = append(b.Nodes, graph.Node{ID: nid, Type: graph.TypeArtifact, Properties: p})
			b.Edges = append(b.Edges, graph.Edge{ID: graph.EdgeID(nid, graph.EdgePartOf, vid), Source: nid, Type: graph.EdgePartOf, Target: vid})
		}
	}
	byID := map[string]int{}
	for i, n := range b.Nodes {
		byID[n.ID] = i
	}
	for _, it := range items {
		src := requirements.RequirementNodeID(v.VersionID, it.id)
		var unresolved []any
		for _, d := range it.deps {
			if !present[d] {
				unresolved = append(unresolved, d)
				continue
			}
			dst := requirements.RequirementNodeID(v.VersionID, d)
			b.Edges = append(b.Edges, graph.Edge{ID: graph.EdgeID(src, graph.EdgeDependsOn, dst), Source: src, Type: graph.EdgeDependsOn, Target: dst})
		}
		if len(unresolved) > 0 {
			b.Nodes[byID[src]].Properties["unresolved_dependencies"] = unresolved
		}
	}
}
