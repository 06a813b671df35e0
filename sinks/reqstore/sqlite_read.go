package reqstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

type scanner interface{ Scan(dest ...any) error }

func scanFeature(row scanner) (requirements.FeatureRequest, error) {
	var f requirements.FeatureRequest
	var status string
	var updated, approved, reason sql.NullString
	if err := row.Scan(&f.RequestID, &f.Title, &f.Description, &f.Priority, &f.Requester, &status, &f.CreatedAt, &updated, &approved, &reason, &f.Version, &f.Key); err != nil {
		return requirements.FeatureRequest{}, err
	}
	f.Status = requirements.Status(status)
	f.UpdatedAt, f.ApprovedBy, f.RejectionReason = fromNull(updated), fromNull(approved), fromNull(reason)
	return f, nil
}

func fromNull(n sql.NullString) *string {
	if !n.Valid {
		return nil
	}
	return &n.String
}

func getFeature(ctx context.Context, q queryer, id string) (requirements.FeatureRequest, error) {
	f, err := scanFeature(q.QueryRowContext(ctx, `SELECT `+featureColumns+` FROM feature_requests WHERE request_id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.FeatureRequest{}, fmt.Errorf("feature request %s: %w", id, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.FeatureRequest{}, fmt.Errorf("read feature request %s: %w", id, err)
	}
	return f, nil
}

// CommandOutcome implements Store.
func (s *SQLiteStore) CommandOutcome(ctx context.Context, commandID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	var raw string
	err := s.r.QueryRowContext(ctx, `SELECT outcome FROM applied_commands WHERE command_id = ?`, commandID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.Outcome{}, fmt.Errorf("outcome of command %s: %w", commandID, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("read outcome of command %s: %w", commandID, err)
	}
	var out requirements.Outcome
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return requirements.Outcome{}, fmt.Errorf("decode outcome of command %s: %w", commandID, err)
	}
	return out, nil
}

// ListVersions implements Store.
func (s *SQLiteStore) ListVersions(ctx context.Context) ([]requirements.VersionInfo, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, `SELECT version_id, timestamp, author, checksum FROM requirements_versions ORDER BY version_id DESC`)
	if err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	defer rows.Close()
	out := []requirements.VersionInfo{}
	for rows.Next() {
		var v requirements.VersionInfo
		if err := rows.Scan(&v.VersionID, &v.Timestamp, &v.Author, &v.Checksum); err != nil {
			return nil, fmt.Errorf("list requirements versions: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list requirements versions: %w", err)
	}
	return out, nil
}

// LatestVersion implements Store.
func (s *SQLiteStore) LatestVersion(ctx context.Context) (requirements.Version, error) {
	return s.version(ctx, `SELECT document FROM requirements_versions ORDER BY version_id DESC LIMIT 1`, "latest")
}

// GetVersion implements Store.
func (s *SQLiteStore) GetVersion(ctx context.Context, id int64) (requirements.Version, error) {
	return s.version(ctx, `SELECT document FROM requirements_versions WHERE version_id = ?`, strconv.FormatInt(id, 10), id)
}

func (s *SQLiteStore) version(ctx context.Context, query, what string, args ...any) (requirements.Version, error) {
	if err := s.check(); err != nil {
		return requirements.Version{}, err
	}
	var doc string
	err := s.r.QueryRowContext(ctx, query, args...).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return requirements.Version{}, fmt.Errorf("requirements version %s: %w", what, requirements.ErrNotFound)
	}
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %s: %w", what, err)
	}
	v, err := requirements.ParseVersion([]byte(doc))
	if err != nil {
		return requirements.Version{}, fmt.Errorf("read requirements version %s: %w", what, err)
	}
	return v, nil
}

// ListFeatures implements Store.
func (s *SQLiteStore) ListFeatures(ctx context.Context, q requirements.FeatureQuery) (requirements.FeaturePage, error) {
	if err := s.check(); err != nil {
		return requirements.FeaturePage{}, err
	}
	limit := clampLimit(q.Limit, requirements.DefaultFeatureLimit)
	afterUS, afterID := int64(1<<62), "\U0010FFFF"
	if q.Cursor != "" {
		var err error
		if afterUS, afterID, err = decodeCursor(q.Cursor); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
	}
	query := `SELECT ` + featureColumns + `, created_us FROM feature_requests WHERE (created_us, request_id) < (?, ?)`
	args := []any{afterUS, afterID}
	if q.Status != "" {
		query += ` AND status = ?`
		args = append(args, string(q.Status))
	}
	query += ` ORDER BY created_us DESC, request_id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	defer rows.Close()
	page := requirements.FeaturePage{Features: []requirements.FeatureRequest{}}
	var lastUS int64
	for rows.Next() {
		var f requirements.FeatureRequest
		var status string
		var updated, approved, reason sql.NullString
		var us int64
		if err := rows.Scan(&f.RequestID, &f.Title, &f.Description, &f.Priority, &f.Requester, &status, &f.CreatedAt, &updated, &approved, &reason, &f.Version, &f.Key, &us); err != nil {
			return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
		}
		if len(page.Features) == limit {
			last := page.Features[limit-1]
			page.NextCursor = encodeCursor(lastUS, last.RequestID)
			break
		}
		f.Status = requirements.Status(status)
		f.UpdatedAt, f.ApprovedBy, f.RejectionReason = fromNull(updated), fromNull(approved), fromNull(reason)
		page.Features = append(page.Features, f)
		lastUS = us
	}
	if err := rows.Err(); err != nil {
		return requirements.FeaturePage{}, fmt.Errorf("list feature requests: %w", err)
	}
	return page, nil
}

// GetFeature implements Store.
func (s *SQLiteStore) GetFeature(ctx context.Context, requestID string) (requirements.FeatureRequest, error) {
	if err := s.check(); err != nil {
		return requirements.FeatureRequest{}, err
	}
	return getFeature(ctx, s.r, requestID)
}

const auditColumns = `seq, timestamp, request_id, old_status, new_status, admin, reason, prev_checksum, checksum`

func scanAudit(rows *sql.Rows) (requirements.AuditEntry, error) {
	var e requirements.AuditEntry
	var reason sql.NullString
	if err := rows.Scan(&e.Seq, &e.Timestamp, &e.RequestID, &e.OldStatus, &e.NewStatus, &e.Admin, &reason, &e.PrevChecksum, &e.Checksum); err != nil {
		return requirements.AuditEntry{}, err
	}
	e.Reason = fromNull(reason)
	return e, nil
}

func collectAudit(rows *sql.Rows, err error) ([]requirements.AuditEntry, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []requirements.AuditEntry{}
	for rows.Next() {
		e, err := scanAudit(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ListAudit implements Store.
func (s *SQLiteStore) ListAudit(ctx context.Context, requestID string, limit int) ([]requirements.AuditEntry, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	limit = clampLimit(limit, requirements.DefaultAuditLimit)
	var out []requirements.AuditEntry
	var err error
	if requestID == "" {
		out, err = collectAudit(s.r.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit ORDER BY line DESC LIMIT ?`, limit))
	} else {
		out, err = collectAudit(s.r.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit WHERE request_id = ? ORDER BY line DESC LIMIT ?`, requestID, limit))
	}
	if err != nil {
		return nil, fmt.Errorf("list audit entries of %q: %w", requestID, err)
	}
	return out, nil
}

// VerifyAudit implements Store. It reads the whole trail and every record's version in one
// read transaction, so it sees one consistent snapshot.
func (s *SQLiteStore) VerifyAudit(ctx context.Context) (requirements.Integrity, error) {
	if err := s.check(); err != nil {
		return requirements.Integrity{}, err
	}
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	entries, err := collectAudit(tx.QueryContext(ctx, `SELECT `+auditColumns+` FROM audit ORDER BY line`))
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read entries: %w", err)
	}
	_, problems := requirements.VerifyChain(entries)
	heads := map[string]int64{}
	for _, e := range entries {
		heads[e.RequestID] = max(heads[e.RequestID], e.Seq)
	}
	// Each feature request has one entry per version; each requirements version one entry.
	rows, err := tx.QueryContext(ctx, `SELECT request_id, version FROM feature_requests UNION ALL SELECT CAST(version_id AS TEXT), 1 FROM requirements_versions ORDER BY 1`)
	if err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var version int64
		if err := rows.Scan(&id, &version); err != nil {
			return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
		}
		if heads[id] != version {
			problems = append(problems, fmt.Sprintf("Request %s: audit trail ends at seq %d, the record is at version %d", id, heads[id], version))
		}
	}
	if err := rows.Err(); err != nil {
		return requirements.Integrity{}, fmt.Errorf("verify audit: read records: %w", err)
	}
	if problems == nil {
		problems = []string{}
	}
	return requirements.Integrity{Valid: len(problems) == 0, Problems: problems, Entries: len(entries)}, nil
}
