package schemas_test

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/schemas"
)

func TestSubjects(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{name: "chunk", got: schemas.ChunkSubject(schemas.Dev), want: "sluice.v1.chunks.dev"},
		{name: "job", got: schemas.JobSubject(schemas.Prod), want: "sluice.v1.jobs.prod"},
		{name: "graph", got: schemas.GraphSubject(schemas.Test), want: "sluice.v1.graph.test"},
		{name: "requirement", got: schemas.RequirementSubject("REQ-001"), want: "sluice.v1.requirements.REQ-001"},
		{name: "feature", got: schemas.FeatureSubject("FR-031"), want: "sluice.v1.features.FR-031"},
		{name: "dlq of chunk", got: schemas.DLQSubject("sluice.v1.chunks.dev"), want: "sluice.dlq.v1.chunks.dev"},
		{name: "dlq of requirement", got: schemas.DLQSubject("sluice.v1.requirements.REQ-1"), want: "sluice.dlq.v1.requirements.REQ-1"},
		{name: "dlq of foreign subject", got: schemas.DLQSubject("orders.new"), want: "sluice.dlq.orders.new"},
		{name: "chunk msg id", got: schemas.ChunkMsgID("job_1", "job_1_c_1_0001"), want: "job_1/job_1_c_1_0001"},
		{name: "dup msg id", got: schemas.ChunkMsgIDDup("job_1", "c_006", 12), want: "job_1/c_006#12"},
		{name: "bundle msg id", got: schemas.ChunkBundleMsgID("job_1", 100, 199), want: "job_1/items/100-199"},
		{name: "item", got: schemas.FormatItem(37), want: "37"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %q, want %q", tt.got, tt.want)
			}
		})
	}
}

// TestWildcards checks that each wildcard matches its concrete subjects and nothing broader.
func TestWildcards(t *testing.T) {
	tests := []struct {
		name     string
		wildcard string
		match    []string
		noMatch  []string
	}{
		{name: "chunks", wildcard: schemas.ChunkSubjects, match: []string{schemas.ChunkSubject("dev"), schemas.ChunkSubject("prod")}, noMatch: []string{schemas.JobSubject("dev"), "sluice.v1.chunks.dev.x"}},
		{name: "jobs", wildcard: schemas.JobSubjects, match: []string{schemas.JobSubject("test")}, noMatch: []string{schemas.ChunkSubject("test")}},
		{name: "graph", wildcard: schemas.GraphSubjects, match: []string{schemas.GraphSubject("dev")}, noMatch: []string{schemas.ChunkSubject("dev")}},
		{name: "requirements", wildcard: schemas.RequirementSubjects, match: []string{schemas.RequirementSubject("R-1")}, noMatch: []string{schemas.FeatureSubject("R-1")}},
		{name: "features", wildcard: schemas.FeatureSubjects, match: []string{schemas.FeatureSubject("F_1")}, noMatch: []string{schemas.RequirementSubject("F_1")}},
		{name: "dlq", wildcard: schemas.DLQSubjects, match: []string{schemas.DLQSubject(schemas.ChunkSubject("dev")), schemas.DLQSubject(schemas.RequirementSubject("R"))}, noMatch: []string{schemas.ChunkSubject("dev")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range tt.match {
				if !subjectMatches(tt.wildcard, s) {
					t.Errorf("%s does not match %s", tt.wildcard, s)
				}
			}
			for _, s := range tt.noMatch {
				if subjectMatches(tt.wildcard, s) {
					t.Errorf("%s matches %s", tt.wildcard, s)
				}
			}
		})
	}
}

// subjectMatches implements NATS subject matching with '*' and '>'.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func TestEnvFromSubject(t *testing.T) {
	tests := []struct {
		subject string
		env     string
		ok      bool
	}{
		{subject: "sluice.v1.chunks.dev", env: "dev", ok: true},
		{subject: "sluice.v1.jobs.prod", env: "prod", ok: true},
		{subject: "sluice.v1.graph.test", env: "test", ok: true},
		{subject: "sluice.dlq.v1.chunks.test", env: "test", ok: true},
		{subject: "sluice.v1.chunks.staging"},
		{subject: "sluice.v1.chunks.dev.extra"},
		{subject: "sluice.v1.chunks."},
		{subject: "sluice.v1.requirements.dev"},
		{subject: "sluice.v2.chunks.dev"},
		{subject: ""},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			env, ok := schemas.EnvFromSubject(tt.subject)
			if ok != tt.ok || (ok && env != tt.env) {
				t.Errorf("EnvFromSubject = %q, %v; want %q, %v", env, ok, tt.env, tt.ok)
			}
		})
	}
}

