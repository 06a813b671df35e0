package reqstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
)

// ApplyCommand implements Store without a multi-document transaction:
//
//  1. An apply marker for cmd.CommandID or msgID returns the recorded outcome.
//  2. The record cmd names is read. If it was written by this very command (its
//     last_command_id, or a requirements version's command_id), an earlier attempt stopped
//     after its commit point: the outcome is rebuilt from the record and step 5 follows.
//  3. Apply runs. A refusal goes to step 5.
//  4. The new record, carrying its audit entry and the command id, is written conditionally:
//     findOneAndReplace on {_id, version: previous}, or insertOne for a new record. A miss
//     means a concurrent writer of the same key: re-read and go to step 2, at most
//     AstraConfig.ConflictRetries times, then a transient error. Then the audit entry is
//     inserted as its own document (with the previous entry, in case its writer stopped
//     before doing so); DOCUMENT_ALREADY_EXISTS with the same checksum is success.
//  5. The markers cmd:<command_id> and marker:<msgID> are inserted with the outcome.
//
// A crash anywhere leaves either nothing, or a committed record whose audit entry and
// markers the redelivery completes; the record is never written twice. An error is transient
// unless marked fault.Permanent; the call may be retried. It blocks for 3 to 7 Data API round
// trips.
func (s *AstraStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var markers []string
	if cmd.CommandID != "" {
		markers = append(markers, "cmd:"+cmd.CommandID)
	}
	if msgID != "" {
		markers = append(markers, "marker:"+msgID)
	}
	if out, ok, err := s.recorded(ctx, cmd, msgID, markers); err != nil || ok {
		return out, err
	}
	out := requirements.Outcome{CommandID: cmd.CommandID, Type: cmd.Type, Key: cmd.Key()}
	if err := s.v.Check(cmd); err != nil {
		if !errors.As(err, &out.Refusal) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: validate: %w", cmd.CommandID, err)
		}
		return s.writeMarkers(ctx, cmd, msgID, markers, out)
	}
	for attempt := 0; ; attempt++ {
		var err error
		if cmd.Type == requirements.TypeSubmitRequirements {
			err = s.applyVersion(ctx, cmd, &out)
		} else {
			err = s.applyFeature(ctx, cmd, &out)
		}
		if errors.Is(err, errConflict) {
			if attempt < s.conflictRetries {
				continue
			}
			return requirements.Outcome{}, fault.Retry(fault.Transient, fmt.Errorf("apply command %s: lost %d conditional writes to concurrent writers: %w", cmd.CommandID, attempt+1, err))
		}
		if err != nil {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		return s.writeMarkers(ctx, cmd, msgID, markers, out)
	}
}

// recorded looks the markers up. When one exists it returns its outcome with AlreadyApplied
// set, after inserting the other marker if it belongs to the same command and is missing
// (an earlier attempt stopped between the two).
func (s *AstraStore) recorded(ctx context.Context, cmd requirements.Command, msgID string, markers []string) (requirements.Outcome, bool, error) {
	if len(markers) == 0 {
		return requirements.Outcome{}, false, nil
	}
	ids := make([]any, len(markers))
	for i, m := range markers {
		ids[i] = m
	}
	docs, _, err := s.c.FindPage(ctx, s.coll, map[string]any{"_id": map[string]any{"$in": ids}}, dataapi.FindOptions{})
	if err != nil {
		return requirements.Outcome{}, false, fmt.Errorf("apply command %s: read apply markers: %w", cmd.CommandID, err)
	}
	found := map[string]markerDoc{}
	for _, raw := range docs {
		var m markerDoc
		if err := json.Unmarshal(raw, &m); err != nil {
			return requirements.Outcome{}, false, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode apply marker: %w", cmd.CommandID, err))
		}
		found[m.ID] = m
	}
	if len(found) == 0 {
		return requirements.Outcome{}, false, nil
	}
	var m markerDoc
	for _, id := range markers { // the command's own marker first
		if d, ok := found[id]; ok {
			m = d
			break
		}
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(m.Outcome), &out); err != nil {
		return requirements.Outcome{}, false, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome: %w", cmd.CommandID, err))
	}
	if out.CommandID == cmd.CommandID && len(found) < len(markers) {
		if _, err := s.writeMarkers(ctx, cmd, msgID, markers, out); err != nil {
			return requirements.Outcome{}, false, err
		}
	}
	out.AlreadyApplied = true
	return out, true, nil
}

