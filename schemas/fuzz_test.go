package schemas_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/schemas/record"
)

// addExampleSeeds adds every file under examples/<schema>/{valid,invalid} as a seed, with
// the index of its schema in schemas.Names().
func addExampleSeeds(f *testing.F) {
	for i, name := range schemas.Names() {
		file, _ := schemas.FileName(name)
		dir := filepath.Join("examples", strings.TrimSuffix(file, ".v1.json"))
		paths, _ := filepath.Glob(filepath.Join(dir, "*", "*.json"))
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data, uint8(i))
		}
	}
}

// FuzzValidate checks every schema against arbitrary documents: Validate never panics, says
// why in a *ValidationError of at most MaxProblems entries, and whatever it accepts, the Go
// decoder of that message accepts too (chunk: record.ID; job event:
// JobEventEnvelope; dead letter: DeadLetterEnvelope, which re-encodes to a valid dead letter;
// command: requirements.Command). Stored records (requirements, feature requests) have no Go
// decoder promised to match their schema; they are checked for Validate's own promises only.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzValidate$' -fuzztime 10m ./schemas/
func FuzzValidate(f *testing.F) {
	addExampleSeeds(f)
	f.Add([]byte(`{"id":"x","content":"y","embedding":[1e700]}`), uint8(0))
	f.Add([]byte(`{"id":"x","content":"y","embedding":[1,2,"3"]}`), uint8(0))
	f.Add([]byte("\xff"), uint8(2))
	v, err := schemas.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	cmds, err := requirements.NewValidator()
	if err != nil {
		f.Fatal(err)
	}
	names := schemas.Names()
	f.Fuzz(func(t *testing.T, doc []byte, which uint8) {
		name := names[int(which)%len(names)]
		err := v.Validate(name, doc)
		if err != nil {
			var ve *schemas.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate(%s) error is not a *ValidationError: %v", name, err)
			}
			if ve.Schema != name || len(ve.Problems) == 0 || len(ve.Problems) > schemas.MaxProblems {
				t.Fatalf("Validate(%s): malformed ValidationError %+v", name, ve)
			}
			return
		}
		switch name {
		case schemas.Chunk:
			if _, err := record.ID(doc); err != nil {
				t.Fatalf("chunk schema accepts %q but record.ID refuses it: %v", doc, err)
			}
		case schemas.JobEvent:
			var ev schemas.JobEventEnvelope
			if err := json.Unmarshal(doc, &ev); err != nil {
				t.Fatalf("job schema accepts %q but JobEventEnvelope refuses it: %v", doc, err)
			}
			if n := btoi(ev.Open != nil) + btoi(ev.Seal != nil) + btoi(ev.Rollback != nil); n != 1 {
				t.Fatalf("job event %q decoded into %d events", doc, n)
			}
		case schemas.DeadLetter:
			var d schemas.DeadLetterEnvelope
			if err := json.Unmarshal(doc, &d); err != nil {
				t.Fatalf("dead-letter schema accepts %q but DeadLetterEnvelope refuses it: %v", doc, err)
			}
			again, err := json.Marshal(d)
			if err != nil {
				t.Fatalf("re-encode dead letter %q: %v", doc, err)
			}
			if err := v.Validate(schemas.DeadLetter, again); err != nil {
				t.Fatalf("dead letter %q re-encodes to %s, which the schema refuses: %v", doc, again, err)
			}
		case schemas.Command:
			var c requirements.Command
			if err := json.Unmarshal(doc, &c); err != nil {
				t.Fatalf("command schema accepts %q but requirements.Command refuses it: %v", doc, err)
			}
			// DecodeCommand may still refuse it for a rule the schema cannot express, and
			// only with a *Refusal.
			if _, err := cmds.DecodeCommand(doc); err != nil {
				var rf *requirements.Refusal
				if !errors.As(err, &rf) {
					t.Fatalf("command schema accepts %q but DecodeCommand fails: %v", doc, err)
				}
			}
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzJobEventEnvelope decodes arbitrary bytes as a job event: no panic; a decoded event
// holds exactly the event its Type names, re-encodes, and decodes again to the same value.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzJobEventEnvelope$' -fuzztime 10m ./schemas/
func FuzzJobEventEnvelope(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("examples", "job", "*", "*.json"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"type":"seal","sealed_at":"2025-01-01T00:00:00Z","rejections":null}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		var ev schemas.JobEventEnvelope
		if err := json.Unmarshal(doc, &ev); err != nil {
			return
		}
		want := map[schemas.JobEventType]bool{
			schemas.JobTypeOpen: ev.Open != nil, schemas.JobTypeSeal: ev.Seal != nil, schemas.JobTypeRollback: ev.Rollback != nil,
		}
		for typ, set := range want {
			if set != (typ == ev.Type) {
				t.Fatalf("type %q decoded with open=%v seal=%v rollback=%v", ev.Type, ev.Open != nil, ev.Seal != nil, ev.Rollback != nil)
			}
		}
		enc, err := json.Marshal(ev)
		if err != nil {
			// A time.Time outside years 0-9999 decodes from RFC 3339 but cannot be encoded;
			// RFC 3339 text can only hold such years with a bad offset.
			return
		}
		var back schemas.JobEventEnvelope
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatalf("re-encoded event %s does not decode: %v", enc, err)
		}
		if !reflect.DeepEqual(normalize(ev), normalize(back)) {
			t.Fatalf("round trip changed the event:\n  %+v\n  %+v", ev, back)
		}
	})
}

