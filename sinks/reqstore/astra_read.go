package reqstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// CommandOutcome implements Store. It blocks for one round trip.
func (s *AstraStore) CommandOutcome(ctx context.Context, commandID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var m markerDoc
	ok, err := s.findByID(ctx, "cmd:"+commandID, kindMarker, &m)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("read outcome of command %s: %w", commandID, err)
	}
	if !ok {
		return requirements.Outcome{}, fmt.Errorf("outcome of command %s: %w", commandID, requirements.ErrNotFound)
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(m.Outcome), &out); err != nil {
		return requirements.Outcome{}, fmt.Errorf("decode outcome of command %s: %w", commandID, err)
	}
	return out, nil
}

// findDesc returns up to n documents (n <= 0: all) matching filter, sorted by field
// descending, starting below after (nil: from the top). A sorted find returns one page and no
// page state, so it pages with a "$lt" condition on field, which must be unique among the
// matches. Each page sorts its candidates in memory on the server (at most 10,000).
func (s *AstraStore) findDesc(ctx context.Context, filter map[string]any, field string, after any, n int, projection any) ([]json.RawMessage, error) {
	var out []json.RawMessage
	for n <= 0 || len(out) < n {
		f := maps.Clone(filter)
		if after != nil {
			f[field] = map[string]any{"$lt": after}
		}
		opts := dataapi.FindOptions{Sort: map[string]any{field: -1}, Projection: projection}
		if n > 0 {
			opts.Limit = n - len(out)
		}
		docs, _, err := s.c.FindPage(ctx, s.coll, f, opts)
		if err != nil {
			return nil, err
		}
		if len(docs) == 0 {
			break
		}
		out = append(out, docs...)
		var last map[string]json.RawMessage
		if err := json.Unmarshal(docs[len(docs)-1], &last); err != nil {
			return nil, fmt.Errorf("decode page: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(last[field]))
		dec.UseNumber()
		after = nil
		if err := dec.Decode(&after); err != nil || after == nil {
			return nil, fmt.Errorf("page ends with a document without %s", field)
		}
	}
	return out, nil
}

// ListVersions implements Store. It pages through the versions, newest first.
func (s *AstraStore) ListVersions(ctx context.Context) ([]requirements.VersionInfo, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	docs, err := s.findDesc(ctx, map[string]any{"kind": kindVersion}, "version_id", nil, 0, map[string]any{"document": 0, "audit": 0})
	if err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	out := make([]requirements.VersionInfo, 0, len(docs))
	for _, raw := range docs {
		var d versionDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("list requirements versions: %w", err)
		}
		out = append(out, requirements.VersionInfo{VersionID: d.VersionID, Timestamp: d.Timestamp, Author: d.Author, Checksum: d.Checksum})
	}
	return out, nil
}

// LatestVersion implements Store. It blocks for one round trip.
func (s *AstraStore) LatestVersion(ctx context.Context) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	d, ok, err := s.latestVersionDoc(ctx, nil)
	if err != nil {
		return requirements.Version{}, err
	}
	if !ok {
		return requirements.Version{}, fmt.Errorf("requirements version latest: %w", requirements.ErrNotFound)
	}
	return d.version()
}

// GetVersion implements Store. It blocks for one round trip.
func (s *AstraStore) GetVersion(ctx context.Context, id int64) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	var d versionDoc
	ok, err := s.findByID(ctx, versionDocID(id), kindVersion, &d)
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %d: %w", id, err)
	}
	if !ok {
		return requirements.Version{}, fmt.Errorf("requirements version %d: %w", id, requirements.ErrNotFound)
	}
	return d.version()
}

// ListFeatures implements Store. The cursor is the same as SQLiteStore's; a page costs one
// round trip per server page (the Data API's page size, 20 or 50) plus one.
func (s *AstraStore) ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	if err := s.check(); err != nil {
		return requirements.FeaturePage{}, err
	}
	limit := clampLimit(q.Limit, requirements.DefaultFeatureLimit)
	var after any
	if q.Cursor != "" {
		us, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		after = featureSortKey(us, id)
	}
	filter := map[string]any{"kind": kindFeature}
	if q.Status != "" {
		filter["status"] = string(q.Status)
	}
	docs, err := s.findDesc(ctx, filter, "sort_key", after, limit+1, map[string]any{"audit": 0})
	if err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	page := requirements.FeaturePage{Features: []requirements.FeatureRequest{}}
	for _, raw := range docs[:min(limit, len(docs))] {
		var d featureDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		page.Features = append(page.Features, d.FeatureRequest)
	}
	if len(docs) > limit {
		last := page.Features[limit-1]
		created, err := requirements.ParseTimestamp(last.CreatedAt)
		if err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		page.NextCursor = encodeCursor(created.UnixMicro(), last.RequestID)
	}
	return page, nil
}

