package requirements_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

var t0 = time.Date(2025, 10, 9, 8, 53, 20, 123456000, time.UTC)

const reqID = "FR-17600000001234567"

func ptr[T any](v T) *T { return &v }

var cmdSeq int

func header(typ requirements.CommandType) requirements.Command {
	cmdSeq++
	return requirements.Command{Type: typ, CommandID: fmt.Sprintf("cmd_%d", cmdSeq), Actor: "api-admin", IssuedAt: t0.Add(time.Duration(cmdSeq) * time.Second)}
}

func submitFeature(id string) requirements.Command {
	c := header(requirements.TypeSubmitFeatureRequest)
	c.SubmitFeatureRequest = &requirements.SubmitFeatureRequest{
		RequestID: id, Title: "Initiative tracker (combat)", Description: "Track initiative order: metadata: <b>as given</b>",
		Priority: "high", Requester: "gm.alice", Category: "ui", UserStory: "As a game master I want an initiative list so that turns are fair",
		Tags: []string{"combat"}, EffortEstimate: ptr(8),
	}
	return c
}

func decide(id, action string, reason *string, expected *int64) requirements.Command {
	c := header(requirements.TypeDecideFeatureRequest)
	c.Decide = &requirements.DecideFeatureRequest{RequestID: id, Action: action, Reason: reason, ExpectedVersion: expected}
	return c
}

func transition(id string, to requirements.Status, expected *int64) requirements.Command {
	c := header(requirements.TypeTransitionFeatureRequest)
	c.Transition = &requirements.TransitionFeatureRequest{RequestID: id, To: to, ExpectedVersion: expected}
	return c
}

func mustObject(t testing.TB, s string) *requirements.Object {
	t.Helper()
	var o requirements.Object
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		t.Fatal(err)
	}
	return &o
}

func submitRequirements(t testing.TB) requirements.Command {
	c := header(requirements.TypeSubmitRequirements)
	c.SubmitRequirements = &requirements.SubmitRequirements{
		Title: "Dice Roller Service", Version: "2.1.0", Description: "Requirements for the dice roller — ünïcode",
		Requirements: mustObject(t, `{"functional":[{"id":"DR-001","title":"Roll","description":"Roll 3d6","priority":"high"},
			{"id":"DR-002","title":"History","description":"Keep rolls","priority":"medium","dependencies":["DR-001","XX-999"]}],
			"non_functional":[{"id":"NFR-010","title":"Latency","description":"50 ms","priority":"low","category":"performance","dependencies":["DR-002"]}]}`),
		Stakeholders: []*requirements.Object{mustObject(t, `{"name":"GM","role":"Owner","involvement":"primary"}`)},
		Author:       "Rules team",
	}
	return c
}

// stateAt returns a state holding a feature request in status s at version v.
func stateAt(s requirements.Status, v int64) requirements.State {
	return requirements.State{Feature: &requirements.FeatureRequest{RequestID: reqID, Title: "Title", Description: "Description", Priority: "low", Requester: "bob", Status: s, CreatedAt: "2025-09-06T22:01:43.437366", Version: v, Key: reqID}}
}

