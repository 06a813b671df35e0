package reqstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// ApplyCommand implements Store. It blocks for one write transaction (queued behind other
// writers of this process; across processes SQLite's lock waits up to 5 s).
func (s *SQLiteStore) ApplyCommand(ctx context.Context, cmd requirements.Command, msgID string) (requirements.Outcome, error) {
	if err := s.check(); err != nil {
		return requirements.Outcome{}, err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: begin: %w", cmd.CommandID, err)
	}
	defer func() { _ = tx.Rollback() }()
	out, err := s.applyIn(ctx, tx, cmd, msgID, false)
	if err != nil {
		return requirements.Outcome{}, err
	}
	if err := tx.Commit(); err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: commit: %w", cmd.CommandID, err)
	}
	return out, nil
}

// ApplyCommands implements BatchApplier: every command in one write transaction (one synced
// commit for the whole batch), each inside its own savepoint, so a command that fails is rolled
// back alone and the others commit. It blocks for that transaction, queued behind other writers
// like ApplyCommand.
func (s *SQLiteStore) ApplyCommands(ctx context.Context, cmds []requirements.PendingCommand) []requirements.BatchResult {
	res := make([]requirements.BatchResult, len(cmds))
	fail := func(err error) []requirements.BatchResult {
		for i := range res {
			res[i] = requirements.BatchResult{Err: err}
		}
		return res
	}
	if err := s.check(); err != nil {
		return fail(err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fail(fmt.Errorf("apply %d commands: begin: %w", len(cmds), err))
	}
	defer func() { _ = tx.Rollback() }()
	stx := newStmtTx(tx)
	for i, c := range cmds {
		if _, err := tx.ExecContext(ctx, `SAVEPOINT cmd`); err != nil {
			return fail(fmt.Errorf("apply %d commands: savepoint: %w", len(cmds), err))
		}
		out, err := s.applyIn(ctx, stx, c.Command, c.MsgID, c.Checked)
		if err != nil {
			if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO cmd`); rerr != nil {
				return fail(fmt.Errorf("apply %d commands: roll back %s: %w", len(cmds), c.Command.CommandID, rerr))
			}
			res[i].Err = err
		} else {
			res[i].Outcome = out
		}
		if _, err := tx.ExecContext(ctx, `RELEASE cmd`); err != nil {
			return fail(fmt.Errorf("apply %d commands: release savepoint: %w", len(cmds), err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("apply %d commands: commit: %w", len(cmds), err))
	}
	return res
}

// applyIn is ApplyCommand inside tx, which the caller commits. checked skips validating cmd
// (PendingCommand.Checked).
func (s *SQLiteStore) applyIn(ctx context.Context, tx execer, cmd requirements.Command, msgID string, checked bool) (requirements.Outcome, error) {
	markerID := cmd.CommandID
	if markerID == "" && msgID != "" {
		markerID = "msg:" + msgID
	}
	var recorded string
	err := tx.QueryRowContext(ctx, `SELECT outcome FROM applied_commands WHERE command_id = ? OR (msg_id IS NOT NULL AND msg_id = ?)`, markerID, msgID).Scan(&recorded)
	switch {
	case err == nil:
		var out requirements.Outcome
		if err := json.Unmarshal([]byte(recorded), &out); err != nil {
			return requirements.Outcome{}, fault.Permanent(fault.Rejected, fmt.Errorf("apply command %s: decode recorded outcome: %w", cmd.CommandID, err))
		}
		out.AlreadyApplied = true
		return out, nil
	case !errors.Is(err, sql.ErrNoRows):
		return requirements.Outcome{}, fmt.Errorf("apply command %s: read apply marker: %w", cmd.CommandID, err)
	}

	out := requirements.Outcome{CommandID: cmd.CommandID, Type: cmd.Type, Key: cmd.Key()}
	var invalid error
	if !checked {
		invalid = s.v.Check(cmd)
	}
	if invalid != nil {
		if !errors.As(invalid, &out.Refusal) {
			return requirements.Outcome{}, fmt.Errorf("apply command %s: validate: %w", cmd.CommandID, invalid)
		}
	} else if err := s.applyValid(ctx, tx, cmd, &out); err != nil {
		return requirements.Outcome{}, err
	}
	if markerID == "" {
		// Nothing to key a marker on (only possible for an invalid command).
		return out, nil
	}
	body, err := json.Marshal(out)
	if err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: encode outcome: %w", cmd.CommandID, err)
	}
	var msg any
	if msgID != "" {
		msg = msgID
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO applied_commands (command_id, msg_id, outcome, applied_at) VALUES (?, ?, ?, ?)`,
		markerID, msg, string(body), requirements.FormatTimestamp(s.now())); err != nil {
		return requirements.Outcome{}, fmt.Errorf("apply command %s: write apply marker: %w", cmd.CommandID, err)
	}
	return out, nil
}

// applyValid loads the state cmd names, applies it, and writes the result into tx, filling
// out. A refusal goes into out.Refusal; an error means the transaction must be abandoned.
func (s *SQLiteStore) applyValid(ctx context.Context, tx execer, cmd requirements.Command, out *requirements.Outcome) error {
	var st requirements.State
	if cmd.Type == requirements.TypeSubmitRequirements {
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version_id), 0) FROM requirements_versions`).Scan(&st.LatestVersionID); err != nil {
			return fmt.Errorf("apply command %s: read latest version: %w", cmd.CommandID, err)
		}
	} else {
		f, err := getFeature(ctx, tx, cmd.Key())
		switch {
		case err == nil:
			st.Feature = &f
		case !errors.Is(err, requirements.ErrNotFound):
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
	}
	prevVersion := int64(0)
	if st.Feature != nil {
		prevVersion = st.Feature.Version
	}
	next, entry, err := requirements.Apply(st, cmd)
	if err != nil {
		if errors.As(err, &out.Refusal) {
			return nil
		}
		return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
	}
	switch {
	case next.Version != nil:
		if err := insertVersion(ctx, tx, *next.Version); err != nil {
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		out.Version = next.Version
	case next.Feature != nil:
		if err := writeFeature(ctx, tx, *next.Feature, prevVersion); err != nil {
			return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
		}
		out.Feature = next.Feature
	}
	chained, err := appendAudit(ctx, tx, entry)
	if err != nil {
		return fmt.Errorf("apply command %s: %w", cmd.CommandID, err)
	}
	out.Audit, out.Applied = &chained, true
	return nil
}

func insertVersion(ctx context.Context, tx execer, v requirements.Version) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO requirements_versions (version_id, author, timestamp, checksum, document) VALUES (?, ?, ?, ?, ?)`,
		v.VersionID, v.Author, v.Timestamp, v.Checksum, string(v.JSON())); err != nil {
		return fmt.Errorf("insert requirements version %d: %w", v.VersionID, err)
	}
	return nil
}

