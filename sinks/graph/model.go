// Package graph is Sluice's graph store: the node/edge model of the Python GraphStore
// (reference §3.1) kept in SQLite (embedded default, modernc.org/sqlite) or PostgreSQL
// (pgx/v5 pool), behind one schema and one set of semantics.
//
// A Batch of nodes and edges is one message. ApplyBatch applies it in one transaction, nodes
// before edges, all or nothing, and records the message id as an apply marker so that a
// redelivered message is a no-op and never bumps a version twice.
//
// Upsert semantics follow the Python GraphStore: properties merge shallowly (a later value
// replaces an earlier one key by key, nested values are replaced whole), the stored type of
// a node is never changed by a later upsert (a different type is not an error: the stored
// type is kept, as in Python), and version grows by one per applied message that names the
// node or edge, even when nothing changed. An edge needs both endpoints, in the same batch
// or already stored. The PII key rule and the 1000-character truncation apply by default
// (see Options).
//
// Errors that can never succeed (unknown type, bad id, missing endpoint, constraint
// violation) are marked fault.Permanent with class fault.Validation; everything else (lock
// timeouts, serialization failures after the internal retries, connection loss) is
// transient. Classification uses SQLSTATE and SQLite result codes, never error text.
package graph

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// Node types (reference §3.1).
const (
	TypeRule      = "Rule"
	TypeConcept   = "Concept"
	TypeProcedure = "Procedure"
	TypeStep      = "Step"
	TypeEntity    = "Entity"
	TypeSourceDoc = "SourceDoc"
	TypeArtifact  = "Artifact"
	TypeDecision  = "Decision"
)

// Edge types (reference §3.1).
const (
	EdgeDependsOn  = "depends_on"
	EdgePartOf     = "part_of"
	EdgeImplements = "implements"
	EdgeCites      = "cites"
	EdgeProduces   = "produces"
	EdgeVariantOf  = "variant_of"
	EdgePrereq     = "prereq"
)

// NodeTypes returns the 8 node types in a fixed order. The slice is new on every call.
func NodeTypes() []string {
	return []string{TypeRule, TypeConcept, TypeProcedure, TypeStep, TypeEntity, TypeSourceDoc, TypeArtifact, TypeDecision}
}

// EdgeTypes returns the 7 edge types in a fixed order. The slice is new on every call.
func EdgeTypes() []string {
	return []string{EdgeDependsOn, EdgePartOf, EdgeImplements, EdgeCites, EdgeProduces, EdgeVariantOf, EdgePrereq}
}

// IsNodeType reports whether t is one of the 8 node types (case-sensitive).
func IsNodeType(t string) bool { return slices.Contains(NodeTypes(), t) }

// IsEdgeType reports whether t is one of the 7 edge types (case-sensitive).
func IsEdgeType(t string) bool { return slices.Contains(EdgeTypes(), t) }

const (
	// MaxIDBytes is the longest node or edge id accepted, in UTF-8 bytes. It keeps ids well
	// inside PostgreSQL's b-tree entry limit.
	MaxIDBytes = 1024
	// MaxDepth is the largest traversal depth; Neighbors clamps depth to 0..MaxDepth.
	MaxDepth = 10
	// MaxNeighbors is the most nodes Neighbors returns (Python MAX_NEIGHBORS).
	MaxNeighbors = 1000
	// DefaultMaxStringLen is the truncation length of string properties.
	DefaultMaxStringLen = 1000
	// Redacted replaces the value of a property whose key matches the PII rule.
	Redacted = "***REDACTED***"
)

// piiKeyParts are the lower-case substrings that mark a property key as PII (reference §3.1).
// A substring match, as in Python: "keywords", "api_key" and "monkey" are redacted too.
var piiKeyParts = [...]string{"email", "phone", "ssn", "password", "token", "key"}

// ErrNotFound is returned (wrapped) by GetNode and Neighbors when no node has the id.
var ErrNotFound = errors.New("graph: node not found")

// ErrClosed is returned (wrapped) by every method called after Close. It is transient: a
// message that failed this way is redelivered to a store that is open.
var ErrClosed = errors.New("graph: store is closed")

// ErrInvalid is wrapped by every validation failure of a batch (unknown type, bad id,
// missing endpoint, edge id mismatch, constraint violation). Such errors are also marked
// fault.Permanent with class fault.Validation.
var ErrInvalid = errors.New("graph: invalid batch")

// Node is a graph node (reference §3.1). In JSON, created_at and updated_at are epoch
// seconds as a float, like the Python store.
type Node struct {
	ID   string
	Type string
	// Properties as stored. Numbers read back from a store are json.Number, so they
	// re-encode exactly.
	Properties map[string]any
	CreatedAt  time.Time
	UpdatedAt  time.Time
	// Version is 1 after the first applied message and grows by one per applied message.
	Version int64
}

// Edge is a graph edge (reference §3.1). ID is EdgeID(Source, Type, Target); in a Batch it
// may be empty (it is computed) but must match when given.
type Edge struct {
	ID         string
	Source     string
	Type       string
	Target     string
	Properties map[string]any
	CreatedAt  time.Time
	UpdatedAt  time.Time
	Version    int64
}

