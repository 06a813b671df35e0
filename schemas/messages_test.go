package schemas_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas"
)

func intPtr(i int) *int { return &i }

// TestGoTypesValidate marshals the Go message types and validates the result, so the types
// cannot drift from the schemas.
func TestGoTypesValidate(t *testing.T) {
	v := newValidator(t)
	at := time.Date(2025, 9, 10, 10, 4, 2, 123456789, time.UTC)
	cest := time.FixedZone("CEST", 2*3600)
	tests := []struct {
		name   string
		schema schemas.Name
		value  any
	}{
		{name: "bundle of two", schema: schemas.ChunkBundle, value: schemas.ChunkBundlePayload{Items: []schemas.BundleItem{
			{Index: 0, Chunk: json.RawMessage(`{"id":"a","text":"x"}`)}, {Index: 5, Chunk: json.RawMessage(`{"chunk_id":"b","content":"y"}`)},
		}}},
		{name: "open minimal", schema: schemas.JobEvent, value: schemas.JobOpen{JobID: "j1", Env: schemas.Dev, CreatedAt: at}},
		{name: "open zero time", schema: schemas.JobEvent, value: schemas.JobOpen{JobID: "j1", Env: schemas.Prod}},
		{name: "open full, offset time", schema: schemas.JobEvent, value: schemas.JobOpen{
			JobID: "job_1757237159_c8623a8fec21", Env: schemas.Test, File: "x.jsonl", Format: "pass_c_jsonl",
			SourceJobID: "job 1757237159/c8623a8fec21", CreatedAt: at.In(cest),
		}},
		{name: "seal clean, nil lists", schema: schemas.JobEvent, value: schemas.JobSeal{
			JobID: "j1", Env: schemas.Dev, Total: 400, Published: 400, SealedAt: at,
		}},
		{name: "seal with rejections and warnings", schema: schemas.JobEvent, value: schemas.JobSeal{
			JobID: "j1", Env: schemas.Dev, Total: 42, Published: 40, Rejected: 2,
			Rejections: []schemas.ItemIssue{{Index: 34, Reason: "item 34: no id"}, {Index: 37, Reason: "item 37: id is a number"}},
			Warnings:   []schemas.ItemIssue{{Index: 12, ID: "c_006", Reason: "duplicate id"}},
			SealedAt:   at,
		}},
		{name: "seal truncated", schema: schemas.JobEvent, value: schemas.JobSeal{
			JobID: "j1", Env: schemas.Dev, Total: 2000, Published: 0, Rejected: 2000,
			Rejections: make([]schemas.ItemIssue, 0), RejectionsTruncated: true, SealedAt: at,
		}},
		{name: "envelope open", schema: schemas.JobEvent, value: schemas.JobEventEnvelope{
			Type: schemas.JobTypeOpen, Open: &schemas.JobOpen{JobID: "j1", Env: schemas.Dev, CreatedAt: at},
		}},
		{name: "envelope seal", schema: schemas.JobEvent, value: schemas.JobEventEnvelope{
			Type: schemas.JobTypeSeal, Seal: &schemas.JobSeal{JobID: "j1", Env: schemas.Dev, SealedAt: at},
		}},
		{name: "dead letter zero-ish: nil headers, nil payload", schema: schemas.DeadLetter, value: schemas.DeadLetterEnvelope{
			ID: "dl1", Subject: schemas.ChunkSubject(schemas.Dev), Error: schemas.DeadLetterError{Class: string(fault.Validation), Message: "bad"},
			Attempts: 1, FirstFailure: at, LastFailure: at, Stream: schemas.StreamChunks, StreamSeq: 1, DeadLetteredAt: at,
		}},
		{name: "dead letter binary payload, nil header value, item 0", schema: schemas.DeadLetter, value: schemas.DeadLetterEnvelope{
			ID: "dl2", Subject: schemas.JobSubject(schemas.Prod),
			Headers:  map[string][]string{schemas.HeaderJob: {"j1"}, "Empty": nil, "Multi": {"a", "b"}},
			Payload:  []byte{0x00, 0xff, 0xfe, 0x80, '{', 0xc3, 0x28},
			Error:    schemas.DeadLetterError{Class: string(fault.Exhausted), Message: "503", Sink: "astra"},
			Attempts: 8, FirstFailure: at, LastFailure: at.Add(time.Minute), Stream: schemas.StreamJobs, StreamSeq: 1 << 40,
			Consumer: "c", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", JobID: "j1", Item: intPtr(0),
			DeadLetteredAt: at.In(cest), Replays: 3,
		}},
	}
	for n := range 7 {
		tests = append(tests, struct {
			name   string
			schema schemas.Name
			value  any
		}{name: "dead letter payload of " + strings.Repeat("x", n), schema: schemas.DeadLetter, value: schemas.DeadLetterEnvelope{
			ID: "dl", Subject: "s", Payload: []byte(strings.Repeat("x", n)), Error: schemas.DeadLetterError{Class: "limit", Message: "m"},
			Attempts: 1, FirstFailure: at, LastFailure: at, Stream: "S", StreamSeq: 9, DeadLetteredAt: at,
		}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.value)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Validate(tt.schema, b); err != nil {
				t.Fatalf("%s\n%v", b, err)
			}
		})
	}
}