func nullable(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

// writeFeature inserts f (prevVersion 0) or updates the stored row at prevVersion.
func writeFeature(ctx context.Context, tx execer, f requirements.FeatureRequest, prevVersion int64) error {
	created, err := requirements.ParseTimestamp(f.CreatedAt)
	if err != nil {
		return fmt.Errorf("write feature request %s: %w", f.RequestID, err)
	}
	if prevVersion == 0 {
		_, err = tx.ExecContext(ctx, `INSERT INTO feature_requests (request_id, title, description, priority, requester, status, created_at, created_us, updated_at, approved_by, rejection_reason, version, key)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			f.RequestID, f.Title, f.Description, f.Priority, f.Requester, string(f.Status), f.CreatedAt, created.UnixMicro(),
			nullable(f.UpdatedAt), nullable(f.ApprovedBy), nullable(f.RejectionReason), f.Version, f.Key)
		if err != nil {
			return fmt.Errorf("insert feature request %s: %w", f.RequestID, err)
		}
		return nil
	}
	res, err := tx.ExecContext(ctx, `UPDATE feature_requests SET status = ?, updated_at = ?, approved_by = ?, rejection_reason = ?, version = ?
		WHERE request_id = ? AND version = ?`,
		string(f.Status), nullable(f.UpdatedAt), nullable(f.ApprovedBy), nullable(f.RejectionReason), f.Version, f.RequestID, prevVersion)
	if err != nil {
		return fmt.Errorf("update feature request %s: %w", f.RequestID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		// Cannot happen inside the write transaction that read the row; retrying re-reads it.
		return fmt.Errorf("update feature request %s: version %d changed underneath (%d rows, %v)", f.RequestID, prevVersion, n, err)
	}
	return nil
}

// appendAudit chains e after the last entry of its request and inserts it.
func appendAudit(ctx context.Context, tx execer, e requirements.AuditEntry) (requirements.AuditEntry, error) {
	var prev *requirements.AuditEntry
	var p requirements.AuditEntry
	err := tx.QueryRowContext(ctx, `SELECT seq, checksum FROM audit WHERE request_id = ? ORDER BY seq DESC LIMIT 1`, e.RequestID).Scan(&p.Seq, &p.Checksum)
	switch {
	case err == nil:
		prev = &p
	case !errors.Is(err, sql.ErrNoRows):
		return requirements.AuditEntry{}, fmt.Errorf("read audit head of %s: %w", e.RequestID, err)
	}
	e = requirements.ChainEntry(prev, e)
	if _, err := tx.ExecContext(ctx, `INSERT INTO audit (request_id, seq, timestamp, old_status, new_status, admin, reason, prev_checksum, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.RequestID, e.Seq, e.Timestamp, e.OldStatus, e.NewStatus, e.Admin, nullable(e.Reason), e.PrevChecksum, e.Checksum); err != nil {
		return requirements.AuditEntry{}, fmt.Errorf("append audit entry %s/%d: %w", e.RequestID, e.Seq, err)
	}
	return e, nil
}

const featureColumns = `request_id, title, description, priority, requester, status, created_at, updated_at, approved_by, rejection_reason, version, key`