// writeMarkers inserts the apply markers of out. A marker already stored with another
// outcome (a concurrent attempt of the same message recorded first) wins: its outcome is
// returned with AlreadyApplied set.
func (s *AstraStore) writeMarkers(ctx context.Context, cmd requirements.Command, msgID string, markers []string, out requirements.Outcome) (requirements.Outcome, error) {
	if len(markers) == 0 {
		return out, nil
	}
	body, err := json.Marshal(out)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: encode outcome: %w", cmd.CommandID, err)
	}
	at := requirements.FormatTimestamp(s.now())
	for _, id := range markers {
		doc, err := encodeDoc(markerDoc{ID: id, Kind: kindMarker, CommandID: cmd.CommandID, MsgID: msgID, Outcome: string(body), AppliedAt: at})
		if err != nil {
			return requirements.Outcome{}, err
		}
		err = s.c.InsertOne(ctx, s.coll, doc)
		if err == nil {
			continue
		}
		if !isAlreadyExists(err) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: write apply marker %s: %w", cmd.CommandID, id, err)
		}
		var prev markerDoc
		ok, rerr := s.findByID(ctx, id, kindMarker, &prev)
		if rerr != nil || !ok {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: apply marker %s exists but cannot be read (%v): %w", cmd.CommandID, id, rerr, err)
		}
		if prev.Outcome == string(body) {
			continue // our own earlier attempt
		}
		var rec requirements.Outcome
		if err := json.Unmarshal([]byte(prev.Outcome), &rec); err != nil {
			return requirements.Outcome{}, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome of %s: %w", cmd.CommandID, id, err))
		}
		rec.AlreadyApplied = true
		return rec, nil
	}
	return out, nil
}

// insertAudit stores entries as audit documents. The last one is the caller's own: if it is
// already stored, it must carry the same checksum (an earlier attempt wrote it); the others
// are previous entries written again in case their writer stopped before storing them.
func (s *AstraStore) insertAudit(ctx context.Context, entries ...*storedAudit) error {
	docs := make([]json.RawMessage, 0, len(entries))
	for _, a := range entries {
		d, err := encodeDoc(auditDoc{ID: auditDocID(a.RequestID, a.Seq), Kind: kindAudit, storedAudit: *a})
		if err != nil {
			return err
		}
		docs = append(docs, d)
	}
	errs, err := s.c.InsertMany(ctx, s.coll, docs)
	if err != nil {
		return fmt.Errorf("append audit entries: %w", err)
	}
	for i, e := range errs {
		if e == nil {
			continue
		}
		if !isAlreadyExists(e) {
			return fmt.Errorf("append audit entry %s/%d: %w", entries[i].RequestID, entries[i].Seq, e)
		}
		if i != len(entries)-1 {
			continue // a previous entry already there, as it should be
		}
		id := auditDocID(entries[i].RequestID, entries[i].Seq)
		var got auditDoc
		ok, rerr := s.findByID(ctx, id, kindAudit, &got)
		if rerr != nil {
			return fmt.Errorf("append audit entry %s: %w", id, rerr)
		}
		if !ok || got.Checksum != entries[i].Checksum {
			return fault.Permanent(fault.Rejected, fmt.Errorf("append audit entry %s: a different entry is stored under its id (the trail was edited)", id))
		}
	}
	return nil
}

// applyFeature runs steps 2-4 for a feature-request command, filling out. It returns
// errConflict when a concurrent writer got there first.
func (s *AstraStore) applyFeature(ctx context.Context, cmd requirements.Command, out *requirements.Outcome) error {
	var cur featureDoc
	found, err := s.findByID(ctx, cmd.Key(), kindFeature, &cur)
	if err != nil {
		return err
	}
	if found && cur.LastCommandID == cmd.CommandID && cur.Audit != nil {
		// Committed by an earlier attempt that stopped before its audit document or markers.
		if err := s.insertAudit(ctx, cur.Audit); err != nil {
			return err
		}
		f, e := cur.FeatureRequest, cur.Audit.entry()
		out.Applied, out.Refusal, out.Feature, out.Audit = true, nil, &f, &e
		return nil
	}
	var st requirements.State
	var prev *requirements.AuditEntry
	if found {
		f := cur.FeatureRequest
		st.Feature = &f
		if cur.Audit != nil {
			p := cur.Audit.entry()
			prev = &p
		}
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		out.Refusal = nil
		if errors.As(err, &out.Refusal) {
			out.Applied, out.Feature, out.Audit = false, nil, nil
			return nil
		}
		return err
	}
	chained := s.newAudit(requirements.ChainEntry(prev, entry), cmd.CommandID)
	doc, err := newFeatureDoc(*next.Feature, cmd.CommandID, chained)
	if err != nil {
		return fault.Permanent(fault.Validation, err)
	}
	raw, err := encodeDoc(doc)
	if err != nil {
		return err
	}
	if !found {
		if err := s.c.InsertOne(ctx, s.coll, raw); err != nil {
			if isAlreadyExists(err) {
				return errConflict
			}
			return fmt.Errorf("insert feature request %s: %w", doc.ID, err)
		}
	} else {
		res, err := s.c.FindOneAndReplace(ctx, s.coll, map[string]any{"_id": doc.ID, "version": cur.Version}, raw, false)
		if err != nil {
			return fmt.Errorf("replace feature request %s at version %d: %w", doc.ID, cur.Version, err)
		}
		if res.Matched == 0 {
			return errConflict
		}
	}
	toStore := []*storedAudit{chained}
	if found && cur.Audit != nil {
		toStore = []*storedAudit{cur.Audit, chained}
	}
	if err := s.insertAudit(ctx, toStore...); err != nil {
		return err
	}
	e := chained.entry()
	out.Applied, out.Refusal, out.Feature, out.Audit = true, nil, next.Feature, &e
	return nil
}

