package requirements_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/requirements/reqtest"
	"github.com/sluice-dev/sluice/schemas"
)

func newValidator(t testing.TB) *requirements.Validator {
	t.Helper()
	v, err := requirements.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDecodeCommandExamples decodes every example of schemas/examples/command.
func TestDecodeCommandExamples(t *testing.T) {
	v := newValidator(t)
	for _, kind := range []string{"valid", "invalid"} {
		paths, err := filepath.Glob(filepath.Join("../../schemas/examples/command", kind, "*.json"))
		if err != nil || len(paths) < 3 {
			t.Fatalf("examples: %v %d", err, len(paths))
		}
		for _, p := range paths {
			t.Run(kind+"/"+filepath.Base(p), func(t *testing.T) {
				raw, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				cmd, err := v.DecodeCommand(raw)
				if kind == "invalid" {
					if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
						t.Fatalf("got %v, want a permanent validation error", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if cmd.Key() == "" || cmd.Actor != "api-admin" || cmd.IssuedAt.IsZero() {
					t.Errorf("decoded %+v", cmd)
				}
				if err := v.Check(cmd); err != nil {
					t.Errorf("Check of a decoded valid command: %v", err)
				}
				// Re-encoding gives the same JSON value (key order of bodies may differ).
				again, err := json.Marshal(cmd)
				if err != nil {
					t.Fatal(err)
				}
				var a, b any
				_ = json.Unmarshal(raw, &a)
				_ = json.Unmarshal(again, &b)
				if ja, jb := reqtest.MustJSON(a), reqtest.MustJSON(b); ja != jb {
					t.Errorf("round trip\n%s\n%s", ja, jb)
				}
			})
		}
	}
}

func TestCheck(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name    string
		cmd     func() requirements.Command
		problem string // "" = valid
	}{
		{name: "feature submission", cmd: func() requirements.Command { return reqtest.SubmitFeature(reqtest.ReqID) }},
		{name: "prose that Python's script check rejected", cmd: func() requirements.Command {
			c := reqtest.SubmitFeature(reqtest.ReqID)
			c.SubmitFeatureRequest.Description = `Show metadata: and data: fields; <script>alert(1)</script> is stored as given`
			return c
		}},
		{name: "title with apostrophe", cmd: func() requirements.Command {
			c := reqtest.SubmitFeature(reqtest.ReqID)
			c.SubmitFeatureRequest.Title = "Don't crash"
			return c
		}, problem: "/title"},
		{name: "user story not in the template", cmd: func() requirements.Command {
			c := reqtest.SubmitFeature(reqtest.ReqID)
			c.SubmitFeatureRequest.UserStory = "I want initiative tracking"
			return c
		}, problem: "/user_story"},
		{name: "actor from nowhere", cmd: func() requirements.Command {
			c := reqtest.SubmitFeature(reqtest.ReqID)
			c.Actor = ""
			return c
		}, problem: "/actor"},
		{name: "requirements submission", cmd: func() requirements.Command { return reqtest.SubmitRequirements(t) }},
		{name: "duplicate requirement ids", cmd: func() requirements.Command {
			c := reqtest.SubmitRequirements(t)
			c.SubmitRequirements.Requirements = reqtest.MustObject(t, `{"functional":[{"id":"DR-001","title":"a","description":"b","priority":"low"}],"non_functional":[{"id":"DR-001","title":"a","description":"b","priority":"low"}]}`)
			return c
		}, problem: "not unique"},
		{name: "requirements without non_functional", cmd: func() requirements.Command {
			c := reqtest.SubmitRequirements(t)
			c.SubmitRequirements.Requirements = reqtest.MustObject(t, `{"functional":[]}`)
			return c
		}, problem: "non_functional"},
		{name: "decision", cmd: func() requirements.Command {
			return reqtest.Decide(reqtest.ReqID, requirements.ActionReject, reqtest.Ptr("why"), reqtest.Ptr(int64(1)))
		}},
		{name: "empty reason", cmd: func() requirements.Command {
			return reqtest.Decide(reqtest.ReqID, requirements.ActionReject, reqtest.Ptr(""), nil)
		}, problem: "/reason"},
		{name: "transition", cmd: func() requirements.Command {
			return reqtest.Transition(reqtest.ReqID, requirements.StatusCompleted, nil)
		}},
		{name: "missing body", cmd: func() requirements.Command { return reqtest.Header(requirements.TypeTransitionFeatureRequest) }, problem: "without its body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := v.Check(tt.cmd())
			if tt.problem == "" {
				if err != nil {
					t.Fatalf("valid command refused: %v", err)
				}
				return
			}
			var r *requirements.Refusal
			if !errors.As(err, &r) || r.Code != requirements.RefusalInvalid || !strings.Contains(r.Message, tt.problem) {
				t.Fatalf("got %v, want invalid mentioning %q", err, tt.problem)
			}
		})
	}
}

func TestCommandJSON(t *testing.T) {
	c := reqtest.Decide(reqtest.ReqID, requirements.ActionApprove, nil, reqtest.Ptr(int64(2)))
	c.IssuedAt = time.Date(2025, 10, 9, 8, 53, 20, 123456789, time.FixedZone("x", 7200))
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"decide_feature_request","command_id":"` + c.CommandID + `","actor":"api-admin","issued_at":"2025-10-09T06:53:20.123456789Z","request_id":"FR-17600000001234567","action":"approve","expected_version":2}`
	if string(raw) != want {
		t.Errorf("got  %s\nwant %s", raw, want)
	}
	var back requirements.Command
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	if !back.IssuedAt.Equal(c.IssuedAt) || back.Decide == nil || *back.Decide.ExpectedVersion != 2 || back.Subject() != "sluice.v1.features."+reqtest.ReqID {
		t.Errorf("round trip %+v", back)
	}
	if s := reqtest.SubmitRequirements(t).Subject(); s != schemas.RequirementSubject(requirements.RequirementsKey) {
		t.Errorf("requirements subject %s", s)
	}
	for _, bad := range []string{`{"type":"nope","issued_at":"2025-10-09T06:53:20Z"}`, `{"type":"decide_feature_request","issued_at":"yesterday"}`, `[]`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	if _, err := json.Marshal(reqtest.Header(requirements.TypeDecideFeatureRequest)); err == nil {
		t.Error("marshalled a command without body")
	}
}

func TestRequestIDs(t *testing.T) {
	var ids requirements.RequestIDs
	now := time.UnixMilli(1757214103437)
	re := regexp.MustCompile(`^FR-1757214103437[0-9]{4}$`)
	for range 50 {
		if id := ids.Next(now); !re.MatchString(id) || !schemas.ValidKey(id) {
			t.Fatalf("Next = %q", id)
		}
	}
	// Issue 12: random digits collided once in 10,000 within a millisecond (a submission
	// refused as "already exists" in ≈15,000 under 1,000 clients). 30,000 ids from 8
	// goroutines in one millisecond: none repeats, and past 10,000 they borrow later ones.
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 30000 / 8 {
				id := ids.Next(now)
				mu.Lock()
				if seen[id] {
					t.Errorf("id %s made twice", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 30000/8*8 {
		t.Fatalf("%d distinct ids, want %d", len(seen), 30000/8*8)
	}
}

func TestParseTimestamp(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: "2025-09-06T21:59:47.664330", want: time.Date(2025, 9, 6, 21, 59, 47, 664330000, time.UTC)},
		{in: "2025-09-06T21:59:47", want: time.Date(2025, 9, 6, 21, 59, 47, 0, time.UTC)},
		{in: "2025-09-06T21:59:47.664330Z", want: time.Date(2025, 9, 6, 21, 59, 47, 664330000, time.UTC)},
		{in: "2025-09-06T23:59:47+02:00", want: time.Date(2025, 9, 6, 21, 59, 47, 0, time.UTC)},
		{in: "06/09/2025", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := requirements.ParseTimestamp(tt.in)
			if tt.bad != (err != nil) || (!tt.bad && !got.Equal(tt.want)) {
				t.Errorf("ParseTimestamp = %v, %v", got, err)
			}
		})
	}
	if s := requirements.FormatTimestamp(time.Date(2025, 9, 6, 23, 59, 47, 5000, time.FixedZone("x", 7200))); s != "2025-09-06T21:59:47.000005Z" {
		t.Errorf("FormatTimestamp = %s", s)
	}
}