// normalize drops what JSON cannot tell apart: a nil and an empty issue list (omitempty), and
// time zones of the same instant.
func normalize(ev schemas.JobEventEnvelope) schemas.JobEventEnvelope {
	if ev.Open != nil {
		o := *ev.Open
		o.CreatedAt = o.CreatedAt.UTC()
		ev.Open = &o
	}
	if ev.Seal != nil {
		s := *ev.Seal
		s.SealedAt = s.SealedAt.UTC()
		if len(s.Rejections) == 0 {
			s.Rejections = nil
		}
		if len(s.Warnings) == 0 {
			s.Warnings = nil
		}
		ev.Seal = &s
	}
	if ev.Rollback != nil {
		r := *ev.Rollback
		r.RequestedAt = r.RequestedAt.UTC()
		ev.Rollback = &r
	}
	return ev
}

// FuzzSubjects checks the subject, key, item and traceparent parsers on arbitrary strings:
// what they accept is what they promise, and the formatters and parsers are inverse.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzSubjects$' -fuzztime 10m ./schemas/
func FuzzSubjects(f *testing.F) {
	for _, s := range []string{
		"sluice.v1.chunks.dev", "sluice.v1.jobs.prod", "sluice.v1.graph.test", "sluice.dlq.v1.chunks.dev",
		"sluice.dlq.v1.", "sluice.dlq.x", "sluice.v1.chunks.dev.x", "FR-17572141034372077", "a b", "*", ">",
		"0", "007", "-1", "999999999999999", "9999999999999999",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if schemas.ValidKey(s) {
			if len(s) > schemas.MaxKeyLen || strings.ContainsAny(s, ".*> \t\r\n") {
				t.Fatalf("ValidKey accepts %q", s)
			}
			subj := schemas.RequirementSubject(s)
			if got := strings.Count(subj, "."); got != 3 {
				t.Fatalf("RequirementSubject(%q) = %q has %d separators, want 3", s, subj, got)
			}
		}
		if env, ok := schemas.EnvFromSubject(s); ok {
			if !schemas.ValidEnv(env) {
				t.Fatalf("EnvFromSubject(%q) = %q, not a valid env", s, env)
			}
			if !strings.HasSuffix(s, "."+env) {
				t.Fatalf("EnvFromSubject(%q) = %q is not the last token", s, env)
			}
		}
		if orig, ok := schemas.OriginalSubject(s); ok {
			if schemas.DLQSubject(orig) != s {
				t.Fatalf("DLQSubject(OriginalSubject(%q)) = %q", s, schemas.DLQSubject(orig))
			}
			if name, ok := schemas.SchemaForSubject(s); !ok || name != schemas.DeadLetter {
				t.Fatalf("SchemaForSubject(%q) = %q, %v; want the dead-letter schema", s, name, ok)
			}
		}
		if strings.HasPrefix(s, "sluice.v1.") && len(s) > len("sluice.v1.") {
			if orig, ok := schemas.OriginalSubject(schemas.DLQSubject(s)); !ok || orig != s {
				t.Fatalf("OriginalSubject(DLQSubject(%q)) = %q, %v", s, orig, ok)
			}
		}
		if n, ok := schemas.ParseItem(s); ok {
			if n < 0 {
				t.Fatalf("ParseItem(%q) = %d", s, n)
			}
			if back, ok := schemas.ParseItem(schemas.FormatItem(n)); !ok || back != n {
				t.Fatalf("ParseItem(FormatItem(%d)) = %d, %v", n, back, ok)
			}
		}
		if id, ok := schemas.TraceIDFromTraceparent(s); ok {
			if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" || strings.Trim(id, "0") == "" {
				t.Fatalf("TraceIDFromTraceparent(%q) = %q", s, id)
			}
		}
	})
}
