// Package reqtest builds requirement commands and reads the Python service's stored records for
// the tests of requirement code: the domain (pipeline/requirements), the stores (sinks/reqstore
// and its conformance suite) and the command worker. It is imported only by tests.
package reqtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// T0 is the time the first built command is issued at; each later one is a second later.
var T0 = time.Date(2025, 10, 9, 8, 53, 20, 123456000, time.UTC)

// ReqID is the feature request id the tests use.
const ReqID = "FR-17600000001234567"

// Ptr returns a pointer to v.
func Ptr[T any](v T) *T { return &v }

var cmdSeq atomic.Int64

// Header returns a command of type typ with a new command id (cmd_N), actor api-admin, issued
// a second after the one before. Safe for concurrent use.
func Header(typ requirements.CommandType) requirements.Command {
	n := cmdSeq.Add(1)
	return requirements.Command{Type: typ, CommandID: fmt.Sprintf("cmd_%d", n), Actor: "api-admin", IssuedAt: T0.Add(time.Duration(n) * time.Second)}
}

// SubmitFeature returns a submission of feature request id.
func SubmitFeature(id string) requirements.Command {
	c := Header(requirements.TypeSubmitFeatureRequest)
	c.SubmitFeatureRequest = &requirements.SubmitFeatureRequest{
		RequestID: id, Title: "Initiative tracker (combat)", Description: "Track initiative order: metadata: <b>as given</b>",
		Priority: "high", Requester: "gm.alice", Category: "ui", UserStory: "As a game master I want an initiative list so that turns are fair",
		Tags: []string{"combat"}, EffortEstimate: Ptr(8),
	}
	return c
}

// Decide returns a decision (approve or reject) on feature request id.
func Decide(id, action string, reason *string, expected *int64) requirements.Command {
	c := Header(requirements.TypeDecideFeatureRequest)
	c.Decide = &requirements.DecideFeatureRequest{RequestID: id, Action: action, Reason: reason, ExpectedVersion: expected}
	return c
}

// Transition returns a move of feature request id to status to.
func Transition(id string, to requirements.Status, expected *int64) requirements.Command {
	c := Header(requirements.TypeTransitionFeatureRequest)
	c.Transition = &requirements.TransitionFeatureRequest{RequestID: id, To: to, ExpectedVersion: expected}
	return c
}

// MustObject decodes s as a JSON object, failing t when it is not one.
func MustObject(t testing.TB, s string) *requirements.Object {
	t.Helper()
	var o requirements.Object
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		t.Fatal(err)
	}
	return &o
}

// SubmitRequirements returns a requirements submission (two functional, one non-functional).
func SubmitRequirements(t testing.TB) requirements.Command {
	c := Header(requirements.TypeSubmitRequirements)
	c.SubmitRequirements = &requirements.SubmitRequirements{
		Title: "Dice Roller Service", Version: "2.1.0", Description: "Requirements for the dice roller — ünïcode",
		Requirements: MustObject(t, `{"functional":[{"id":"DR-001","title":"Roll","description":"Roll 3d6","priority":"high"},
			{"id":"DR-002","title":"History","description":"Keep rolls","priority":"medium","dependencies":["DR-001","XX-999"]}],
			"non_functional":[{"id":"NFR-010","title":"Latency","description":"50 ms","priority":"low","category":"performance","dependencies":["DR-002"]}]}`),
		Stakeholders: []*requirements.Object{MustObject(t, `{"name":"GM","role":"Owner","involvement":"primary"}`)},
		Author:       "Rules team",
	}
	return c
}

// StateAt returns a state holding a feature request in status s at version v.
func StateAt(s requirements.Status, v int64) requirements.State {
	return requirements.State{Feature: &requirements.FeatureRequest{RequestID: ReqID, Title: "Title", Description: "Description", Priority: "low", Requester: "bob", Status: s, CreatedAt: "2025-09-06T22:01:43.437366", Version: v, Key: ReqID}}
}

// FixtureDir holds the Python service's stored records (shared/fixtures/ttrpg-center beside
// the repository). They carry no licence, so they are read in place and never copied here.
var FixtureDir = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "shared", "fixtures", "ttrpg-center")
}()

// The fixture files: a requirements version and three feature requests (pending, rejected,
// approved).
const (
	FixtureVersion  = "1757213987664.json"
	FixturePending  = "FR-17572141034372077.json"
	FixtureRejected = "FR-17572141034994902.json"
	FixtureApproved = "FR-17572141041457486.json"
)

// FixtureNames lists the fixture files.
func FixtureNames() []string {
	return []string{FixtureVersion, FixturePending, FixtureRejected, FixtureApproved}
}

// ReadFixture returns a fixture file, skipping the test when the shared fixtures are absent.
func ReadFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(FixtureDir, name))
	if os.IsNotExist(err) {
		t.Skipf("fixture %s not found in %s (the shared/ fixtures of the TTRPG-Center reference are not beside this checkout)", name, FixtureDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Deref returns *p, or "" for nil.
func Deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// MustJSON returns v as JSON text (v must encode).
func MustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Apply applies cmd to s with message id msgID, failing t on an error.
func Apply(t *testing.T, s requirements.Store, cmd requirements.Command, msgID string) requirements.Outcome {
	t.Helper()
	out, err := s.ApplyCommand(t.Context(), cmd, msgID)
	if err != nil {
		t.Fatalf("ApplyCommand(%s): %v", cmd.CommandID, err)
	}
	return out
}