func TestOriginalSubject(t *testing.T) {
	tests := []struct {
		dlq  string
		want string
		ok   bool
	}{
		{dlq: "sluice.dlq.v1.chunks.dev", want: "sluice.v1.chunks.dev", ok: true},
		{dlq: "sluice.dlq.v1.requirements.R-1", want: "sluice.v1.requirements.R-1", ok: true},
		{dlq: "sluice.dlq.orders.new"},
		{dlq: "sluice.dlq.v1."},
		{dlq: "sluice.v1.chunks.dev"},
	}
	for _, tt := range tests {
		t.Run(tt.dlq, func(t *testing.T) {
			got, ok := schemas.OriginalSubject(tt.dlq)
			if ok != tt.ok || got != tt.want {
				t.Errorf("OriginalSubject = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
			if ok && schemas.DLQSubject(got) != tt.dlq {
				t.Errorf("DLQSubject(%q) = %q, not the inverse", got, schemas.DLQSubject(got))
			}
		})
	}
}

func TestSchemaForSubject(t *testing.T) {
	tests := []struct {
		subject string
		want    schemas.Name
		ok      bool
	}{
		{subject: schemas.ChunkSubject("dev"), want: schemas.Chunk, ok: true},
		{subject: schemas.JobSubject("prod"), want: schemas.JobEvent, ok: true},
		{subject: schemas.DLQSubject(schemas.ChunkSubject("dev")), want: schemas.DeadLetter, ok: true},
		{subject: schemas.DLQSubject(schemas.JobSubject("dev")), want: schemas.DeadLetter, ok: true},
		{subject: schemas.GraphSubject("dev")},
		{subject: schemas.RequirementSubject("R")},
		{subject: "other"},
	}
	for _, tt := range tests {
		t.Run(tt.subject, func(t *testing.T) {
			got, ok := schemas.SchemaForSubject(tt.subject)
			if ok != tt.ok || got != tt.want {
				t.Errorf("SchemaForSubject = %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestValidKeyAndEnv(t *testing.T) {
	tests := []struct {
		s        string
		key, env bool
	}{
		{s: "dev", key: true, env: true},
		{s: "test", key: true, env: true},
		{s: "prod", key: true, env: true},
		{s: "Dev", key: true},
		{s: "REQ-001_a", key: true},
		{s: strings.Repeat("k", schemas.MaxKeyLen), key: true},
		{s: strings.Repeat("k", schemas.MaxKeyLen+1)},
		{s: ""},
		{s: "a.b"},
		{s: "a*"},
		{s: "a>"},
		{s: "a b"},
		{s: "a/b"},
		{s: "é"},
	}
	for _, tt := range tests {
		t.Run(tt.s, func(t *testing.T) {
			if got := schemas.ValidKey(tt.s); got != tt.key {
				t.Errorf("ValidKey = %v, want %v", got, tt.key)
			}
			if got := schemas.ValidEnv(tt.s); got != tt.env {
				t.Errorf("ValidEnv = %v, want %v", got, tt.env)
			}
		})
	}
}

func TestParseItem(t *testing.T) {
	tests := []struct {
		v    string
		want int
		ok   bool
	}{
		{v: "0", want: 0, ok: true},
		{v: "37", want: 37, ok: true},
		{v: "007", want: 7, ok: true},
		{v: "999999999999999", want: 999999999999999, ok: true},
		{v: "1000000000000000"},
		{v: ""},
		{v: "-1"},
		{v: "+1"},
		{v: " 1"},
		{v: "1.0"},
		{v: "0x1"},
	}
	for _, tt := range tests {
		t.Run(tt.v, func(t *testing.T) {
			got, ok := schemas.ParseItem(tt.v)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParseItem = %d, %v; want %d, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestTraceIDFromTraceparent(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	tests := []struct {
		tp string
		ok bool
	}{
		{tp: "00-" + id + "-00f067aa0ba902b7-01", ok: true},
		{tp: "01-" + id + "-00f067aa0ba902b7-00-extra", ok: true},
		{tp: "00-" + id + "-00f067aa0ba902b7-01-extra"},
		{tp: "ff-" + id + "-00f067aa0ba902b7-01"},
		{tp: "00-" + strings.ToUpper(id) + "-00f067aa0ba902b7-01"},
		{tp: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{tp: "00-" + id + "-0000000000000000-01"},
		{tp: "00-" + id[:31] + "-00f067aa0ba902b7-01"},
		{tp: ""},
	}
	for _, tt := range tests {
		t.Run(tt.tp, func(t *testing.T) {
			got, ok := schemas.TraceIDFromTraceparent(tt.tp)
			if ok != tt.ok || (ok && got != id) {
				t.Errorf("TraceIDFromTraceparent = %q, %v; want ok=%v", got, ok, tt.ok)
			}
		})
	}
}
