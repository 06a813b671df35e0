package graph

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

func TestClassifyPG(t *testing.T) {
	tests := []struct {
		name      string
		code      string
		permanent bool
	}{
		{"foreign key violation", "23503", true},
		{"check violation", "23514", true},
		{"unique violation", "23505", true},
		{"untranslatable character", "22P05", true},
		{"serialization failure", "40001", false},
		{"deadlock", "40P01", false},
		{"lock not available", "55P03", false},
		{"statement timeout", "57014", false},
		{"admin shutdown", "57P01", false},
		{"connection failure", "08006", false},
		{"too many connections", "53300", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyPG(fmt.Errorf("graph: upsert nodes: %w", &pgconn.PgError{Code: tc.code}))
			if fault.IsPermanent(err) != tc.permanent {
				t.Errorf("SQLSTATE %s: permanent = %v, want %v", tc.code, fault.IsPermanent(err), tc.permanent)
			}
			if tc.permanent && (!errors.Is(err, ErrInvalid) || fault.ClassOf(err) != fault.Validation) {
				t.Errorf("SQLSTATE %s: %v, want validation wrapping ErrInvalid", tc.code, err)
			}
		})
	}
	if err := classifyPG(errors.New("connection reset")); fault.IsPermanent(err) {
		t.Errorf("an unclassified error must stay transient")
	}
}

func TestPrepareMergesDuplicatesAndSorts(t *testing.T) {
	p, err := prepare(DefaultEnv, Batch{
		Nodes: []Node{{ID: "b", Type: TypeRule, Properties: map[string]any{"x": 1}}, {ID: "a", Type: TypeRule}, {ID: "b", Type: TypeStep, Properties: map[string]any{"y": 2}}},
		Edges: []Edge{{Source: "a", Type: EdgeCites, Target: "c"}},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.nodes) != 2 || p.nodes[0].ID != "a" || p.nodes[1].Type != TypeRule || len(p.nodes[1].Properties) != 2 {
		t.Errorf("nodes %+v", p.nodes)
	}
	if len(p.external) != 1 || p.external[0] != "c" {
		t.Errorf("external endpoints %v, want [c]", p.external)
	}
}
