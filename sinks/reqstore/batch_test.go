package reqstore_test

import (
	"context"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
)

// ApplyCommands (issue 12: commands applied together share one synced transaction) applies a
// batch in order, each command on its own: one that fails leaves nothing behind and the rest
// commit; the same batch redelivered applies nothing twice (versions and audit exact).
func TestSQLiteApplyCommandsBatch(t *testing.T) {
	s, path := newStore(t)
	ctx := context.Background()
	// A command whose apply marker is unreadable fails on its own (permanent), in the middle.
	bad := reqtest.Decide("FR-002", requirements.ActionApprove, nil, nil)
	if _, err := rawDB(t, path).Exec(`INSERT INTO applied_commands (command_id, msg_id, outcome, applied_at) VALUES (?, NULL, 'not json', 'x')`, bad.CommandID); err != nil {
		t.Fatal(err)
	}
	batch := []requirements.PendingCommand{
		{Command: reqtest.SubmitFeature("FR-001"), MsgID: "S:1"},
		{Command: reqtest.Decide("FR-001", requirements.ActionApprove, nil, nil), MsgID: "S:2"},
		{Command: bad, MsgID: "S:3"},
		{Command: reqtest.Transition("FR-001", requirements.StatusInProgress, nil), MsgID: "S:4"},
		{Command: reqtest.Decide("FR-999", requirements.ActionApprove, nil, nil), MsgID: "S:5"}, // refused: no such request
	}
	for round := range 2 {
		res := s.ApplyCommands(ctx, batch)
		if len(res) != len(batch) {
			t.Fatalf("round %d: %d results", round, len(res))
		}
		for i, r := range res {
			switch {
			case i == 2:
				if r.Err == nil || !fault.IsPermanent(r.Err) {
					t.Fatalf("round %d: bad command: %+v, want a permanent error", round, r)
				}
			case r.Err != nil:
				t.Fatalf("round %d: command %d: %v", round, i, r.Err)
			case r.Outcome.AlreadyApplied != (round == 1):
				t.Fatalf("round %d: command %d already applied = %v", round, i, r.Outcome.AlreadyApplied)
			case i == 4 && r.Outcome.Refusal == nil, i < 4 && !r.Outcome.Applied:
				t.Fatalf("round %d: command %d: %+v", round, i, r.Outcome)
			}
		}
	}
	f, err := s.GetFeature(ctx, "FR-001")
	if err != nil {
		t.Fatal(err)
	}
	if f.Status != requirements.StatusInProgress || f.Version != 3 {
		t.Fatalf("FR-001 is %s v%d, want in_progress v3 (applied in order, once)", f.Status, f.Version)
	}
	integ, err := s.VerifyAudit(ctx)
	if err != nil || !integ.Valid || integ.Entries != 3 {
		t.Fatalf("VerifyAudit = %+v, %v; want 3 valid entries", integ, err)
	}
}
