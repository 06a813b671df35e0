// Package reqstoretest is the conformance suite of requirement stores (requirements.Store):
// the command sequence, versions, idempotence, concurrent decisions, listing, import and
// closing, run by the tests of every implementation in sinks/reqstore.
package reqstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/sinks/reqstore"
)

// Opener makes a fresh, empty store for one test and returns it with a function that
// opens another handle on the same data, as a second worker process would. The opener
// registers the stores' cleanup.
type Opener func(t *testing.T) (requirements.Store, func(t *testing.T) requirements.Store)

// Run runs the behaviour every requirements.Store implementation shares, as subtests of t: the
// SQLite store and the AstraDB store pass the same tests, and so must any other.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		run  func(t *testing.T, open Opener)
	}{
		{name: "CommandSequence", run: testStoreCommandSequence},
		{name: "RequirementsVersions", run: testStoreRequirementsVersions},
		{name: "Idempotent", run: testStoreIdempotent},
		{name: "ConcurrentDecisions", run: testStoreConcurrentDecisions},
		{name: "ListFeatures", run: testStoreListFeatures},
		{name: "ImportFixtures", run: testStoreImportFixtures},
		{name: "ImportChecksumWarning", run: testStoreImportChecksumWarning},
		{name: "Closed", run: testStoreClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, open) })
	}
}

// testStoreCommandSequence applies every command type in turn through the store and checks
// each outcome and the state read back.
func testStoreCommandSequence(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := t.Context()
	steps := []struct {
		name    string
		cmd     requirements.Command
		refusal requirements.RefusalCode
		status  requirements.Status
		version int64
	}{
		{name: "decide before submit", cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, nil), refusal: requirements.RefusalNotFound},
		{name: "submit", cmd: reqtest.SubmitFeature(reqtest.ReqID), status: requirements.StatusPending, version: 1},
		{name: "submit again", cmd: reqtest.SubmitFeature(reqtest.ReqID), refusal: requirements.RefusalAlreadyExists, status: requirements.StatusPending, version: 1},
		{name: "complete too early", cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusCompleted, nil), refusal: requirements.RefusalIllegalTransition, status: requirements.StatusPending, version: 1},
		{name: "approve with stale version", cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, reqtest.Ptr(int64(7))), refusal: requirements.RefusalStaleVersion, status: requirements.StatusPending, version: 1},
		{name: "approve", cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, reqtest.Ptr("fits"), reqtest.Ptr(int64(1))), status: requirements.StatusApproved, version: 2},
		{name: "reject after approve", cmd: reqtest.Decide(reqtest.ReqID, requirements.ActionReject, reqtest.Ptr("changed my mind"), nil), refusal: requirements.RefusalAlreadyDecided, status: requirements.StatusApproved, version: 2},
		{name: "start", cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, reqtest.Ptr(int64(2))), status: requirements.StatusInProgress, version: 3},
		{name: "complete", cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusCompleted, nil), status: requirements.StatusCompleted, version: 4},
		{name: "cancel completed", cmd: reqtest.Transition(reqtest.ReqID, requirements.StatusCancelled, nil), refusal: requirements.RefusalIllegalTransition, status: requirements.StatusCompleted, version: 4},
		{name: "invalid command", cmd: func() requirements.Command {
			c := reqtest.SubmitFeature("FR-999")
			c.SubmitFeatureRequest.Title = "x"
			return c
		}(), refusal: requirements.RefusalInvalid},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			out := reqtest.Apply(t, s, st.cmd, "msg-"+st.cmd.CommandID)
			if out.CommandID != st.cmd.CommandID || out.AlreadyApplied {
				t.Errorf("outcome reqtest.Header %+v", out)
			}
			if st.refusal != "" {
				if out.Applied || out.Refusal == nil || out.Refusal.Code != st.refusal || out.Audit != nil {
					t.Fatalf("outcome %+v, want refusal %s", out, st.refusal)
				}
			} else if !out.Applied || out.Refusal != nil || out.Feature == nil || out.Audit == nil {
				t.Fatalf("outcome %+v, want applied", out)
			}
			if st.status == "" {
				return
			}
			f, err := s.GetFeature(ctx, reqtest.ReqID)
			if err != nil {
				t.Fatal(err)
			}
			if f.Status != st.status || f.Version != st.version {
				t.Errorf("stored %s v%d, want %s v%d", f.Status, f.Version, st.status, st.version)
			}
			if out.Applied && (out.Feature.Version != f.Version || out.Audit.Seq != f.Version) {
				t.Errorf("outcome feature v%d audit seq %d, stored v%d", out.Feature.Version, out.Audit.Seq, f.Version)
			}
		})
	}
	f, _ := s.GetFeature(ctx, reqtest.ReqID)
	if reqtest.Deref(f.ApprovedBy) != "api-admin" || f.RejectionReason != nil {
		t.Errorf("approved_by %q rejection_reason %v", reqtest.Deref(f.ApprovedBy), f.RejectionReason)
	}
	audit, err := s.ListAudit(ctx, reqtest.ReqID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range audit {
		trail = append(trail, fmt.Sprintf("%d:%s>%s", e.Seq, e.OldStatus, e.NewStatus))
	}
	if got := strings.Join(trail, " "); got != "4:in_progress>completed 3:approved>in_progress 2:pending>approved 1:>pending" {
		t.Errorf("audit newest first = %s", got)
	}
	if integ, err := s.VerifyAudit(ctx); err != nil || !integ.Valid || integ.Entries != 4 {
		t.Errorf("VerifyAudit = %+v, %v", integ, err)
	}
}

