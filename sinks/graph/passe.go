package graph

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// Format names a graph input file shape.
type Format string

// The graph input formats DetectFormat recognises.
const (
	// FormatGraphStore is the GraphStore batch {"nodes":[{id,type,properties,…}],"edges":[{source,type,target,…}]} (reference §3.1).
	FormatGraphStore Format = "graphstore"
	// FormatPassE is the Pass E graph_snapshot.json {job_id,pass:"E",nodes:{id:node},edges:[…],cross_references:[…]} (reference §3.2).
	FormatPassE Format = "pass_e"
	// FormatLegacyPassC is the legacy 3-pass {job_id}_pass_c_graph.json
	// {nodes:[{id,node_type,…}],edges:[{from_node,to_node,edge_type,…}]} and its mock variant
	// (nodes {id,type,content,chunk_refs}, edges {from,to,type,weight}) (reference §3.2, last paragraph).
	FormatLegacyPassC Format = "legacy_pass_c"
)

// Warning is something a mapping skipped or changed without failing the file.
type Warning struct {
	// Item names what was affected, for example `edge 386 (hierarchy_Races_Barbarian)`.
	Item string `json:"item"`
	// Reason says why.
	Reason string `json:"reason"`
}

func (w Warning) String() string { return w.Item + ": " + w.Reason }

func badInput(format string, args ...any) error {
	return fault.Permanent(fault.Validation, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
}

// DetectFormat tells which graph file shape data holds, from its top-level keys and the
// first node and edge. An unrecognised shape is a permanent validation error.
func DetectFormat(data []byte) (Format, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return "", badInput("graph file is not a JSON object: %v", err)
	}
	nodes := bytes.TrimSpace(top["nodes"])
	if len(nodes) > 0 && nodes[0] == '{' {
		return FormatPassE, nil
	}
	if _, ok := top["cross_references"]; ok {
		return FormatPassE, nil
	}
	_, hasNodes := top["nodes"]
	_, hasEdges := top["edges"]
	if !hasNodes && !hasEdges {
		return "", badInput("graph file has neither \"nodes\" nor \"edges\"")
	}
	var first struct {
		Nodes []map[string]json.RawMessage `json:"nodes"`
		Edges []map[string]json.RawMessage `json:"edges"`
	}
	if err := json.Unmarshal(data, &first); err != nil {
		return "", badInput("graph file: nodes and edges must be arrays of objects: %v", err)
	}
	for _, n := range first.Nodes {
		if has(n, "node_type") || has(n, "chunk_refs") || has(n, "embedding_vector") {
			return FormatLegacyPassC, nil
		}
	}
	for _, e := range first.Edges {
		if has(e, "from_node") || has(e, "from") || has(e, "edge_type") {
			return FormatLegacyPassC, nil
		}
	}
	return FormatGraphStore, nil
}

func has(m map[string]json.RawMessage, k string) bool { _, ok := m[k]; return ok }

// Decode reads a whole graph file of any recognised format and maps it onto the model.
// Errors are permanent validation errors (the file can never load); warnings list what was
// skipped. It reads r to the end and keeps it in memory; the caller bounds its size.
func Decode(r io.Reader) (Batch, []Warning, Format, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Batch{}, nil, "", fmt.Errorf("graph: read graph file: %w", err)
	}
	f, err := DetectFormat(data)
	if err != nil {
		return Batch{}, nil, "", err
	}
	var b Batch
	var w []Warning
	switch f {
	case FormatGraphStore:
		b, err = FromGraphStoreBatch(bytes.NewReader(data))
	case FormatPassE:
		b, w, err = FromSnapshot(bytes.NewReader(data))
	case FormatLegacyPassC:
		b, w, err = FromLegacyPassC(bytes.NewReader(data))
	}
	return b, w, f, err
}

// FromGraphStoreBatch decodes a GraphStore batch {"nodes":[…],"edges":[…]}. Timestamps and
// versions in the file are read but ignored by ApplyBatch. Numbers in properties stay exact
// (json.Number). An item that does not decode fails the whole batch (permanent), naming its
// index; ids and types are checked by ApplyBatch.
func FromGraphStoreBatch(r io.Reader) (Batch, error) {
	var raw struct {
		Nodes []json.RawMessage `json:"nodes"`
		Edges []json.RawMessage `json:"edges"`
	}
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return Batch{}, badInput("GraphStore batch: %v", err)
	}
	b := Batch{Nodes: make([]Node, len(raw.Nodes)), Edges: make([]Edge, len(raw.Edges))}
	for i, m := range raw.Nodes {
		if err := json.Unmarshal(m, &b.Nodes[i]); err != nil {
			return Batch{}, badInput("GraphStore batch: node %d: %v", i, err)
		}
	}
	for i, m := range raw.Edges {
		if err := json.Unmarshal(m, &b.Edges[i]); err != nil {
			return Batch{}, badInput("GraphStore batch: edge %d: %v", i, err)
		}
	}
	return b, nil
}