// TestExamplesRoundTrip decodes every valid job and dead-letter example into the Go types and
// encodes it again: nothing may be lost or changed, so the types cover every schema field.
func TestExamplesRoundTrip(t *testing.T) {
	v := newValidator(t)
	tests := []struct {
		name   string
		schema schemas.Name
		decode func([]byte) (any, error)
	}{
		{name: "job", schema: schemas.JobEvent, decode: func(b []byte) (any, error) {
			var e schemas.JobEventEnvelope
			err := json.Unmarshal(b, &e)
			return e, err
		}},
		{name: "dead-letter", schema: schemas.DeadLetter, decode: func(b []byte) (any, error) {
			var d schemas.DeadLetterEnvelope
			err := json.Unmarshal(b, &d)
			return d, err
		}},
	}
	for _, tt := range tests {
		paths, err := filepath.Glob(filepath.Join("examples", tt.name, "valid", "*.json"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("no examples for %s: %v", tt.name, err)
		}
		for _, p := range paths {
			t.Run(tt.name+"/"+filepath.Base(p), func(t *testing.T) {
				in, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				val, err := tt.decode(in)
				if err != nil {
					t.Fatal(err)
				}
				out, err := json.Marshal(val)
				if err != nil {
					t.Fatal(err)
				}
				if err := v.Validate(tt.schema, out); err != nil {
					t.Fatalf("re-encoded example invalid: %v\n%s", err, out)
				}
				var a, b map[string]any
				if err := json.Unmarshal(in, &a); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(out, &b); err != nil {
					t.Fatal(err)
				}
				dropEmpty(a)
				if diff := diffJSON("", a, b); diff != "" {
					t.Errorf("round trip changed the message: %s\nin:  %s\nout: %s", diff, in, out)
				}
			})
		}
	}
}

// dropEmpty removes empty optional lists, which the Go types omit (absent means none).
func dropEmpty(m map[string]any) {
	for _, k := range []string{"rejections", "warnings"} {
		if l, ok := m[k].([]any); ok && len(l) == 0 {
			delete(m, k)
		}
	}
}

// diffJSON compares decoded JSON values, treating equal instants in different RFC 3339 forms
// as equal. It returns "" when equal, else the first difference.
func diffJSON(path string, a, b any) string {
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			return path + ": type differs"
		}
		keys := make([]string, 0, len(av)+len(bv))
		for k := range av {
			keys = append(keys, k)
		}
		for k := range bv {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			if d := diffJSON(path+"/"+k, av[k], bv[k]); d != "" {
				return d
			}
		}
		return ""
	case string:
		bs, ok := b.(string)
		if !ok {
			return path + ": type differs"
		}
		ta, errA := time.Parse(time.RFC3339Nano, av)
		tb, errB := time.Parse(time.RFC3339Nano, bs)
		if errA == nil && errB == nil {
			if !ta.Equal(tb) {
				return path + ": instant differs"
			}
			return ""
		}
		if av != bs {
			return path + ": " + av + " != " + bs
		}
		return ""
	}
	if !reflect.DeepEqual(a, b) {
		return path + ": value differs"
	}
	return ""
}

// schemaObject is what TestGoFieldsMatchSchemaProperties reads of a JSON Schema object.
type schemaObject struct {
	Properties           map[string]json.RawMessage `json:"properties"`
	Required             []string                   `json:"required"`
	AdditionalProperties *bool                      `json:"additionalProperties"`
}