func testStoreRequirementsVersions(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := t.Context()
	if _, err := s.LatestVersion(ctx); !errors.Is(err, requirements.ErrNotFound) {
		t.Errorf("LatestVersion on empty store: %v", err)
	}
	first := reqtest.SubmitRequirements(t)
	second := reqtest.SubmitRequirements(t)
	second.IssuedAt = first.IssuedAt // same millisecond: ids must still differ
	o1 := reqtest.Apply(t, s, first, "m1")
	o2 := reqtest.Apply(t, s, second, "m2")
	if !o1.Applied || !o2.Applied || o2.Version.VersionID != o1.Version.VersionID+1 {
		t.Fatalf("versions %+v %+v", o1.Version, o2.Version)
	}
	list, err := s.ListVersions(ctx)
	if err != nil || len(list) != 2 || list[0].VersionID != o2.Version.VersionID || list[0].Checksum != o2.Version.Checksum || list[0].Author != "api-admin" {
		t.Fatalf("ListVersions = %+v, %v", list, err)
	}
	latest, err := s.LatestVersion(ctx)
	if err != nil || !bytes.Equal(latest.JSON(), o2.Version.JSON()) {
		t.Errorf("LatestVersion = %v", err)
	}
	got, err := s.GetVersion(ctx, o1.Version.VersionID)
	if err != nil || !bytes.Equal(got.JSON(), o1.Version.JSON()) {
		t.Errorf("GetVersion = %v", err)
	}
	if ok, _, _ := got.VerifyChecksum(); !ok {
		t.Error("stored version does not verify")
	}
	if _, err := s.GetVersion(ctx, 42); !errors.Is(err, requirements.ErrNotFound) {
		t.Errorf("GetVersion(42) = %v", err)
	}
	if integ, _ := s.VerifyAudit(ctx); !integ.Valid || integ.Entries != 2 {
		t.Errorf("VerifyAudit = %+v", integ)
	}
}

