package reqstore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// Import implements Store. It runs in one write transaction.
func (s *SQLiteStore) Import(ctx context.Context, files []requirements.LegacyFile) (requirements.ImportReport, error) {
	if err := s.check(); err != nil {
		return requirements.ImportReport{}, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return requirements.ImportReport{}, fmt.Errorf("import: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rep := requirements.ImportReport{Versions: []int64{}, Features: []string{}}
	for _, file := range files {
		kind, err := requirements.ClassifyLegacy(file.Data)
		if err != nil {
			return requirements.ImportReport{}, fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
		}
		if kind == "requirements" {
			err = s.importVersion(ctx, tx, file, &rep)
		} else {
			err = s.importFeature(ctx, tx, file, &rep)
		}
		if err != nil {
			return requirements.ImportReport{}, err
		}
	}
	if err := tx.Commit(); err != nil {
		return requirements.ImportReport{}, fmt.Errorf("import: commit: %w", err)
	}
	return rep, nil
}

func (s *SQLiteStore) importVersion(ctx context.Context, tx *sql.Tx, file requirements.LegacyFile, rep *requirements.ImportReport) error {
	v, err := requirements.ParseVersion(file.Data)
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	ok, sum, err := v.VerifyChecksum()
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	if !ok {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: stored checksum %s, content gives %s", file.Name, v.Checksum, sum))
	}
	var stored string
	err = tx.QueryRowContext(ctx, `SELECT document FROM requirements_versions WHERE version_id = ?`, v.VersionID).Scan(&stored)
	switch {
	case err == nil:
		if !bytes.Equal([]byte(stored), v.JSON()) {
			return fault.Permanent(fault.Rejected, fmt.Errorf("import %s: version %d is stored with different content", file.Name, v.VersionID))
		}
		rep.Skipped = append(rep.Skipped, file.Name)
		return nil
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	if v.Timestamp == "" {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: metadata.timestamp is missing", file.Name))
	}
	if err := insertVersion(ctx, tx, v); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	reason := "imported from " + file.Name
	if _, err := appendAudit(ctx, tx, requirements.AuditEntry{Timestamp: v.Timestamp, RequestID: strconv.FormatInt(v.VersionID, 10), NewStatus: requirements.NewStatusSubmitted, Admin: requirements.ImportActor, Reason: &reason}); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	rep.Versions = append(rep.Versions, v.VersionID)
	return nil
}

func (s *SQLiteStore) importFeature(ctx context.Context, tx *sql.Tx, file requirements.LegacyFile, rep *requirements.ImportReport) error {
	f, err := requirements.ParseLegacyFeatureRequest(file.Data)
	if err != nil {
		return fault.Permanent(fault.Validation, fmt.Errorf("import %s: %w", file.Name, err))
	}
	cur, err := getFeature(ctx, tx, f.RequestID)
	switch {
	case err == nil:
		if !bytes.Equal(cur.LegacyJSON(), f.LegacyJSON()) {
			return fault.Permanent(fault.Rejected, fmt.Errorf("import %s: feature request %s is stored with different content", file.Name, f.RequestID))
		}
		rep.Skipped = append(rep.Skipped, file.Name)
		return nil
	case !errors.Is(err, requirements.ErrNotFound):
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	if err := writeFeature(ctx, tx, f, 0); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	at := f.CreatedAt
	if f.UpdatedAt != nil {
		at = *f.UpdatedAt
	}
	reason := "imported from " + file.Name
	if _, err := appendAudit(ctx, tx, requirements.AuditEntry{Timestamp: at, RequestID: f.RequestID, NewStatus: string(f.Status), Admin: requirements.ImportActor, Reason: &reason}); err != nil {
		return fmt.Errorf("import %s: %w", file.Name, err)
	}
	rep.Features = append(rep.Features, f.RequestID)
	return nil
}