// GetFeature implements Store. It blocks for one round trip.
func (s *AstraStore) GetFeature(ctx context.Context, requestID string) (requirements.FeatureRequest, error) {
	if err := s.check(); err != nil {
		return requirements.FeatureRequest{}, err
	}
	var d featureDoc
	ok, err := s.findByID(ctx, requestID, kindFeature, &d)
	if err != nil {
		return requirements.FeatureRequest{}, fmt.Errorf("read feature request %s: %w", requestID, err)
	}
	if !ok {
		return requirements.FeatureRequest{}, fmt.Errorf("feature request %s: %w", requestID, requirements.ErrNotFound)
	}
	return d.FeatureRequest, nil
}

// ListAudit implements Store. For one request the order is seq descending; for all requests
// it is the append order (the appending processes' clocks, strictly increasing within one
// process).
func (s *AstraStore) ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	limit = clampLimit(limit, requirements.DefaultAuditLimit)
	filter, field := map[string]any{"kind": kindAudit}, "line"
	if requestID != "" {
		filter["request_id"], field = requestID, "seq"
	}
	docs, err := s.findDesc(ctx, filter, field, nil, limit, nil)
	if err != nil {
		return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
	}
	out := make([]requirements.AuditEntry, 0, len(docs))
	for _, raw := range docs {
		var d auditDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
		}
		out = append(out, d.entry())
	}
	return out, nil
}

// VerifyAudit implements Store. It reads every audit document (unsorted pages, no sort
// limit), orders them by request and seq, and runs VerifyChain, so "Line N" counts in that
// order; then it compares each record's version with the last seq of its chain. It is not a
// snapshot: a command committed but not yet through its audit write shows as a short trail
// until it completes.
func (s *AstraStore) VerifyAudit(ctx context.Context) (requirements.Integrity, error) {
	if err := s.check(); err != nil {
		return requirements.Integrity{}, err
	}
	var entries []requirements.AuditEntry
	err := s.c.Find(ctx, s.coll, map[string]any{"kind": kindAudit}, dataapi.FindOptions{}, func(raw json.RawMessage) error {
		var d auditDoc
		if err := json.Unmarshal(raw, &d); err != nil {
			return err
		}
		entries = append(entries, d.entry())
		return nil
	})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read entries: %w", err)
	}
	slices.SortFunc(entries, func(a, b requirements.AuditEntry) int {
		return cmp.Or(cmp.Compare(a.RequestID, b.RequestID), cmp.Compare(a.Seq, b.Seq))
	})
	_, problems := requirements.VerifyChain(entries)
	heads := map[string]int64{}
	for _, e := range entries {
		heads[e.RequestID] = max(heads[e.RequestID], e.Seq)
	}
	type record struct {
		id      string
		version int64
	}
	var records []record
	err = s.c.Find(ctx, s.coll, map[string]any{"kind": map[string]any{"$in": []any{kindFeature, kindVersion}}},
		dataapi.FindOptions{Projection: map[string]any{"kind": 1, "request_id": 1, "version": 1, "version_id": 1}},
		func(raw json.RawMessage) error {
			var d struct {
				Kind      string `json:"kind"`
				RequestID string `json:"request_id"`
				Version   int64  `json:"version"`
				VersionID int64  `json:"version_id"`
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			if d.Kind == kindVersion {
				records = append(records, record{strconv.FormatInt(d.VersionID, 10), 1})
			} else {
				records = append(records, record{d.RequestID, d.Version})
			}
			return nil
		})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	slices.SortFunc(records, func(a, b record) int { return cmp.Compare(a.id, b.id) })
	for _, r := range records {
		if heads[r.id] != r.version {
			problems = append(problems, fmt.Sprintf("Request %s: audit trail ends at seq %d, the record is at version %d", r.id, heads[r.id], r.version))
		}
	}
	if problems == nil {
		problems = []string{}
	}
	return requirements.Integrity{Valid: len(problems) == 0, Problems: problems, Entries: len(entries)}, nil
}