// testStoreIdempotent: a redelivered message (same message id) or a resubmitted command (same
// command id) returns the recorded outcome and applies nothing, refusals included.
func testStoreIdempotent(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := t.Context()

	early := reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, nil)
	refused := reqtest.Apply(t, s, early, "m-early")
	if refused.Refusal == nil || refused.Refusal.Code != requirements.RefusalNotFound {
		t.Fatalf("early decision: %+v", refused)
	}
	submit := reqtest.SubmitFeature(reqtest.ReqID)
	first := reqtest.Apply(t, s, submit, "m-submit")
	approve := reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, nil)
	applied := reqtest.Apply(t, s, approve, "m-approve")
	if !applied.Applied {
		t.Fatalf("approve: %+v", applied)
	}

	renamed := approve
	renamed.CommandID = "cmd_other_id" // redelivery of the same message under another command id
	resubmitted := approve             // the same command published again under a new message id
	tests := []struct {
		name  string
		cmd   requirements.Command
		msgID string
		want  requirements.Outcome
	}{
		{name: "redelivered message", cmd: approve, msgID: "m-approve", want: applied},
		{name: "same message id", cmd: renamed, msgID: "m-approve", want: applied},
		{name: "same command id, new message", cmd: resubmitted, msgID: "m-approve-2", want: applied},
		{name: "same command id, no message id", cmd: approve, want: applied},
		{name: "redelivered submission", cmd: submit, msgID: "m-submit", want: first},
		// The request exists now, but the recorded refusal stands.
		{name: "redelivered refusal", cmd: early, msgID: "m-early", want: refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := reqtest.Apply(t, s, tt.cmd, tt.msgID)
			if !out.AlreadyApplied {
				t.Fatal("not recognised as already applied")
			}
			out.AlreadyApplied = false
			if fmt.Sprintf("%+v", reqtest.MustJSON(out)) != fmt.Sprintf("%+v", reqtest.MustJSON(tt.want)) {
				t.Errorf("outcome\n%s\nwant\n%s", reqtest.MustJSON(out), reqtest.MustJSON(tt.want))
			}
		})
	}
	f, _ := s.GetFeature(ctx, reqtest.ReqID)
	audit, _ := s.ListAudit(ctx, "", 0)
	if f.Version != 2 || len(audit) != 2 {
		t.Errorf("after redeliveries: version %d, %d audit entries; want 2 and 2", f.Version, len(audit))
	}
	rec, err := s.CommandOutcome(ctx, approve.CommandID)
	if err != nil || !rec.Applied || rec.Feature.Status != requirements.StatusApproved {
		t.Errorf("CommandOutcome = %+v, %v", rec, err)
	}
	if _, err := s.CommandOutcome(ctx, "cmd_never"); !errors.Is(err, requirements.ErrNotFound) {
		t.Errorf("CommandOutcome(unknown) = %v", err)
	}
}

