package reqstore_test

import (
	"database/sql"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sinks/reqstore/reqstoretest"
)

var _ requirements.Store = (*reqstore.SQLiteStore)(nil)

func openStore(t *testing.T, path string) *reqstore.SQLiteStore {
	t.Helper()
	s, err := reqstore.OpenSQLite(t.Context(), reqstore.SQLiteConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newStore(t *testing.T) (*reqstore.SQLiteStore, string) {
	path := filepath.Join(t.TempDir(), "req.db")
	return openStore(t, path), path
}

func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func TestSQLiteConfigValidate(t *testing.T) {
	err := reqstore.SQLiteConfig{Path: "a?b", MaxReadConns: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "'?'") || !strings.Contains(err.Error(), "MaxReadConns") {
		t.Errorf("Validate = %v, want both problems", err)
	}
	if err := (reqstore.SQLiteConfig{}).Validate(); err == nil {
		t.Error("empty path accepted")
	}
}

func TestStorePragmas(t *testing.T) {
	_, path := newStore(t)
	var mode string
	if err := rawDB(t, path).QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v", mode, err)
	}
}

func TestSQLiteStore(t *testing.T) {
	reqstoretest.Run(t, func(t *testing.T) (requirements.Store, func(t *testing.T) requirements.Store) {
		s, path := newStore(t)
		return s, func(t *testing.T) requirements.Store { return openStore(t, path) }
	})
}

func TestStoreTamperDetection(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, db *sql.DB)
		want   []string
	}{
		{
			name: "edited reason",
			tamper: func(t *testing.T, db *sql.DB) {
				exec(t, db, `UPDATE audit SET reason = 'edited' WHERE line = 2`)
			},
			want: []string{"Line 2: checksum mismatch"},
		},
		{
			name: "edited entry with a recomputed checksum breaks the next link",
			tamper: func(t *testing.T, db *sql.DB) {
				e := auditLine(t, db, 2)
				e.Admin = "mallory"
				exec(t, db, `UPDATE audit SET admin = ?, checksum = ? WHERE line = 2`, e.Admin, requirements.AuditChecksum(e))
			},
			want: []string{"Line 3: chain broken"},
		},
		{
			name: "removed middle entry",
			tamper: func(t *testing.T, db *sql.DB) {
				exec(t, db, `DELETE FROM audit WHERE line = 2`)
			},
			want: []string{"Line 2: chain broken"}, // the old line 3 is now line 2
		},
		{
			name: "removed last entry",
			tamper: func(t *testing.T, db *sql.DB) {
				exec(t, db, `DELETE FROM audit WHERE line = 3`)
			},
			want: []string{"Request " + reqtest.ReqID + ": audit trail ends at seq 2, the record is at version 3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := newStore(t)
			reqtest.Apply(t, s, reqtest.SubmitFeature(reqtest.ReqID), "")
			reqtest.Apply(t, s, reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, reqtest.Ptr("ok"), nil), "")
			reqtest.Apply(t, s, reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, nil), "")
			reqtest.Apply(t, s, reqtest.SubmitFeature("FR-123"), "")
			if integ, err := s.VerifyAudit(t.Context()); err != nil || !integ.Valid {
				t.Fatalf("before tampering: %+v, %v", integ, err)
			}
			db := rawDB(t, path)
			// The table refuses edits until its triggers are dropped.
			if _, err := db.Exec(`UPDATE audit SET reason = 'x' WHERE line = 1`); err == nil {
				t.Fatal("audit accepted an UPDATE")
			}
			if _, err := db.Exec(`DELETE FROM audit WHERE line = 1`); err == nil {
				t.Fatal("audit accepted a DELETE")
			}
			exec(t, db, `DROP TRIGGER audit_no_update`)
			exec(t, db, `DROP TRIGGER audit_no_delete`)
			tt.tamper(t, db)
			integ, err := s.VerifyAudit(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if integ.Valid || !slices.Equal(integ.Problems, tt.want) {
				t.Errorf("problems %q, want %q", integ.Problems, tt.want)
			}
		})
	}
}

func exec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func auditLine(t *testing.T, db *sql.DB, line int) requirements.AuditEntry {
	t.Helper()
	var e requirements.AuditEntry
	var reason sql.NullString
	err := db.QueryRow(`SELECT seq, timestamp, request_id, old_status, new_status, admin, reason, prev_checksum, checksum FROM audit WHERE line = ?`, line).
		Scan(&e.Seq, &e.Timestamp, &e.RequestID, &e.OldStatus, &e.NewStatus, &e.Admin, &reason, &e.PrevChecksum, &e.Checksum)
	if err != nil {
		t.Fatal(err)
	}
	if reason.Valid {
		e.Reason = &reason.String
	}
	return e
}