type passENode struct {
	NodeID   string         `json:"node_id"`
	NodeType string         `json:"node_type"`
	Title    string         `json:"title"`
	Content  string         `json:"content"`
	ParentID *string        `json:"parent_id"`
	Children []string       `json:"children"`
	Metadata map[string]any `json:"metadata"`
}

type passEEdge struct {
	EdgeID   string         `json:"edge_id"`
	SourceID string         `json:"source_id"`
	TargetID string         `json:"target_id"`
	EdgeType string         `json:"edge_type"`
	Weight   any            `json:"weight"`
	Metadata map[string]any `json:"metadata"`
}

type passERef struct {
	RefID         string `json:"ref_id"`
	SourceElement string `json:"source_element"`
	TargetElement string `json:"target_element"`
	RefType       string `json:"ref_type"`
	Confidence    any    `json:"confidence"`
	Context       string `json:"context"`
}

// crossRefEdgeType maps a Pass E cross-reference ref_type onto an edge type. The three
// kinds map to different types so that one (element, class) pair found as two kinds keeps
// two edges.
var crossRefEdgeType = map[string]string{
	"spell_to_class": EdgePartOf,    // the spell is part of the class's spell list
	"feat_to_class":  EdgePrereq,    // the feat names the class as a prerequisite
	"rule_to_class":  EdgeDependsOn, // the class feature depends on the rule
}

func hash16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:16]
}

// EntityID is GraphBuilder's Entity id: "entity:" + sha256(name)[:16] (reference §3.1).
func EntityID(name string) string { return "entity:" + hash16(name) }

// FromSnapshot maps a Pass E graph_snapshot.json onto the model (the mapping is documented
// in README.md):
//   - chunk node → SourceDoc "source:chunk:{chunk_id}"; section node → SourceDoc
//     "source:section:{section_id}"; entity node → Entity EntityID(title); the Pass E
//     fields are kept in properties (passe_id, passe_type, title, content, parent_id,
//     children, metadata, job_id);
//   - contains edge section→chunk → part_of chunk→section; any other edge type (hierarchy)
//     → depends_on in its own direction; properties keep kind, passe_id, weight, metadata;
//     an edge whose endpoint is not a snapshot node is skipped with a Warning (the 2
//     hierarchy edges of the fixture);
//   - cross-reference → Entity nodes for the element and the class, an edge element→class
//     (spell_to_class part_of, feat_to_class prereq, rule_to_class depends_on, other kinds
//     depends_on with a Warning) and element cites its chunk's SourceDoc.
//
// A file that is not a Pass E snapshot, or a node or edge that does not decode, is a
// permanent validation error.
func FromSnapshot(r io.Reader) (Batch, []Warning, error) {
	var raw struct {
		JobID     string                     `json:"job_id"`
		Pass      string                     `json:"pass"`
		Nodes     map[string]json.RawMessage `json:"nodes"`
		Edges     []json.RawMessage          `json:"edges"`
		CrossRefs []json.RawMessage          `json:"cross_references"`
	}
	d := json.NewDecoder(r)
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return Batch{}, nil, badInput("Pass E snapshot: %v", err)
	}
	if raw.Nodes == nil {
		return Batch{}, nil, badInput("Pass E snapshot: no \"nodes\" object")
	}
	m := snapshotMapper{jobID: raw.JobID, idMap: make(map[string]string, len(raw.Nodes)), entities: map[string]bool{}}
	for _, k := range slices.Sorted(maps.Keys(raw.Nodes)) {
		var n passENode
		if err := decodeNumbers(raw.Nodes[k], &n); err != nil {
			return Batch{}, nil, badInput("Pass E snapshot: node %q: %v", k, err)
		}
		m.node(k, n)
	}
	for i, raw := range raw.Edges {
		var e passEEdge
		if err := decodeNumbers(raw, &e); err != nil {
			return Batch{}, nil, badInput("Pass E snapshot: edge %d: %v", i, err)
		}
		m.edge(i, e)
	}
	for i, raw := range raw.CrossRefs {
		var x passERef
		if err := decodeNumbers(raw, &x); err != nil {
			return Batch{}, nil, badInput("Pass E snapshot: cross-reference %d: %v", i, err)
		}
		m.crossRef(i, x)
	}
	return m.b, m.warns, nil
}

