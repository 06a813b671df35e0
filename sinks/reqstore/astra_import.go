package reqstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// importItem is one record Import will write (or found already stored).
type importItem struct {
	file    string
	id      string // _id
	doc     any    // featureDoc or versionDoc
	audit   *storedAudit
	skipped bool
	version int64 // requirements version id, 0 for a feature request
	feature string
}

// Import implements Store, without a transaction: it first reads and checks every file
// (parse, checksum warning, conflicts with stored records and within files) and writes
// nothing if any fails. Then it writes each record (its audit entry embedded) and its audit
// document idempotently. If that phase fails half way, the error says so and running the
// same Import again completes it: stored records are skipped and their audit documents
// written if missing. A record written concurrently by someone else with other content fails
// the import at that record.
func (s *AstraStore) Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error) {
	if err := s.check(); err != nil {
		return requirements.ImportReport{}, err
	}
	rep := requirements.ImportReport{Versions: []int64{}, Features: []string{}}
	var items []importItem
	seen := map[string]string{} // _id → content of an earlier file of this import
	for _, file := range files {
		it, content, err := s.planImport(ctx, file, &rep)
		if err != nil {
			return requirements.ImportReport{}, err
		}
		if prev, dup := seen[it.id]; dup {
			if prev != content {
				return requirements.ImportReport{}, fault.Permanent(fault.Rejected, fmt.Errorf("import %s: %s appears twice with different content", file.Name, it.id))
			}
			it.skipped = true
		}
		seen[it.id] = content
		items = append(items, it)
	}
	for i, it := range items {
		if !it.skipped {
			raw, err := encodeDoc(it.doc)
			if err != nil {
				return requirements.ImportReport{}, err
			}
			if err := s.c.InsertOne(ctx, s.coll, raw); err != nil {
				if !isAlreadyExists(err) {
					return requirements.ImportReport{}, fmt.Errorf("import %s (%d of %d files written; run the import again to complete it): %w", it.file, i, len(items), err)
				}
				// Written since the check: by an earlier attempt of this call's retry, or
				// concurrently. Same content is fine.
				again, _, perr := s.planImport(ctx, requirements.LegacyFile{Name: it.file, Data: files[i].Data}, &requirements.ImportReport{})
				if perr != nil || !again.skipped {
					return requirements.ImportReport{}, fault.Permanent(fault.Rejected, fmt.Errorf("import %s: %s was stored concurrently with other content (%v)", it.file, it.id, perr))
				}
				it.skipped, it.audit = true, again.audit
			}
		}
		if it.audit != nil {
			if err := s.insertAudit(ctx, it.audit); err != nil {
				return requirements.ImportReport{}, fmt.Errorf("import %s (run the import again to complete it): %w", it.file, err)
			}
		}
		switch {
		case it.skipped:
			rep.Skipped = append(rep.Skipped, it.file)
		case it.version != 0:
			rep.Versions = append(rep.Versions, it.version)
		default:
			rep.Features = append(rep.Features, it.feature)
		}
	}
	return rep, nil
}

// planImport parses and checks one file against the store. For a record already stored with
// the same content it returns skipped with the stored audit entry. content identifies the
// record's content for duplicate detection.
func (s *AstraStore) planImport(ctx context.Context, file requirements.LegacyFile, rep *requirements.ImportReport) (importItem, string, error) {
	kind, err := requirements.ClassifyLegacy(file.Data)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	reason := "imported from " + file.Name
	if kind == "requirements" {
		v, err := requirements.ParseVersion(file.Data)
		if err != nil {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		ok, sum, err := v.VerifyChecksum()
		if err != nil {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		if !ok {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: stored checksum %s, content gives %s", file.Name, v.Checksum, sum))
		}
		content := string(v.JSON())
		it := importItem{file: file.Name, id: versionDocID(v.VersionID), version: v.VersionID}
		var stored versionDoc
		found, err := s.findByID(ctx, it.id, kindVersion, &stored)
		if err != nil {
			return importItem{}, "", fmt.Errorf("import %s: %w", file.Name, err)
		}
		if found {
			if stored.Document != content {
				return importItem{}, "", fault.Permanent(fault.Rejected, fmt.Errorf("import %s: version %d is stored with different content", file.Name, v.VersionID))
			}
			it.skipped, it.audit = true, stored.Audit
			return it, content, nil
		}
		if v.Timestamp == "" {
			return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: metadata.timestamp is missing", file.Name))
		}
		it.audit = s.newAudit(requirements.ChainEntry(nil, requirements.AuditEntry{Timestamp: v.Timestamp, RequestID: strconv.FormatInt(v.VersionID, 10), NewStatus: requirements.NewStatusSubmitted, Admin: requirements.ImportActor, Reason: &reason}), "")
		it.doc = newVersionDoc(v, "", it.audit)
		return it, content, nil
	}
	f, err := requirements.ParseLegacyFeatureRequest(file.Data)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	content := string(f.LegacyJSON())
	it := importItem{file: file.Name, id: f.RequestID, feature: f.RequestID}
	var stored featureDoc
	found, err := s.findByID(ctx, it.id, kindFeature, &stored)
	if err != nil {
		return importItem{}, "", fmt.Errorf("import %s: %w", file.Name, err)
	}
	if found {
		if string(stored.LegacyJSON()) != content {
			return importItem{}, "", fault.Permanent(fault.Rejected, fmt.Errorf("import %s: feature request %s is stored with different content", file.Name, f.RequestID))
		}
		it.skipped, it.audit = true, stored.Audit
		return it, content, nil
	}
	at := f.CreatedAt
	if f.UpdatedAt != nil {
		at = *f.UpdatedAt
	}
	it.audit = s.newAudit(requirements.ChainEntry(nil, requirements.AuditEntry{Timestamp: at, RequestID: f.RequestID, NewStatus: string(f.Status), Admin: requirements.ImportActor, Reason: &reason}), "")
	doc, err := newFeatureDoc(f, "", it.audit)
	if err != nil {
		return importItem{}, "", fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	it.doc = doc
	return it, content, nil
}
