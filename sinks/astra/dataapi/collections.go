package dataapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// VectorOptions makes a collection a vector collection.
type VectorOptions struct {
	// Dimension is the length of every $vector. Required (> 0).
	Dimension int
	// Metric is cosine, dot_product or euclidean. Optional; "" means the server's default
	// (cosine).
	Metric string
}

// CollectionOptions are the createCollection options Sluice uses. At most one of
// IndexingDeny and IndexingAllow may be set.
type CollectionOptions struct {
	// Vector makes the collection a vector collection. Optional.
	Vector *VectorOptions
	// IndexingDeny lists top-level or dotted paths excluded from indexing: they are exempt
	// from the string and array limits and cannot be filtered on. Optional.
	IndexingDeny []string
	// IndexingAllow lists the only paths indexed. Optional.
	IndexingAllow []string
}

func (o CollectionOptions) wire() (map[string]any, error) {
	opts := map[string]any{}
	if o.Vector != nil {
		if o.Vector.Dimension <= 0 {
			return nil, fmt.Errorf("vector dimension must be > 0, got %d", o.Vector.Dimension)
		}
		v := map[string]any{"dimension": o.Vector.Dimension}
		if o.Vector.Metric != "" {
			v["metric"] = o.Vector.Metric
		}
		opts["vector"] = v
	}
	switch {
	case len(o.IndexingDeny) > 0 && len(o.IndexingAllow) > 0:
		return nil, errors.New("set IndexingDeny or IndexingAllow, not both")
	case len(o.IndexingDeny) > 0:
		opts["indexing"] = map[string]any{"deny": o.IndexingDeny}
	case len(o.IndexingAllow) > 0:
		opts["indexing"] = map[string]any{"allow": o.IndexingAllow}
	}
	return opts, nil
}

// CreateCollection creates collection name with opts. It is idempotent: an existing
// collection with the same options is success. An existing collection with other options
// gives a permanent error wrapping an *APIError with Code
// EXISTING_COLLECTION_DIFFERENT_SETTINGS. It blocks for the round trip(s).
func (c *Client) CreateCollection(ctx context.Context, name string, opts CollectionOptions) error {
	if !nameRE.MatchString(name) {
		return fault.Permanentf(fault.Rejected, "create collection %q: invalid name (1-48 letters, digits or underscores)", name)
	}
	wire, err := opts.wire()
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("create collection %s: %w", name, err))
	}
	payload := map[string]any{"name": name}
	if len(wire) > 0 {
		payload["options"] = wire
	}
	env, err := c.command(ctx, "", "createCollection", payload)
	if err != nil {
		return fmt.Errorf("create collection %s: %w", name, err)
	}
	if len(env.Errors) > 0 {
		return fmt.Errorf("create collection %s: %w", name, classifyAll(env.Errors))
	}
	return nil
}

// CollectionInfo describes one collection, as findCollections with explain reports it.
type CollectionInfo struct {
	// Name is the collection's name.
	Name string `json:"name"`
	// Options are the collection's options as the server echoes them (JSON object).
	Options json.RawMessage `json:"options,omitempty"`
}

// FindCollections lists the keyspace's collections with their options.
func (c *Client) FindCollections(ctx context.Context) ([]CollectionInfo, error) {
	env, err := c.command(ctx, "", "findCollections", map[string]any{"options": map[string]any{"explain": true}})
	if err != nil {
		return nil, fmt.Errorf("find collections: %w", err)
	}
	if len(env.Errors) > 0 {
		return nil, fmt.Errorf("find collections: %w", classifyAll(env.Errors))
	}
	var st struct {
		Collections []json.RawMessage `json:"collections"`
	}
	if err := json.Unmarshal(env.Status, &st); err != nil {
		return nil, fault.Retry(fault.Transient, fmt.Errorf("find collections: decode status: %w", err))
	}
	out := make([]CollectionInfo, 0, len(st.Collections))
	for _, raw := range st.Collections {
		var ci CollectionInfo
		if len(raw) > 0 && raw[0] == '"' { // a server that ignored explain
			if err := json.Unmarshal(raw, &ci.Name); err != nil {
				return nil, fault.Retry(fault.Transient, fmt.Errorf("find collections: decode name: %w", err))
			}
		} else if err := json.Unmarshal(raw, &ci); err != nil {
			return nil, fault.Retry(fault.Transient, fmt.Errorf("find collections: decode entry: %w", err))
		}
		out = append(out, ci)
	}
	return out, nil
}

// DeleteCollection drops collection name and its documents. Deleting a missing collection
// is success.
func (c *Client) DeleteCollection(ctx context.Context, name string) error {
	if !nameRE.MatchString(name) {
		return fault.Permanentf(fault.Rejected, "delete collection %q: invalid name (1-48 letters, digits or underscores)", name)
	}
	env, err := c.command(ctx, "", "deleteCollection", map[string]any{"name": name})
	if err != nil {
		return fmt.Errorf("delete collection %s: %w", name, err)
	}
	if len(env.Errors) > 0 {
		return fmt.Errorf("delete collection %s: %w", name, classifyAll(env.Errors))
	}
	return nil
}