// snapshotMapper builds the Batch of one Pass E snapshot, item by item, in the order
// FromSnapshot feeds it: nodes (by key), edges, cross-references.
type snapshotMapper struct {
	jobID    string
	b        Batch
	warns    []Warning
	idMap    map[string]string // Pass E node id -> model id
	entities map[string]bool   // Entity ids added by cross-references
}

// warn records a Warning about item.
func (m *snapshotMapper) warn(item, format string, args ...any) {
	m.warns = append(m.warns, Warning{Item: item, Reason: fmt.Sprintf(format, args...)})
}

// snapshotNodeID returns the model id and type of a Pass E node, false for an unknown
// node_type.
func snapshotNodeID(n passENode) (id, typ string, ok bool) {
	switch n.NodeType {
	case "chunk":
		return "source:chunk:" + n.NodeID, TypeSourceDoc, true
	case "section":
		sid, _ := n.Metadata["section_id"].(string)
		if sid == "" {
			sid = strings.TrimPrefix(n.NodeID, "section_")
		}
		return "source:section:" + sid, TypeSourceDoc, true
	case "entity":
		name := n.Title
		if name == "" {
			name = n.NodeID
		}
		return EntityID(name), TypeEntity, true
	}
	return "", "", false
}

// node maps the snapshot node under key k.
func (m *snapshotMapper) node(k string, n passENode) {
	if n.NodeID == "" {
		n.NodeID = k
	}
	id, typ, ok := snapshotNodeID(n)
	if !ok {
		m.warn(fmt.Sprintf("node %q", k), "unknown Pass E node_type %q, skipped", n.NodeType)
		return
	}
	m.idMap[n.NodeID] = id
	props := map[string]any{
		"passe_id": n.NodeID, "passe_type": n.NodeType, "title": n.Title, "content": n.Content,
		"children": orEmpty(n.Children), "metadata": n.Metadata,
	}
	if n.ParentID != nil {
		props["parent_id"] = *n.ParentID
	} else {
		props["parent_id"] = nil
	}
	if m.jobID != "" {
		props["job_id"] = m.jobID
	}
	m.b.Nodes = append(m.b.Nodes, Node{ID: id, Type: typ, Properties: props})
}

// edge maps snapshot edge i; its endpoints must be nodes of the snapshot.
func (m *snapshotMapper) edge(i int, e passEEdge) {
	src, okS := m.idMap[e.SourceID]
	dst, okT := m.idMap[e.TargetID]
	if !okS || !okT {
		var gone []string
		if !okS {
			gone = append(gone, fmt.Sprintf("source %q", e.SourceID))
		}
		if !okT {
			gone = append(gone, fmt.Sprintf("target %q", e.TargetID))
		}
		m.warn(fmt.Sprintf("edge %d (%s)", i, e.EdgeID), "%s edge skipped: %s not a node of the snapshot", e.EdgeType, strings.Join(gone, " and "))
		return
	}
	typ := EdgeDependsOn
	if e.EdgeType == "contains" {
		typ, src, dst = EdgePartOf, dst, src
	}
	props := map[string]any{"kind": e.EdgeType, "passe_id": e.EdgeID, "weight": e.Weight, "metadata": e.Metadata}
	m.b.Edges = append(m.b.Edges, Edge{Source: src, Type: typ, Target: dst, Properties: props})
}

// entity returns the id of the Entity named name, adding its node the first time.
func (m *snapshotMapper) entity(name, role string) string {
	id := EntityID(name)
	if !m.entities[id] {
		m.entities[id] = true
		props := map[string]any{"name": name, "passe_role": role}
		if m.jobID != "" {
			props["job_id"] = m.jobID
		}
		m.b.Nodes = append(m.b.Nodes, Node{ID: id, Type: TypeEntity, Properties: props})
	}
	return id
}