// Batch is one graph message: {nodes: [...], edges: [...]}. Only id, type and properties
// (plus source and target for edges) are read from it; timestamps and versions are the
// store's.
type Batch struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// EdgeID is the deterministic edge id: "edge:" + the first 16 hex digits of
// SHA-256("source:type:target").
func EdgeID(source, typ, target string) string {
	sum := sha256.Sum256([]byte(source + ":" + typ + ":" + target))
	return "edge:" + hex.EncodeToString(sum[:])[:16]
}

type wireNode struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Properties map[string]any `json:"properties"`
	CreatedAt  float64        `json:"created_at,omitempty"`
	UpdatedAt  float64        `json:"updated_at,omitempty"`
	Version    int64          `json:"version,omitempty"`
}

type wireEdge struct {
	ID         string         `json:"id,omitempty"`
	Source     string         `json:"source"`
	Type       string         `json:"type"`
	Target     string         `json:"target"`
	Properties map[string]any `json:"properties"`
	CreatedAt  float64        `json:"created_at,omitempty"`
	UpdatedAt  float64        `json:"updated_at,omitempty"`
	Version    int64          `json:"version,omitempty"`
}

func toEpoch(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMicro()) / 1e6
}

func fromEpoch(f float64) time.Time {
	if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return time.Time{}
	}
	return time.UnixMicro(int64(math.Round(f * 1e6))).UTC()
}

// MarshalJSON encodes n in the Python shape {id,type,properties,created_at,updated_at,version}.
func (n Node) MarshalJSON() ([]byte, error) {
	p := n.Properties
	if p == nil {
		p = map[string]any{}
	}
	return json.Marshal(wireNode{n.ID, n.Type, p, toEpoch(n.CreatedAt), toEpoch(n.UpdatedAt), n.Version})
}

// UnmarshalJSON decodes the Python shape; numbers inside properties become json.Number.
func (n *Node) UnmarshalJSON(b []byte) error {
	var w wireNode
	if err := decodeNumbers(b, &w); err != nil {
		return err
	}
	*n = Node{ID: w.ID, Type: w.Type, Properties: w.Properties, CreatedAt: fromEpoch(w.CreatedAt), UpdatedAt: fromEpoch(w.UpdatedAt), Version: w.Version}
	return nil
}

// MarshalJSON encodes e in the Python shape {id,source,type,target,properties,created_at,updated_at,version}.
func (e Edge) MarshalJSON() ([]byte, error) {
	p := e.Properties
	if p == nil {
		p = map[string]any{}
	}
	return json.Marshal(wireEdge{e.ID, e.Source, e.Type, e.Target, p, toEpoch(e.CreatedAt), toEpoch(e.UpdatedAt), e.Version})
}

// UnmarshalJSON decodes the Python shape; numbers inside properties become json.Number.
func (e *Edge) UnmarshalJSON(b []byte) error {
	var w wireEdge
	if err := decodeNumbers(b, &w); err != nil {
		return err
	}
	*e = Edge{ID: w.ID, Source: w.Source, Type: w.Type, Target: w.Target, Properties: w.Properties, CreatedAt: fromEpoch(w.CreatedAt), UpdatedAt: fromEpoch(w.UpdatedAt), Version: w.Version}
	return nil
}

func decodeNumbers(b []byte, v any) error {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	return d.Decode(v)
}

// Options are the property rules shared by both backends. The zero value is the Python
// behaviour: PII keys redacted, strings cut at 1000 characters.
type Options struct {
	// KeepPII disables the PII key rule. Optional; false redacts.
	KeepPII bool
	// NoTruncate disables string truncation. Optional; false truncates.
	NoTruncate bool
	// MaxStringLen is the truncation length in characters (runes); a longer top-level string
	// property becomes its first MaxStringLen characters plus "...". Optional; 0 means 1000;
	// negative is invalid.
	MaxStringLen int
	// MaxVisits bounds the (node, depth) steps of one Neighbors call; past it Neighbors stops
	// and fails with ErrTraversalTooLarge instead of running for minutes. Optional; 0 means
	// DefaultMaxVisits; negative is invalid.
	MaxVisits int
}

// Validate reports every problem with o at once.
func (o Options) Validate() error {
	if o.MaxStringLen < 0 {
		return fmt.Errorf("graph: Options.MaxStringLen %d is negative", o.MaxStringLen)
	}
	if o.MaxVisits < 0 {
		return fmt.Errorf("graph: Options.MaxVisits %d is negative", o.MaxVisits)
	}
	return nil
}

func (o Options) maxLen() int {
	if o.MaxStringLen == 0 {
		return DefaultMaxStringLen
	}
	return o.MaxStringLen
}

// isPIIKey reports whether key matches the PII rule (lower-cased substring match).
func isPIIKey(key string) bool {
	k := strings.ToLower(key)
	for _, p := range piiKeyParts {
		if strings.Contains(k, p) {
			return true
		}
	}
	return false
}