// testStoreConcurrentDecisions: 16 goroutines, on two store handles of the same data (as two
// worker processes would be), reqtest.Decide the same pending request; exactly one applies.
func testStoreConcurrentDecisions(t *testing.T, open Opener) {
	a, another := open(t)
	b := another(t)
	reqtest.Apply(t, a, reqtest.SubmitFeature(reqtest.ReqID), "")
	const n = 16
	cmds := make([]requirements.Command, n)
	for i := range cmds {
		action := requirements.ActionApprove
		if i%2 == 1 {
			action = requirements.ActionReject
		}
		cmds[i] = reqtest.Decide(reqtest.ReqID, action, nil, nil)
	}
	outs := make([]requirements.Outcome, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			<-start
			outs[i], errs[i] = s.ApplyCommand(context.Background(), cmds[i], "msg-"+strconv.Itoa(i))
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	applied, decided := 0, 0
	var winner requirements.Outcome
	for _, o := range outs {
		switch {
		case o.Applied:
			applied++
			winner = o
		case o.Refusal != nil && o.Refusal.Code == requirements.RefusalAlreadyDecided:
			decided++
		default:
			t.Errorf("unexpected outcome %+v", o)
		}
	}
	if applied != 1 || decided != n-1 {
		t.Fatalf("%d applied, %d already_decided; want 1 and %d", applied, decided, n-1)
	}
	f, err := b.GetFeature(t.Context(), reqtest.ReqID)
	if err != nil || f.Status != winner.Feature.Status || f.Version != 2 {
		t.Errorf("stored %+v, winner %+v", f, winner.Feature)
	}
	if integ, _ := a.VerifyAudit(t.Context()); !integ.Valid || integ.Entries != 2 {
		t.Errorf("VerifyAudit = %+v", integ)
	}
}

func testStoreListFeatures(t *testing.T, open Opener) {
	s, _ := open(t)
	ctx := t.Context()
	var ids []string // oldest first
	for i := range 7 {
		id := fmt.Sprintf("FR-%017d", i)
		ids = append(ids, id)
		c := reqtest.SubmitFeature(id)
		c.IssuedAt = reqtest.T0.Add(time.Duration(i) * time.Minute)
		if i == 5 {
			c.IssuedAt = reqtest.T0.Add(4 * time.Minute) // same created_at as #4: the id breaks the tie
		}
		reqtest.Apply(t, s, c, "")
		if i%3 == 0 {
			reqtest.Apply(t, s, reqtest.Decide(id, requirements.ActionApprove, nil, nil), "")
		}
	}
	page := func(q requirements.FeatureQuery) []string {
		t.Helper()
		var all []string
		for {
			p, err := s.ListFeatures(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range p.Features {
				if q.Status != "" && f.Status != q.Status {
					t.Errorf("%s has status %s", f.RequestID, f.Status)
				}
				all = append(all, f.RequestID)
			}
			if p.NextCursor == "" {
				return all
			}
			if len(p.Features) != q.Limit {
				t.Errorf("short page %d before the end", len(p.Features))
			}
			q.Cursor = p.NextCursor
		}
	}
	newest := slices.Clone(ids)
	slices.Reverse(newest)
	tests := []struct {
		name string
		q    requirements.FeatureQuery
		want []string
	}{
		{name: "all in one page", q: requirements.FeatureQuery{Limit: 50}, want: newest},
		{name: "pages of 3", q: requirements.FeatureQuery{Limit: 3}, want: newest},
		{name: "pages of 1", q: requirements.FeatureQuery{Limit: 1}, want: newest},
		{name: "approved only", q: requirements.FeatureQuery{Status: requirements.StatusApproved, Limit: 2}, want: []string{ids[6], ids[3], ids[0]}},
		{name: "pending only", q: requirements.FeatureQuery{Status: requirements.StatusPending, Limit: 2}, want: []string{ids[5], ids[4], ids[2], ids[1]}},
		{name: "no match", q: requirements.FeatureQuery{Status: requirements.StatusCancelled, Limit: 2}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := page(tt.q); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if p, err := s.ListFeatures(ctx, requirements.FeatureQuery{}); err != nil || len(p.Features) != 7 || p.NextCursor != "" {
		t.Errorf("default limit: %d, %q, %v", len(p.Features), p.NextCursor, err)
	}
	for _, bad := range []string{"!!", "bm9waXBl", "MTIz"} {
		if _, err := s.ListFeatures(ctx, requirements.FeatureQuery{Cursor: bad}); !errors.Is(err, requirements.ErrBadCursor) {
			t.Errorf("cursor %q: %v", bad, err)
		}
	}
	audit, err := s.ListAudit(ctx, "", 2)
	if err != nil || len(audit) != 2 || audit[0].RequestID != ids[6] || audit[0].NewStatus != "approved" {
		t.Errorf("ListAudit limit 2 = %+v, %v", audit, err)
	}
}

func testStoreImportFixtures(t *testing.T, open Opener) {
	var files []requirements.LegacyFile
	raw := map[string][]byte{}
	for _, name := range reqtest.FixtureNames() {
		b := reqtest.ReadFixture(t, name)
		raw[name] = b
		files = append(files, requirements.LegacyFile{Name: name, Data: b})
	}
	s, _ := open(t)
	ctx := t.Context()
	rep, err := s.Import(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Versions, []int64{1757213987664}) || len(rep.Features) != 3 || len(rep.Skipped) != 0 || len(rep.Warnings) != 0 {
		t.Errorf("report %+v", rep)
	}
	// Read back: byte-identical to the stored Python files.
	checkImportReadBack(t, s, raw)

	// Importing again skips everything; a conflicting file fails the whole import.
	rep, err = s.Import(ctx, files)
	if err != nil || len(rep.Skipped) != 4 || len(rep.Features) != 0 {
		t.Errorf("re-import %+v %v", rep, err)
	}
	changed := bytes.Replace(raw[reqtest.FixturePending], []byte(`"medium"`), []byte(`"high"`), 1)
	newOne := bytes.ReplaceAll(raw[reqtest.FixtureRejected], []byte("FR-17572141034994902"), []byte("FR-17572141034994903"))
	if _, err := s.Import(ctx, []requirements.LegacyFile{{Name: "new.json", Data: newOne}, {Name: "conflict.json", Data: changed}}); err == nil {
		t.Error("conflicting import succeeded")
	}
	if _, err := s.GetFeature(ctx, "FR-17572141034994903"); !errors.Is(err, requirements.ErrNotFound) {
		t.Errorf("failed import left a record behind: %v", err)
	}
	if _, err := s.Import(ctx, []requirements.LegacyFile{{Name: "x.json", Data: []byte(`{"x":1}`)}}); err == nil {
		t.Error("unknown file imported")
	}

	// Imported records take part in the state machine.
	out := reqtest.Apply(t, s, reqtest.Decide("FR-17572141034994902", requirements.ActionApprove, nil, nil), "")
	if out.Refusal == nil || out.Refusal.Code != requirements.RefusalAlreadyDecided {
		t.Errorf("deciding an imported rejected request: %+v", out)
	}
	out = reqtest.Apply(t, s, reqtest.Decide("FR-17572141034372077", requirements.ActionReject, reqtest.Ptr("superseded"), reqtest.Ptr(int64(1))), "")
	if !out.Applied || out.Feature.Version != 2 || out.Audit.Seq != 2 {
		t.Errorf("deciding an imported pending request: %+v", out)
	}
	if integ, _ := s.VerifyAudit(ctx); !integ.Valid {
		t.Errorf("VerifyAudit after a decision: %+v", integ)
	}
}

// checkImportReadBack checks what testStoreImportFixtures imported from the fixtures raw:
// read back byte-identical to the stored Python files, listed in order, with a valid audit
// chain of 4 entries.
func checkImportReadBack(t *testing.T, s requirements.Store, raw map[string][]byte) {
	ctx := t.Context()
	v, err := s.GetVersion(ctx, 1757213987664)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.JSON(), raw[reqtest.FixtureVersion]) {
		t.Errorf("version read back differs:\n%s", v.JSON())
	}
	if l, err := s.LatestVersion(ctx); err != nil || l.VersionID != 1757213987664 {
		t.Errorf("LatestVersion %d %v", l.VersionID, err)
	}
	list, _ := s.ListVersions(ctx)
	if len(list) != 1 || list[0] != (requirements.VersionInfo{VersionID: 1757213987664, Timestamp: "2025-09-06T21:59:47.664330", Author: "test_admin", Checksum: "ac320456e74ff8cde0d41188d15a728f5217cf943753b084ce786b571174bb08"}) {
		t.Errorf("ListVersions %+v", list)
	}
	for _, name := range reqtest.FixtureNames()[1:] {
		f, err := s.GetFeature(ctx, strings.TrimSuffix(name, ".json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.LegacyJSON(), raw[name]) {
			t.Errorf("%s read back differs:\n%s", name, f.LegacyJSON())
		}
	}
	p, _ := s.ListFeatures(ctx, requirements.FeatureQuery{})
	var order []string
	for _, f := range p.Features {
		order = append(order, f.RequestID)
	}
	if want := []string{"FR-17572141041457486", "FR-17572141034994902", "FR-17572141034372077"}; !slices.Equal(order, want) {
		t.Errorf("created_at desc order %v, want %v", order, want)
	}
	if integ, err := s.VerifyAudit(ctx); err != nil || !integ.Valid || integ.Entries != 4 {
		t.Errorf("VerifyAudit %+v %v", integ, err)
	}
}

func testStoreImportChecksumWarning(t *testing.T, open Opener) {
	raw := reqtest.ReadFixture(t, reqtest.FixtureVersion)
	edited := bytes.Replace(raw, []byte("Test Requirements Document"), []byte("Edited Requirements Document"), 1)
	s, _ := open(t)
	rep, err := s.Import(t.Context(), []requirements.LegacyFile{{Name: "edited.json", Data: edited}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "edited.json") || len(rep.Versions) != 1 {
		t.Errorf("report %+v, want one checksum warning and the version imported", rep)
	}
}

func testStoreClosed(t *testing.T, open Opener) {
	store, _ := open(t)
	s, ok := store.(interface {
		requirements.Store
		Close() error
	})
	if !ok {
		t.Fatalf("%T has no Close method", store)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := s.ApplyCommand(t.Context(), reqtest.SubmitFeature(reqtest.ReqID), ""); !errors.Is(err, reqstore.ErrClosed) {
		t.Errorf("ApplyCommand after Close: %v", err)
	}
	if _, err := s.GetFeature(t.Context(), reqtest.ReqID); !errors.Is(err, reqstore.ErrClosed) {
		t.Errorf("GetFeature after Close: %v", err)
	}
}
