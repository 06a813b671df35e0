package reqstore_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sinks/reqstore/reqstoretest"
)

var _ requirements.Store = (*reqstore.AstraStore)(nil)

// newDataAPI starts a Data API double for t and fails t at cleanup if any request broke the
// protocol.
func newDataAPI(t *testing.T, cfg dataapitest.Config) *dataapitest.Server {
	t.Helper()
	srv := dataapitest.New(cfg)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { // runs before Close
		if v := srv.Stats().Violations; len(v) > 0 {
			t.Errorf("Data API violations:\n%s", strings.Join(v, "\n"))
		}
	})
	return srv
}

// newAstraClient returns a client of srv that retries once, quickly.
func newAstraClient(t *testing.T, srv *dataapitest.Server) *dataapi.Client {
	t.Helper()
	c, err := dataapi.NewClient(dataapi.Config{Endpoint: srv.URL(), Token: secret.String(srv.Token()), MaxAttempts: 2,
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, RequestTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// openAstra opens a store with its own client on srv.
func openAstra(t *testing.T, srv *dataapitest.Server) *reqstore.AstraStore {
	t.Helper()
	s, err := reqstore.OpenAstra(t.Context(), reqstore.AstraConfig{Client: newAstraClient(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// astraDocs returns the stored documents of the default collection whose _id starts with
// prefix.
func astraDocs(srv *dataapitest.Server, prefix string) map[string]json.RawMessage {
	out := map[string]json.RawMessage{}
	for id, d := range srv.Documents("default_keyspace", reqstore.DefaultAstraCollection) {
		if strings.HasPrefix(id, prefix) {
			out[id] = d
		}
	}
	return out
}

// TestAstraStore runs the shared Store suite against the Data API double, with a page size of
// 3 so that every listing crosses server pages.
func TestAstraStore(t *testing.T) {
	reqstoretest.Run(t, func(t *testing.T) (requirements.Store, func(t *testing.T) requirements.Store) {
		srv := newDataAPI(t, dataapitest.Config{PageSize: 3})
		return openAstra(t, srv), func(t *testing.T) requirements.Store { return openAstra(t, srv) }
	})
}

func TestAstraConfigValidate(t *testing.T) {
	err := reqstore.AstraConfig{ConflictRetries: -1}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Client") || !strings.Contains(err.Error(), "ConflictRetries") {
		t.Errorf("Validate = %v, want both problems", err)
	}
	if _, err := reqstore.OpenAstra(t.Context(), reqstore.AstraConfig{}); err == nil {
		t.Error("OpenAstra without a client succeeded")
	}
}

func TestAstraOpenCreatesOneCollection(t *testing.T) {
	srv := newDataAPI(t, dataapitest.Config{})
	c := newAstraClient(t, srv)
	for range 2 { // the second open finds the collection with the same options
		if _, err := reqstore.OpenAstra(t.Context(), reqstore.AstraConfig{Client: c}); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.Collections("default_keyspace"); !slices.Equal(got, []string{reqstore.DefaultAstraCollection}) {
		t.Fatalf("collections %v", got)
	}
	infos, err := c.FindCollections(t.Context())
	if err != nil || len(infos) != 1 || !strings.Contains(string(infos[0].Options), `"deny"`) || !strings.Contains(string(infos[0].Options), `"description"`) {
		t.Errorf("collection options %+v, %v; want an indexing deny list", infos, err)
	}
	// Another collection name with other options must not clash with an existing one.
	if err := c.CreateCollection(t.Context(), "other", dataapi.CollectionOptions{IndexingDeny: []string{"x"}}); err != nil {
		t.Fatal(err)
	}
	_, err = reqstore.OpenAstra(t.Context(), reqstore.AstraConfig{Client: c, Collection: "other"})
	var ae *dataapi.APIError
	if !errors.As(err, &ae) || ae.Code != dataapi.CodeExistingCollectionSettings {
		t.Errorf("open on a collection with other options: %v", err)
	}
	srv.ResetStats() // that refusal is counted as a violation on purpose
}

// crashCase is a scenario of TestAstraCrashRecovery: the Data API command that fails, how and
// how often, and the requirement command applied.
type crashCase struct {
	name    string
	command string // the Data API command that fails
	fault   dataapitest.Fault
	n       int // consecutive failures injected (the client makes 2 attempts)
	// firstErr: the first ApplyCommand returns an error (else the store recovered on
	// its own, within the same call).
	firstErr bool
	cmd      func(t testing.TB) requirements.Command
}

// TestAstraCrashRecovery: a failure after the record's conditional write (the commit point)
// and before the audit document or the markers are stored, followed by a redelivery with the
// same message id, leaves the record written once, the version bumped once, the audit entry
// stored once, and returns the applied outcome.
func TestAstraCrashRecovery(t *testing.T) {
	tests := []crashCase{
		{name: "marker insert fails", command: "insertOne", fault: dataapitest.FaultHTTP503, n: 2, firstErr: true, cmd: decideCmd},
		{name: "audit insert fails", command: "insertMany", fault: dataapitest.FaultRetryableCode, n: 2, firstErr: true, cmd: decideCmd},
		{name: "state write response lost", command: "findOneAndReplace", fault: dataapitest.FaultLostResponse, n: 1, cmd: decideCmd},
		{name: "marker write response lost", command: "insertOne", fault: dataapitest.FaultLostResponse, n: 1, cmd: decideCmd},
		{name: "version audit insert fails", command: "insertMany", fault: dataapitest.FaultHTTP504, n: 2, firstErr: true, cmd: reqtest.SubmitRequirements},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkCrashRecovery(t, tt) })
	}
}

// checkCrashRecovery applies tt's command with the fault injected, then redelivers it twice,
// and checks the outcomes, the feature's version, the audit documents and the audit chain.
func checkCrashRecovery(t *testing.T, tt crashCase) {
	srv := newDataAPI(t, dataapitest.Config{})
	s := openAstra(t, srv)
	ctx := t.Context()
	reqtest.Apply(t, s, reqtest.SubmitFeature(reqtest.ReqID), "m-submit")
	cmd := tt.cmd(t)

	srv.SetCommandFilter(tt.command)
	srv.InjectNext(tt.n, tt.fault)
	first, err := s.ApplyCommand(ctx, cmd, "m-1")
	if tt.firstErr {
		if err == nil {
			t.Fatalf("first attempt succeeded despite the fault: %+v", first)
		}
		if fault.IsPermanent(err) {
			t.Fatalf("first attempt failed permanently, it would be dead-lettered: %v", err)
		}
	} else if err != nil || !first.Applied {
		t.Fatalf("first attempt: %+v, %v", first, err)
	}
	srv.SetCommandFilter()
	if faults := srv.Stats().Faults[tt.fault]; faults != tt.n {
		t.Fatalf("%d faults injected, want %d", faults, tt.n)
	}
	if len(astraDocs(srv, "cmd:"+cmd.CommandID)) != 0 && tt.firstErr {
		t.Fatal("the marker was written although the attempt failed")
	}

	again := reqtest.Apply(t, s, cmd, "m-1") // the redelivery
	wantSeq := int64(2)
	if cmd.Type == requirements.TypeSubmitRequirements {
		wantSeq = 1
	}
	if !again.Applied || again.Refusal != nil || again.Audit == nil || again.Audit.Seq != wantSeq {
		t.Fatalf("redelivery outcome %+v", again)
	}
	if !tt.firstErr && reqtest.MustJSON(stripAlready(again)) != reqtest.MustJSON(first) {
		t.Errorf("redelivery outcome\n%s\nfirst outcome\n%s", reqtest.MustJSON(again), reqtest.MustJSON(first))
	}
	third := reqtest.Apply(t, s, cmd, "m-1")
	if !third.AlreadyApplied || reqtest.MustJSON(stripAlready(third)) != reqtest.MustJSON(stripAlready(again)) {
		t.Errorf("third delivery %+v, want the recorded outcome", third)
	}
	if rec, err := s.CommandOutcome(ctx, cmd.CommandID); err != nil || reqtest.MustJSON(rec) != reqtest.MustJSON(stripAlready(again)) {
		t.Errorf("CommandOutcome = %+v, %v", rec, err)
	}

	f, err := s.GetFeature(ctx, reqtest.ReqID)
	if err != nil {
		t.Fatal(err)
	}
	wantVersion, wantAudit := int64(2), 2
	if cmd.Type == requirements.TypeSubmitRequirements {
		wantVersion = 1
		if vs, err := s.ListVersions(ctx); err != nil || len(vs) != 1 {
			t.Errorf("versions %+v, %v; want exactly one", vs, err)
		}
	}
	if f.Version != wantVersion {
		t.Errorf("feature version %d, want %d", f.Version, wantVersion)
	}
	if n := len(astraDocs(srv, "audit:")); n != wantAudit {
		t.Errorf("%d audit documents, want %d", n, wantAudit)
	}
	if integ, err := s.VerifyAudit(ctx); err != nil || !integ.Valid || integ.Entries != wantAudit {
		t.Errorf("VerifyAudit = %+v, %v", integ, err)
	}
}

func decideCmd(testing.TB) requirements.Command {
	return reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, reqtest.Ptr("fits"), reqtest.Ptr(int64(1)))
}

func stripAlready(o requirements.Outcome) requirements.Outcome {
	o.AlreadyApplied = false
	return o
}

// TestAstraConcurrentDecisions: 8 goroutines, each with its own store and client (8 worker
// processes), reqtest.Decide the same pending request; exactly one applies. With injected faults
// (lost responses, gateway errors) each goroutine redelivers its message until it gets an
// outcome, as the pipeline would; the effect is still exactly one decision.
func TestAstraConcurrentDecisions(t *testing.T) {
	for _, chaos := range []bool{false, true} {
		t.Run(fmt.Sprintf("faults=%v", chaos), func(t *testing.T) {
			srv := newDataAPI(t, dataapitest.Config{Seed: 7})
			const n = 8
			stores := make([]*reqstore.AstraStore, n)
			for i := range stores {
				stores[i] = openAstra(t, srv)
			}
			reqtest.Apply(t, stores[0], reqtest.SubmitFeature(reqtest.ReqID), "")
			cmds := make([]requirements.Command, n)
			for i := range cmds {
				action := requirements.ActionApprove
				if i%2 == 1 {
					action = requirements.ActionReject
				}
				cmds[i] = reqtest.Decide(reqtest.ReqID, action, nil, nil)
			}
			if chaos {
				srv.SetFaultRate(0.2, dataapitest.FaultLostResponse, dataapitest.FaultHTTP503, dataapitest.FaultRetryableCode)
			}
			outs := make([]requirements.Outcome, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					for range 50 { // redeliveries
						outs[i], errs[i] = stores[i].ApplyCommand(t.Context(), cmds[i], "msg-"+strconv.Itoa(i))
						if errs[i] == nil || fault.IsPermanent(errs[i]) {
							return
						}
					}
				})
			}
			close(start)
			wg.Wait()
			srv.SetFaultRate(0)
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			applied := 0
			var winner requirements.Outcome
			for i, o := range outs {
				switch {
				case o.Applied:
					applied++
					winner = o
				case o.Refusal != nil && o.Refusal.Code == requirements.RefusalAlreadyDecided:
				default:
					t.Errorf("goroutine %d: unexpected outcome %+v", i, o)
				}
			}
			if applied != 1 {
				t.Fatalf("%d applied, want exactly 1", applied)
			}
			f, err := stores[3].GetFeature(t.Context(), reqtest.ReqID)
			if err != nil || f.Status != winner.Feature.Status || f.Version != 2 {
				t.Errorf("stored %+v, %v; winner %+v", f, err, winner.Feature)
			}
			if got := len(astraDocs(srv, "audit:")); got != 2 {
				t.Errorf("%d audit documents, want 2", got)
			}
			if got := len(astraDocs(srv, "cmd:")); got != n+1 {
				t.Errorf("%d command markers, want %d", got, n+1)
			}
			if integ, err := stores[5].VerifyAudit(t.Context()); err != nil || !integ.Valid || integ.Entries != 2 {
				t.Errorf("VerifyAudit = %+v, %v", integ, err)
			}
			if chaos && srv.Stats().Faults[dataapitest.FaultLostResponse] == 0 {
				t.Error("no lost response was injected")
			}
		})
	}
}

// TestAstraTamperDetection edits and removes audit documents behind the store's back.
func TestAstraTamperDetection(t *testing.T) {
	tests := []struct {
		name   string
		tamper func(t *testing.T, c *dataapi.Client)
		want   []string
	}{
		{
			name: "edited reason",
			tamper: func(t *testing.T, c *dataapi.Client) {
				update(t, c, "audit:"+reqtest.ReqID+":0000000002", map[string]any{"$set": map[string]any{"reason": "edited"}})
			},
			want: []string{"Line 6: checksum mismatch"}, // FR-123 sorts first: lines 1-4 are its chain
		},
		{
			name: "edited entry with a recomputed checksum breaks the next link",
			tamper: func(t *testing.T, c *dataapi.Client) {
				id := "audit:" + reqtest.ReqID + ":0000000002"
				raw, err := c.FindOne(t.Context(), reqstore.DefaultAstraCollection, map[string]any{"_id": id}, nil)
				if err != nil {
					t.Fatal(err)
				}
				var e requirements.AuditEntry
				if err := json.Unmarshal(raw, &e); err != nil {
					t.Fatal(err)
				}
				e.Admin = "mallory"
				update(t, c, id, map[string]any{"$set": map[string]any{"admin": e.Admin, "checksum": requirements.AuditChecksum(e)}})
			},
			want: []string{"Line 7: chain broken"},
		},
		{
			name: "removed middle entry",
			tamper: func(t *testing.T, c *dataapi.Client) {
				remove(t, c, "audit:"+reqtest.ReqID+":0000000002")
			},
			want: []string{"Line 6: chain broken"}, // the old line 7 is now line 6
		},
		{
			name: "removed last entry",
			tamper: func(t *testing.T, c *dataapi.Client) {
				remove(t, c, "audit:"+reqtest.ReqID+":0000000003")
			},
			want: []string{"Request " + reqtest.ReqID + ": audit trail ends at seq 2, the record is at version 3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newDataAPI(t, dataapitest.Config{})
			s := openAstra(t, srv)
			reqtest.Apply(t, s, reqtest.SubmitFeature("FR-123"), "")
			reqtest.Apply(t, s, reqtest.Decide("FR-123", requirements.ActionApprove, nil, nil), "")
			reqtest.Apply(t, s, reqtest.Transition("FR-123", requirements.StatusInProgress, nil), "")
			reqtest.Apply(t, s, reqtest.Transition("FR-123", requirements.StatusCompleted, nil), "")
			reqtest.Apply(t, s, reqtest.SubmitFeature(reqtest.ReqID), "")
			reqtest.Apply(t, s, reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, reqtest.Ptr("ok"), nil), "")
			reqtest.Apply(t, s, reqtest.Transition(reqtest.ReqID, requirements.StatusInProgress, nil), "")
			if integ, err := s.VerifyAudit(t.Context()); err != nil || !integ.Valid || integ.Entries != 7 {
				t.Fatalf("before tampering: %+v, %v", integ, err)
			}
			tt.tamper(t, newAstraClient(t, srv))
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

func update(t *testing.T, c *dataapi.Client, id string, upd map[string]any) {
	t.Helper()
	if res, err := c.UpdateOne(t.Context(), reqstore.DefaultAstraCollection, map[string]any{"_id": id}, upd, false); err != nil || res.Modified != 1 {
		t.Fatalf("update %s: %+v, %v", id, res, err)
	}
}

func remove(t *testing.T, c *dataapi.Client, id string) {
	t.Helper()
	if n, err := c.DeleteMany(t.Context(), reqstore.DefaultAstraCollection, map[string]any{"_id": id}); err != nil || n != 1 {
		t.Fatalf("delete %s: %d, %v", id, n, err)
	}
}

// TestAstraAuditOrderAcrossPages: more entries than a server page, listed newest first in
// append order, and a request's own trail by seq.
func TestAstraAuditOrderAcrossPages(t *testing.T) {
	srv := newDataAPI(t, dataapitest.Config{PageSize: 20})
	s := openAstra(t, srv)
	ctx := t.Context()
	var ids []string
	for i := range 45 {
		id := fmt.Sprintf("FR-%03d", i)
		ids = append(ids, id)
		reqtest.Apply(t, s, reqtest.SubmitFeature(id), "")
	}
	audit, err := s.ListAudit(ctx, "", 0)
	if err != nil || len(audit) != 45 {
		t.Fatalf("ListAudit = %d entries, %v", len(audit), err)
	}
	for i, e := range audit {
		if want := ids[44-i]; e.RequestID != want {
			t.Fatalf("entry %d is %s, want %s", i, e.RequestID, want)
		}
	}
	if short, err := s.ListAudit(ctx, "", 30); err != nil || len(short) != 30 || short[29].RequestID != ids[15] {
		t.Errorf("ListAudit limit 30: %d entries, %v", len(short), err)
	}
	p, err := s.ListFeatures(ctx, requirements.FeatureQuery{Limit: 44})
	if err != nil || len(p.Features) != 44 || p.NextCursor == "" {
		t.Fatalf("ListFeatures 44: %d, %q, %v", len(p.Features), p.NextCursor, err)
	}
	rest, err := s.ListFeatures(ctx, requirements.FeatureQuery{Limit: 44, Cursor: p.NextCursor})
	if err != nil || len(rest.Features) != 1 || rest.Features[0].RequestID != ids[0] || rest.NextCursor != "" {
		t.Errorf("second page %+v, %v", rest, err)
	}
}

// TestAstraImportCompletesPartialRun: an import that failed half way (here: the audit write)
// is completed by running it again; nothing is duplicated.
func TestAstraImportCompletesPartialRun(t *testing.T) {
	var files []requirements.LegacyFile
	for _, name := range reqtest.FixtureNames() {
		files = append(files, requirements.LegacyFile{Name: name, Data: reqtest.ReadFixture(t, name)})
	}
	srv := newDataAPI(t, dataapitest.Config{})
	s := openAstra(t, srv)
	ctx := t.Context()

	srv.SetCommandFilter("insertMany")
	srv.InjectNext(2, dataapitest.FaultHTTP503) // the audit write of the first file, both attempts
	if _, err := s.Import(ctx, files); err == nil || !strings.Contains(err.Error(), "run the import again") {
		t.Fatalf("import with a failing audit write: %v", err)
	}
	srv.SetCommandFilter()
	if n := len(astraDocs(srv, "audit:")); n != 0 {
		t.Fatalf("%d audit documents after the failure", n)
	}
	rep, err := s.Import(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Skipped) != 1 || len(rep.Features) != 3 || len(rep.Versions) != 0 {
		t.Errorf("second run %+v: want the first file skipped, the rest imported", rep)
	}
	if n := len(astraDocs(srv, "audit:")); n != 4 {
		t.Errorf("%d audit documents, want 4", n)
	}
	if integ, err := s.VerifyAudit(ctx); err != nil || !integ.Valid || integ.Entries != 4 {
		t.Errorf("VerifyAudit %+v %v", integ, err)
	}
}