// crossRef maps cross-reference i: an edge element→class and a cites edge to its chunk.
func (m *snapshotMapper) crossRef(i int, x passERef) {
	item := fmt.Sprintf("cross-reference %d (%s)", i, x.RefID)
	if x.SourceElement == "" || x.TargetElement == "" {
		m.warn(item, "no source_element or target_element, skipped")
		return
	}
	typ, ok := crossRefEdgeType[x.RefType]
	if !ok {
		typ = EdgeDependsOn
		m.warn(item, "unknown ref_type %q mapped to depends_on", x.RefType)
	}
	chunkID := x.RefID
	if j := strings.LastIndex(chunkID, "_ref_"); j >= 0 {
		chunkID = chunkID[:j]
	}
	src, dst := m.entity(x.SourceElement, "element"), m.entity(x.TargetElement, "class")
	m.b.Edges = append(m.b.Edges, Edge{Source: src, Type: typ, Target: dst, Properties: map[string]any{
		"kind": x.RefType, "passe_id": x.RefID, "confidence": x.Confidence, "context": x.Context, "chunk_id": chunkID,
	}})
	doc, ok := m.idMap[chunkID]
	if !ok {
		m.warn(item, "chunk %q is not in the snapshot; no cites edge", chunkID)
		return
	}
	m.b.Edges = append(m.b.Edges, Edge{Source: src, Type: EdgeCites, Target: doc, Properties: map[string]any{
		"kind": "cross_reference", "chunk_id": chunkID, "confidence": x.Confidence,
	}})
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// legacyEdgeType maps the legacy 3-pass edge types; related_to has no GraphStore
// counterpart and becomes cites (kind "related_to" is kept in properties).
var legacyEdgeType = map[string]string{
	"depends_on": EdgeDependsOn, "part_of": EdgePartOf, "implements": EdgeImplements, "related_to": EdgeCites,
}

// FromLegacyPassC maps the legacy 3-pass {job_id}_pass_c_graph.json (and the mock's
// variant) onto the model: node ids are kept ("node_{md5[:8]}"), node_type (Concept, Rule,
// Procedure, Entity) becomes the type, content, chunk_refs and the legacy properties become
// properties (embedding_vector is dropped, with one Warning); edges from_node→to_node keep
// their type, except related_to → cites (kind kept in properties). Edges whose endpoints are
// not nodes of the file are skipped with a Warning.
func FromLegacyPassC(r io.Reader) (Batch, []Warning, error) {
	var raw struct {
		JobID string            `json:"job_id"`
		Nodes []json.RawMessage `json:"nodes"`
		Edges []json.RawMessage `json:"edges"`
	}
	d := json.NewDecoder(r)
	d.UseNumber()
	if err := d.Decode(&raw); err != nil {
		return Batch{}, nil, badInput("legacy pass_c graph: %v", err)
	}
	var b Batch
	var warns []Warning
	known := map[string]bool{}
	dropped := 0
	for i, m := range raw.Nodes {
		var n map[string]any
		if err := decodeNumbers(m, &n); err != nil {
			return Batch{}, nil, badInput("legacy pass_c graph: node %d: %v", i, err)
		}
		id, _ := n["id"].(string)
		typ, _ := n["node_type"].(string)
		if typ == "" {
			typ, _ = n["type"].(string)
		}
		props := map[string]any{"legacy_format": "pass_c_graph"}
		if p, ok := n["properties"].(map[string]any); ok {
			for k, v := range p {
				props[k] = v
			}
		}
		for _, k := range []string{"content", "chunk_refs"} {
			if v, ok := n[k]; ok {
				props[k] = v
			}
		}
		if _, ok := n["embedding_vector"]; ok {
			dropped++
		}
		if raw.JobID != "" {
			props["job_id"] = raw.JobID
		}
		known[id] = true
		b.Nodes = append(b.Nodes, Node{ID: id, Type: typ, Properties: props})
	}
	if dropped > 0 {
		warns = append(warns, Warning{Item: fmt.Sprintf("%d nodes", dropped), Reason: "embedding_vector dropped (not a graph property)"})
	}
	for i, m := range raw.Edges {
		var e map[string]any
		if err := decodeNumbers(m, &e); err != nil {
			return Batch{}, nil, badInput("legacy pass_c graph: edge %d: %v", i, err)
		}
		src, dst, kind := str(e, "from_node", "from"), str(e, "to_node", "to"), str(e, "edge_type", "type")
		item := fmt.Sprintf("edge %d (%s -%s-> %s)", i, src, kind, dst)
		if !known[src] || !known[dst] {
			warns = append(warns, Warning{Item: item, Reason: "endpoint not a node of the file, skipped"})
			continue
		}
		typ, ok := legacyEdgeType[kind]
		if !ok {
			typ = kind // ApplyBatch rejects an unknown type with a clear error
		}
		props := map[string]any{"kind": kind, "weight": e["weight"]}
		if p, ok := e["properties"].(map[string]any); ok {
			for k, v := range p {
				props[k] = v
			}
		}
		b.Edges = append(b.Edges, Edge{Source: src, Type: typ, Target: dst, Properties: props})
	}
	return b, warns, nil
}

func str(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok {
			return s
		}
	}
	return ""
}
