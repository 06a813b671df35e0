package requirements_test

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
)

func TestApplyTransitions(t *testing.T) {
	type want struct {
		code   requirements.RefusalCode // "" = applied
		status requirements.Status
	}
	all := requirements.Statuses()
	moves := map[string]func() requirements.Command{
		"approve": func() requirements.Command {
			return reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, nil)
		},
		"reject": func() requirements.Command {
			return reqtest.Decide(reqtest.ReqID, requirements.ActionReject, reqtest.Ptr("no"), nil)
		},
		"in_progress": func() requirements.Command {
			return reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, nil)
		},
		"completed": func() requirements.Command {
			return reqtest.Transition(reqtest.ReqID, requirements.StatusCompleted, nil)
		},
		"cancelled": func() requirements.Command {
			return reqtest.Transition(reqtest.ReqID, requirements.StatusCancelled, nil)
		},
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
				in := reqtest.StateAt(from, 3)
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
				if entry.OldStatus != string(from) || entry.NewStatus != string(w.status) || entry.Admin != "api-admin" || entry.RequestID != reqtest.ReqID {
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
		{name: "approve with reason keeps rejection_reason null", action: requirements.ActionApprove, reason: reqtest.Ptr("fits the roadmap")},
		{name: "approve without reason", action: requirements.ActionApprove},
		{name: "reject with reason", action: requirements.ActionReject, reason: reqtest.Ptr("out of scope"), wantReason: reqtest.Ptr("out of scope")},
		{name: "reject without reason", action: requirements.ActionReject},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := reqtest.Decide(reqtest.ReqID, tt.action, tt.reason, reqtest.Ptr(int64(1)))
			cmd.Actor = "token-name"
			next, entry, err := requirements.Apply(reqtest.StateAt(requirements.StatusPending, 1), cmd)
			if err != nil {
				t.Fatal(err)
			}
			f := next.Feature
			if reqtest.Deref(f.ApprovedBy) != "token-name" || reqtest.Deref(f.RejectionReason) != reqtest.Deref(tt.wantReason) || (f.RejectionReason == nil) != (tt.wantReason == nil) {
				t.Errorf("approved_by %q rejection_reason %v", reqtest.Deref(f.ApprovedBy), f.RejectionReason)
			}
			if reqtest.Deref(entry.Reason) != reqtest.Deref(tt.reason) || entry.Admin != "token-name" {
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
		{name: "decide unknown request", cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, nil), code: requirements.RefusalNotFound},
		{name: "transition unknown request", cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusCancelled, nil), code: requirements.RefusalNotFound},
		{name: "submit existing request", state: reqtest.StateAt(requirements.StatusPending, 1), cmd: reqtest.SubmitFeature(reqtest.ReqID), code: requirements.RefusalAlreadyExists},
		{name: "stale version on decide", state: reqtest.StateAt(requirements.StatusPending, 2), cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, reqtest.Ptr(int64(1))), code: requirements.RefusalStaleVersion},
		{name: "stale version on transition", state: reqtest.StateAt(requirements.StatusApproved, 2), cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, reqtest.Ptr(int64(3))), code: requirements.RefusalStaleVersion},
		{name: "already decided wins over stale", state: reqtest.StateAt(requirements.StatusApproved, 2), cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionReject, nil, reqtest.Ptr(int64(1))), code: requirements.RefusalAlreadyDecided},
		{name: "unknown action", state: reqtest.StateAt(requirements.StatusPending, 1), cmd: reqtest.Decide(reqtest.ReqID, "escalate", nil, nil), code: requirements.RefusalInvalid},
		{name: "transition to approved", state: reqtest.StateAt(requirements.StatusPending, 1), cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusApproved, nil), code: requirements.RefusalInvalid},
		{name: "body missing", cmd: reqtest.Header(requirements.TypeDecideFeatureRequest), code: requirements.RefusalInvalid},
		{name: "unknown type", cmd: reqtest.Header("delete"), code: requirements.RefusalInvalid},
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
	cmd := reqtest.SubmitFeature(reqtest.ReqID)
	next, entry, err := requirements.Apply(requirements.State{}, cmd)
	if err != nil {
		t.Fatal(err)
	}
	f := next.Feature
	at := requirements.FormatTimestamp(cmd.IssuedAt)
	want := requirements.FeatureRequest{RequestID: reqtest.ReqID, Title: "Initiative tracker (combat)", Description: "Track initiative order: metadata: <b>as given</b>", Priority: "high", Requester: "gm.alice", Status: requirements.StatusPending, CreatedAt: at, Version: 1, Key: reqtest.ReqID}
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
	cmd := reqtest.SubmitRequirements(t)
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
	back, err := requirements.ParseVersion(v.JSON())
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