// applyVersion runs steps 2-4 for a requirements submission, filling out. It returns
// errConflict when a concurrent submission took the same version id.
func (s *AstraStore) applyVersion(ctx context.Context, cmd requirements.Command, out *requirements.Outcome) error {
	var mine versionDoc
	raw, err := s.c.FindOne(ctx, s.coll, map[string]any{"kind": kindVersion, "command_id": cmd.CommandID}, nil)
	switch {
	case err == nil:
		if err := json.Unmarshal(raw, &mine); err != nil {
			return fmt.Errorf("decode requirements version of command %s: %w", cmd.CommandID, err)
		}
		v, err := mine.version()
		if err != nil {
			return err
		}
		if mine.Audit == nil {
			return fault.Permanent(fault.Rejected, fmt.Errorf("requirements version %d has no audit entry", mine.VersionID))
		}
		if err := s.insertAudit(ctx, mine.Audit); err != nil {
			return err
		}
		e := mine.Audit.entry()
		out.Applied, out.Refusal, out.Version, out.Audit = true, nil, &v, &e
		return nil
	case !errors.Is(err, dataapi.ErrNotFound):
		return fmt.Errorf("read requirements version of command %s: %w", cmd.CommandID, err)
	}
	latest, found, err := s.latestVersionDoc(ctx, map[string]any{"document": 0})
	if err != nil {
		return err
	}
	var st requirements.State
	if found {
		st.LatestVersionID = latest.VersionID
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		out.Refusal = nil
		if errors.As(err, &out.Refusal) {
			out.Applied, out.Version, out.Audit = false, nil, nil
			return nil
		}
		return err
	}
	chained := s.newAudit(requirements.ChainEntry(nil, entry), cmd.CommandID)
	doc, err := encodeDoc(newVersionDoc(*next.Version, cmd.CommandID, chained))
	if err != nil {
		return err
	}
	if err := s.c.InsertOne(ctx, s.coll, doc); err != nil {
		if isAlreadyExists(err) {
			return errConflict
		}
		return fmt.Errorf("insert requirements version %d: %w", next.Version.VersionID, err)
	}
	toStore := []*storedAudit{chained}
	if found && latest.Audit != nil {
		toStore = []*storedAudit{latest.Audit, chained}
	}
	if err := s.insertAudit(ctx, toStore...); err != nil {
		return err
	}
	e := chained.entry()
	out.Applied, out.Refusal, out.Version, out.Audit = true, nil, next.Version, &e
	return nil
}

func (s *AstraStore) latestVersionDoc(ctx context.Context, projection any) (versionDoc, bool, error) {
	raw, err := s.c.FindOne(ctx, s.coll, map[string]any{"kind": kindVersion}, &dataapi.FindOneOptions{Sort: map[string]any{"version_id": -1}, Projection: projection})
	if errors.Is(err, dataapi.ErrNotFound) {
		return versionDoc{}, false, nil
	}
	if err != nil {
		return versionDoc{}, false, fmt.Errorf("read latest requirements version: %w", err)
	}
	var d versionDoc
	if err := json.Unmarshal(raw, &d); err != nil {
		return versionDoc{}, false, fmt.Errorf("decode latest requirements version: %w", err)
	}
	return d, true, nil
}