func TestApplyTransitions(t *testing.T) {
	type want struct {
		code   requirements.RefusalCode // "" = applied
		status requirements.Status
	}
	all := requirements.Statuses()
	moves := map[string]func() requirements.Command{
		"approve":     func() requirements.Command { return decide(reqID, requirements.ActionApprove, nil, nil) },
		"reject":      func() requirements.Command { return decide(reqID, requirements.ActionReject, ptr("no"), nil) },
		"in_progress": func() requirements.Command { return transition(reqID, requirements.StatusInProgress, nil) },
		"completed":   func() requirements.Command { return transition(reqID, requirements.StatusCompleted, nil) },
		"cancelled":   func() requirements.Command { return transition(reqID, requirements.StatusCancelled, nil) },
	}
	// The full matrix: every move from every status.
	expect := map[requirements.Status]map[string]want{
		requirements.StatusPending: {
			"approve": {"", requirements.StatusApproved}, "reject": {"", requirements.StatusRejected},
			"in_progress": {requirements.RefusalIllegalTransition, ""}, "completed": {requirements.RefusalIllegalTransition, ""},
			"cancelled": {"", requirements.StatusCancelled},
		},
		requirements.StatusApproved: {
			"approve": {requirements.RefusalAlreadyDecided, ""}, "reject": {requirements.RefusalAlreadyDecided, ""},
			"in_progress": {"", requirements.StatusInProgress}, "completed": {requirements.RefusalIllegalTransition, ""},
			"cancelled": {"", requirements.StatusCancelled},
		},
		requirements.StatusRejected: {
			"approve": {requirements.RefusalAlreadyDecided, ""}, "reject": {requirements.RefusalAlreadyDecided, ""},
			"in_progress": {requirements.RefusalIllegalTransition, ""}, "completed": {requirements.RefusalIllegalTransition, ""},
			"cancelled": {requirements.RefusalIllegalTransition, ""},
		},
		requirements.StatusInProgress: {
			"approve": {requirements.RefusalAlreadyDecided, ""}, "reject": {requirements.RefusalAlreadyDecided, ""},
			"in_progress": {requirements.RefusalIllegalTransition, ""}, "completed": {"", requirements.StatusCompleted},
			"cancelled": {"", requirements.StatusCancelled},
		},
		requirements.StatusCompleted: {
			"approve": {requirements.RefusalAlreadyDecided, ""}, "reject": {requirements.RefusalAlreadyDecided, ""},
			"in_progress": {requirements.RefusalIllegalTransition, ""}, "completed": {requirements.RefusalIllegalTransition, ""},
			"cancelled": {requirements.RefusalIllegalTransition, ""},
		},
		requirements.StatusCancelled: {
			"approve": {requirements.RefusalIllegalTransition, ""}, "reject": {requirements.RefusalIllegalTransition, ""},
			"in_progress": {requirements.RefusalIllegalTransition, ""}, "completed": {requirements.RefusalIllegalTransition, ""},
			"cancelled": {requirements.RefusalIllegalTransition, ""},
		},
	}
	for _, from := range all {
		for move, mk := range moves {
			w := expect[from][move]
			t.Run(string(from)+"/"+move, func(t *testing.T) {
				in := stateAt(from, 3)
				cmd := mk()
				next, entry, err := requirements.Apply(in, cmd)
				if in.Feature.Status != from || in.Feature.Version != 3 {
					t.Fatal("Apply modified its input")
				}
				if w.code != "" {
					var r *requirements.Refusal
					if !errors.As(err, &r) || r.Code != w.code {
						t.Fatalf("got %v, want refusal %s", err, w.code)
					}
					if r.CurrentStatus != from || r.CurrentVersion != 3 {
						t.Errorf("refusal current = %s/%d", r.CurrentStatus, r.CurrentVersion)
					}
					if next.Feature.Status != from {
						t.Error("refused command changed state")
					}
					return
				}
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				f := next.Feature
				if f.Status != w.status || f.Version != 4 || f.UpdatedAt == nil || *f.UpdatedAt != requirements.FormatTimestamp(cmd.IssuedAt) {
					t.Errorf("new state %+v", f)
				}
				if entry.OldStatus != string(from) || entry.NewStatus != string(w.status) || entry.Admin != "api-admin" || entry.RequestID != reqID {
					t.Errorf("audit entry %+v", entry)
				}
				if got := requirements.CanMove(from, w.status); !got {
					t.Errorf("CanMove(%s, %s) = false for an applied move", from, w.status)
				}
			})
		}
	}
}

func TestApplyDecisionFields(t *testing.T) {
	tests := []struct {
		name       string
		action     string
		reason     *string
		wantReason *string
	}{
		// Python set rejection_reason on approve too when a reason was given; Sluice does not.
		{name: "approve with reason keeps rejection_reason null", action: requirements.ActionApprove, reason: ptr("fits the roadmap")},
		{name: "approve without reason", action: requirements.ActionApprove},
		{name: "reject with reason", action: requirements.ActionReject, reason: ptr("out of scope"), wantReason: ptr("out of scope")},
		{name: "reject without reason", action: requirements.ActionReject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := decide(reqID, tt.action, tt.reason, ptr(int64(1)))
			cmd.Actor = "token-name"
			next, entry, err := requirements.Apply(stateAt(requirements.StatusPending, 1), cmd)
			if err != nil {
				t.Fatal(err)
			}
			f := next.Feature
			if deref(f.ApprovedBy) != "token-name" || deref(f.RejectionReason) != deref(tt.wantReason) || (f.RejectionReason == nil) != (tt.wantReason == nil) {
				t.Errorf("approved_by %q rejection_reason %v", deref(f.ApprovedBy), f.RejectionReason)
			}
			if deref(entry.Reason) != deref(tt.reason) || entry.Admin != "token-name" {
				t.Errorf("audit %+v", entry)
			}
		})
	}
}