// Sanitize returns a copy of props with the rules of o applied to top-level values: a PII
// key's value becomes Redacted; otherwise a string longer than the limit (in characters) is
// cut and "..." appended. Nested values are not inspected. It never modifies props.
func (o Options) Sanitize(props map[string]any) map[string]any {
	out := make(map[string]any, len(props))
	limit := o.maxLen()
	for k, v := range props {
		switch {
		case !o.KeepPII && isPIIKey(k):
			out[k] = Redacted
		case !o.NoTruncate:
			if s, ok := v.(string); ok && utf8.RuneCountInString(s) > limit {
				out[k] = truncateRunes(s, limit) + "..."
			} else {
				out[k] = v
			}
		default:
			out[k] = v
		}
	}
	return out
}

func truncateRunes(s string, n int) string {
	i := 0
	for pos := range s {
		if i == n {
			return s[:pos]
		}
		i++
	}
	return s
}

// invalidf builds a permanent validation error wrapping ErrInvalid.
func invalidf(format string, args ...any) error {
	return fault.Permanent(fault.Validation, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
}

func checkID(what, id string) error {
	switch {
	case id == "":
		return invalidf("%s: empty id", what)
	case len(id) > MaxIDBytes:
		return invalidf("%s: id is %d bytes, over %d", what, len(id), MaxIDBytes)
	case !utf8.ValidString(id):
		return invalidf("%s: id is not valid UTF-8", what)
	case strings.ContainsRune(id, 0):
		return invalidf("%s: id contains U+0000", what)
	}
	return nil
}

// prepared is a validated, sanitized, deduplicated batch ready to write. Nodes and edges are
// sorted by id so that concurrent transactions lock rows in the same order.
type prepared struct {
	// env is the graph the batch goes to (checked).
	env   string
	nodes []Node
	edges []Edge
	// external are edge endpoints not among the batch's nodes, sorted; they must already
	// be stored.
	external []string
}

// prepare validates env and b and applies o. Several entries with the same id merge in order
// (properties shallow-merged, the first type kept), so one message bumps a version once.
func prepare(env string, b Batch, o Options) (prepared, error) {
	p := prepared{env: env}
	if err := checkEnv(env); err != nil {
		return p, err
	}
	nodeIdx := make(map[string]int, len(b.Nodes))
	for i, n := range b.Nodes {
		what := fmt.Sprintf("node %d", i)
		if err := checkID(what, n.ID); err != nil {
			return p, err
		}
		if !IsNodeType(n.Type) {
			return p, invalidf("node %d (%s): unknown node type %q", i, n.ID, n.Type)
		}
		props := o.Sanitize(n.Properties)
		if j, ok := nodeIdx[n.ID]; ok {
			for k, v := range props {
				p.nodes[j].Properties[k] = v
			}
			continue
		}
		nodeIdx[n.ID] = len(p.nodes)
		p.nodes = append(p.nodes, Node{ID: n.ID, Type: n.Type, Properties: props})
	}
	edgeIdx := make(map[string]int, len(b.Edges))
	ext := map[string]bool{}
	for i, e := range b.Edges {
		if err := checkID(fmt.Sprintf("edge %d source", i), e.Source); err != nil {
			return p, err
		}
		if err := checkID(fmt.Sprintf("edge %d target", i), e.Target); err != nil {
			return p, err
		}
		if !IsEdgeType(e.Type) {
			return p, invalidf("edge %d (%s -> %s): unknown edge type %q", i, e.Source, e.Target, e.Type)
		}
		id := EdgeID(e.Source, e.Type, e.Target)
		if e.ID != "" && e.ID != id {
			return p, invalidf("edge %d: id %q does not match %s:%s:%s (want %s)", i, e.ID, e.Source, e.Type, e.Target, id)
		}
		for _, end := range [2]string{e.Source, e.Target} {
			if _, ok := nodeIdx[end]; !ok {
				ext[end] = true
			}
		}
		props := o.Sanitize(e.Properties)
		if j, ok := edgeIdx[id]; ok {
			for k, v := range props {
				p.edges[j].Properties[k] = v
			}
			continue
		}
		edgeIdx[id] = len(p.edges)
		p.edges = append(p.edges, Edge{ID: id, Source: e.Source, Type: e.Type, Target: e.Target, Properties: props})
	}
	slices.SortFunc(p.nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(p.edges, func(a, b Edge) int { return strings.Compare(a.ID, b.ID) })
	for id := range ext {
		p.external = append(p.external, id)
	}
	slices.Sort(p.external)
	return p, nil
}

// mergeProps returns old with upd applied shallowly (dict.update). old may be nil.
func mergeProps(old, upd map[string]any) map[string]any {
	out := make(map[string]any, len(old)+len(upd))
	for k, v := range old {
		out[k] = v
	}
	for k, v := range upd {
		out[k] = v
	}
	return out
}

func encodeProps(p map[string]any) (string, error) {
	if p == nil {
		return "{}", nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return "", fault.Permanent(fault.Validation, fmt.Errorf("%w: properties are not JSON: %w", ErrInvalid, err))
	}
	return string(b), nil
}

func decodeProps(s string) (map[string]any, error) {
	var m map[string]any
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("graph: decode stored properties: %w", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}
