package requirements

import (
	"strconv"
)

// Node id prefixes of the projection. Ids are deterministic, so projecting the same outcome
// twice upserts the same nodes and edges.
const (
	// VersionNodePrefix + version_id: a requirements version (Artifact, kind requirements_version).
	VersionNodePrefix = "requirements:"
	// RequirementNodePrefix + version_id + ":" + item id: one requirement item of a version
	// (Artifact, kind requirement).
	RequirementNodePrefix = "requirement:"
	// FeatureNodePrefix + request_id: a feature request (Artifact, kind feature_request).
	FeatureNodePrefix = "feature:"
	// DecisionNodePrefix + request_id + ":" + version: one decision (Decision).
	DecisionNodePrefix = "decision:"
)

// VersionNodeID returns the node id of requirements version id.
func VersionNodeID(id int64) string { return VersionNodePrefix + strconv.FormatInt(id, 10) }

// RequirementNodeID returns the node id of requirement item itemID of version id. Items are
// per version: the same item id in two versions is two nodes.
func RequirementNodeID(id int64, itemID string) string {
	return RequirementNodePrefix + strconv.FormatInt(id, 10) + ":" + itemID
}

// FeatureNodeID returns the node id of a feature request.
func FeatureNodeID(requestID string) string { return FeatureNodePrefix + requestID }