func TestApplyRefusals(t *testing.T) {
	tests := []struct {
		name  string
		state requirements.State
		cmd   requirements.Command
		code  requirements.RefusalCode
	}{
		{name: "decide unknown request", cmd: decide(reqID, requirements.ActionApprove, nil, nil), code: requirements.RefusalNotFound},
		{name: "transition unknown request", cmd: transition(reqID, requirements.StatusCancelled, nil), code: requirements.RefusalNotFound},
		{name: "submit existing request", state: stateAt(requirements.StatusPending, 1), cmd: submitFeature(reqID), code: requirements.RefusalAlreadyExists},
		{name: "stale version on decide", state: stateAt(requirements.StatusPending, 2), cmd: decide(reqID, requirements.ActionApprove, nil, ptr(int64(1))), code: requirements.RefusalStaleVersion},
		{name: "stale version on transition", state: stateAt(requirements.StatusApproved, 2), cmd: transition(reqID, requirements.StatusInProgress, ptr(int64(3))), code: requirements.RefusalStaleVersion},
		{name: "already decided wins over stale", state: stateAt(requirements.StatusApproved, 2), cmd: decide(reqID, requirements.ActionReject, nil, ptr(int64(1))), code: requirements.RefusalAlreadyDecided},
		{name: "unknown action", state: stateAt(requirements.StatusPending, 1), cmd: decide(reqID, "escalate", nil, nil), code: requirements.RefusalInvalid},
		{name: "transition to approved", state: stateAt(requirements.StatusPending, 1), cmd: transition(reqID, requirements.StatusApproved, nil), code: requirements.RefusalInvalid},
		{name: "body missing", cmd: header(requirements.TypeDecideFeatureRequest), code: requirements.RefusalInvalid},
		{name: "unknown type", cmd: header("delete"), code: requirements.RefusalInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := requirements.Apply(tt.state, tt.cmd)
			var r *requirements.Refusal
			if !errors.As(err, &r) || r.Code != tt.code {
				t.Fatalf("got %v, want refusal %s", err, tt.code)
			}
			if r.Error() == "" || r.Message == "" {
				t.Error("refusal without a message")
			}
		})
	}
}

func TestApplySubmitFeature(t *testing.T) {
	cmd := submitFeature(reqID)
	next, entry, err := requirements.Apply(requirements.State{}, cmd)
	if err != nil {
		t.Fatal(err)
	}
	f := next.Feature
	at := requirements.FormatTimestamp(cmd.IssuedAt)
	want := requirements.FeatureRequest{RequestID: reqID, Title: "Initiative tracker (combat)", Description: "Track initiative order: metadata: <b>as given</b>", Priority: "high", Requester: "gm.alice", Status: requirements.StatusPending, CreatedAt: at, Version: 1, Key: reqID}
	if fmt.Sprintf("%+v", *f) != fmt.Sprintf("%+v", want) {
		t.Errorf("feature\n%+v\nwant\n%+v", *f, want)
	}
	if entry.OldStatus != "" || entry.NewStatus != "pending" || entry.Timestamp != at {
		t.Errorf("audit %+v", entry)
	}
	// Pure: the same command on the same state gives the same result.
	again, _, _ := requirements.Apply(requirements.State{}, cmd)
	if fmt.Sprintf("%+v", *again.Feature) != fmt.Sprintf("%+v", *f) {
		t.Error("Apply is not deterministic")
	}
}

func TestApplySubmitRequirements(t *testing.T) {
	cmd := submitRequirements(t)
	next, entry, err := requirements.Apply(requirements.State{}, cmd)
	if err != nil {
		t.Fatal(err)
	}
	v := next.Version
	if v.VersionID != cmd.IssuedAt.UnixMilli() || next.LatestVersionID != v.VersionID || v.Author != "api-admin" {
		t.Errorf("version %d author %s", v.VersionID, v.Author)
	}
	var keys []string
	for _, m := range v.Document.Members() {
		keys = append(keys, m.Key)
	}
	if fmt.Sprint(keys) != "[title version description requirements stakeholders acceptance_criteria author metadata]" {
		t.Errorf("document keys %v", keys)
	}
	md, _ := v.Document.Get("metadata")
	mdj, _ := md.(*requirements.Object).MarshalJSON()
	wantMD := fmt.Sprintf(`{"version_id":%d,"author":"api-admin","timestamp":"%s","created_at":%s,"checksum":"%s"}`,
		v.VersionID, requirements.FormatTimestamp(cmd.IssuedAt), requirements.PyFloatRepr(float64(cmd.IssuedAt.UnixMicro())/1e6), v.Checksum)
	if string(mdj) != wantMD {
		t.Errorf("metadata %s\nwant     %s", mdj, wantMD)
	}
	if ok, _, err := v.VerifyChecksum(); !ok || err != nil {
		t.Error("checksum of a new version does not verify")
	}
	// The stored text parses back to the same version.
	back, err := requirements.ParseRequirementsVersion(v.JSON())
	if err != nil || back.Checksum != v.Checksum || string(back.JSON()) != string(v.JSON()) {
		t.Errorf("round trip: %v", err)
	}
	if entry.RequestID != strconv.FormatInt(v.VersionID, 10) || entry.NewStatus != requirements.NewStatusSubmitted {
		t.Errorf("audit %+v", entry)
	}
	// A second submission in the same millisecond gets the next id instead of colliding.
	next2, _, err := requirements.Apply(requirements.State{LatestVersionID: v.VersionID}, cmd)
	if err != nil || next2.Version.VersionID != v.VersionID+1 {
		t.Errorf("colliding id: %v %v", next2.Version, err)
	}
}