// goFieldsCase is a scenario of TestGoFieldsMatchSchemaProperties: a Go type and the schema
// object it is written as.
type goFieldsCase struct {
	name string
	typ  reflect.Type
	obj  schemaObject
	// extra are properties the type writes itself (MarshalJSON), always present.
	extra []string
}

// TestGoFieldsMatchSchemaProperties compares each Go type's JSON fields with the properties of
// its schema object, and omitempty with "required": a required property is never omitted, an
// optional one is omitted when zero.
func TestGoFieldsMatchSchemaProperties(t *testing.T) {
	load := func(name schemas.Name) map[string]json.RawMessage {
		raw, _ := schemas.Schema(name)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	obj := func(raw json.RawMessage) schemaObject {
		var o schemaObject
		if err := json.Unmarshal(raw, &o); err != nil {
			t.Fatal(err)
		}
		return o
	}
	job, dl, bundle := load(schemas.JobEvent), load(schemas.DeadLetter), load(schemas.ChunkBundle)
	var jobDefs map[string]json.RawMessage
	if err := json.Unmarshal(job["$defs"], &jobDefs); err != nil {
		t.Fatal(err)
	}
	dlTop := obj(mustMarshal(t, dl))
	bundleTop := obj(mustMarshal(t, bundle))
	var bundleItems struct {
		Items json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(bundleTop.Properties["items"], &bundleItems); err != nil {
		t.Fatal(err)
	}
	tests := []goFieldsCase{
		{name: "JobOpen", typ: reflect.TypeFor[schemas.JobOpen](), obj: obj(jobDefs["open"]), extra: []string{"type"}},
		{name: "JobSeal", typ: reflect.TypeFor[schemas.JobSeal](), obj: obj(jobDefs["seal"]), extra: []string{"type"}},
		{name: "JobRollback", typ: reflect.TypeFor[schemas.JobRollback](), obj: obj(jobDefs["rollback"]), extra: []string{"type"}},
		{name: "ItemIssue", typ: reflect.TypeFor[schemas.ItemIssue](), obj: obj(jobDefs["issue"])},
		{name: "DeadLetterEnvelope", typ: reflect.TypeFor[schemas.DeadLetterEnvelope](), obj: dlTop},
		{name: "DeadLetterError", typ: reflect.TypeFor[schemas.DeadLetterError](), obj: obj(dlTop.Properties["error"])},
		{name: "ChunkBundlePayload", typ: reflect.TypeFor[schemas.ChunkBundlePayload](), obj: bundleTop},
		{name: "BundleItem", typ: reflect.TypeFor[schemas.BundleItem](), obj: obj(bundleItems.Items)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkGoFieldsMatch(t, tt) })
	}
}

// checkGoFieldsMatch checks that tt.obj forbids additional properties, that its properties are
// exactly tt.typ's JSON fields (and tt.extra), and that a property is required exactly when
// its field is not omitempty.
func checkGoFieldsMatch(t *testing.T, tt goFieldsCase) {
	if tt.obj.AdditionalProperties == nil || *tt.obj.AdditionalProperties {
		t.Error("schema schemaObject must set additionalProperties: false")
	}
	goFields := map[string]bool{} // name -> omitted when zero
	for _, e := range tt.extra {
		goFields[e] = false
	}
	for i := range tt.typ.NumField() {
		f := tt.typ.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			t.Fatalf("field %s has no json name", f.Name)
		}
		goFields[name] = strings.Contains(opts, "omitempty")
	}
	for p := range tt.obj.Properties {
		if _, ok := goFields[p]; !ok {
			t.Errorf("schema property %q has no Go field", p)
		}
	}
	for name, omitted := range goFields {
		if _, ok := tt.obj.Properties[name]; !ok {
			t.Errorf("Go field %q is not a schema property", name)
			continue
		}
		required := slices.Contains(tt.obj.Required, name)
		if required == omitted {
			t.Errorf("property %q: required=%v but Go omitempty=%v", name, required, omitted)
		}
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDeadLetterClassesMatchFault keeps the schema's error classes equal to pipeline/fault's.
func TestDeadLetterClassesMatchFault(t *testing.T) {
	raw, _ := schemas.Schema(schemas.DeadLetter)
	var s struct {
		Properties struct {
			Error struct {
				Properties struct {
					Class struct {
						Enum []string `json:"enum"`
					} `json:"class"`
				} `json:"properties"`
			} `json:"error"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	got := s.Properties.Error.Properties.Class.Enum
	want := []string{}
	for _, c := range []fault.Class{fault.Validation, fault.Limit, fault.Rejected, fault.Auth, fault.Transient, fault.Exhausted} {
		want = append(want, string(c))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("schema classes %v, fault classes %v", got, want)
	}
}

func TestJobSealCheck(t *testing.T) {
	issues := func(idx ...int) []schemas.ItemIssue {
		var out []schemas.ItemIssue
		for _, i := range idx {
			out = append(out, schemas.ItemIssue{Index: i, Reason: "r"})
		}
		return out
	}
	tests := []struct {
		name string
		seal schemas.JobSeal
		want []string // substrings of the error; none means nil
	}{
		{name: "empty job", seal: schemas.JobSeal{}},
		{name: "clean", seal: schemas.JobSeal{Total: 3, Published: 3}},
		{name: "with rejections", seal: schemas.JobSeal{Total: 42, Published: 40, Rejected: 2, Rejections: issues(34, 37), Warnings: issues(12)}},
		{name: "truncated", seal: schemas.JobSeal{Total: 10, Published: 5, Rejected: 5, Rejections: issues(0, 1), RejectionsTruncated: true}},
		{name: "totals mismatch", seal: schemas.JobSeal{Total: 5, Published: 3, Rejected: 1, Rejections: issues(0)}, want: []string{"total 5 != published 3 + rejected 1"}},
		{name: "fewer rejections listed, not truncated", seal: schemas.JobSeal{Total: 5, Published: 3, Rejected: 2, Rejections: issues(0)}, want: []string{"lists 1 items but rejected is 2"}},
		{name: "truncated but complete", seal: schemas.JobSeal{Total: 5, Published: 3, Rejected: 2, Rejections: issues(0, 1), RejectionsTruncated: true}, want: []string{"rejections_truncated is set"}},
		{name: "index out of range", seal: schemas.JobSeal{Total: 2, Published: 1, Rejected: 1, Rejections: issues(2), Warnings: issues(-1)}, want: []string{"rejections[0]: index 2", "warnings[0]: index -1"}},
		{name: "every problem at once", seal: schemas.JobSeal{Total: 1, Published: 1, Rejected: 1}, want: []string{"total 1 !=", "lists 0 items"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.seal.Check()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check passed, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestJobEventEnvelope(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantType schemas.JobEventType
		wantErr  bool
	}{
		{name: "open", doc: `{"type":"open","job_id":"j","env":"dev","created_at":"2025-09-10T10:04:02Z"}`, wantType: schemas.JobTypeOpen},
		{name: "seal", doc: `{"type":"seal","job_id":"j","env":"dev","total":1,"published":1,"rejected":0,"sealed_at":"2025-09-10T10:04:02Z"}`, wantType: schemas.JobTypeSeal},
		{name: "rollback", doc: `{"type":"rollback","job_id":"j","env":"dev","requested_at":"2025-09-10T10:04:02Z"}`, wantType: schemas.JobTypeRollback},
		{name: "unknown type", doc: `{"type":"close"}`, wantErr: true},
		{name: "no type", doc: `{"job_id":"j"}`, wantErr: true},
		{name: "bad field type", doc: `{"type":"seal","total":"1"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e schemas.JobEventEnvelope
			err := json.Unmarshal([]byte(tt.doc), &e)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("decoded %+v, want an error", e)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Type != tt.wantType || (e.Open != nil) != (tt.wantType == schemas.JobTypeOpen) || (e.Seal != nil) != (tt.wantType == schemas.JobTypeSeal) {
				t.Fatalf("decoded %+v", e)
			}
			if e.Seal != nil && (e.Seal.Total != 1 || e.Seal.JobID != "j") {
				t.Fatalf("seal fields lost: %+v", e.Seal)
			}
			if e.Open != nil && !e.Open.CreatedAt.Equal(time.Date(2025, 9, 10, 10, 4, 2, 0, time.UTC)) {
				t.Fatalf("open fields lost: %+v", e.Open)
			}
		})
	}
	if _, err := json.Marshal(schemas.JobEventEnvelope{Type: schemas.JobTypeSeal}); err == nil {
		t.Error("marshalling an envelope without its event succeeded")
	}
	if _, err := json.Marshal(schemas.JobEventEnvelope{Type: schemas.JobTypeOpen, Seal: &schemas.JobSeal{}}); err == nil {
		t.Error("marshalling an envelope whose event does not match its type succeeded")
	}
}
