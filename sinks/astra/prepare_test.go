package astra

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/document"
)

func floats(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = "0.125"
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestPrepare(t *testing.T) {
	emb := floats(1024)
	tests := []struct {
		name    string
		vector  bool
		doc     document.Doc
		want    string // expected body, compared as JSON
		wantErr fault.Class
	}{
		{"adds version", false, document.Doc{ID: "a", Version: 7, Body: json.RawMessage(`{"_id":"a","content":"x"}`)},
			`{"_id":"a","content":"x","sluice_version":7}`, ""},
		{"replaces own version field", false, document.Doc{ID: "a", Version: 3, Body: json.RawMessage(` { "sluice_version" : 99 , "_id" : "a" } `)},
			`{"_id":"a","sluice_version":3}`, ""},
		{"embedding stays without vector", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","embedding":` + emb + `}`)},
			`{"_id":"a","embedding":` + emb + `,"sluice_version":0}`, ""},
		{"embedding becomes $vector", true, document.Doc{ID: "a", Version: 1, Body: json.RawMessage(`{"_id":"a","embedding":` + emb + `,"content":"c"}`)},
			`{"_id":"a","$vector":` + emb + `,"content":"c","sluice_version":1}`, ""},
		{"null embedding dropped", true, document.Doc{ID: "a", Version: 1, Body: json.RawMessage(`{"_id":"a","embedding":null}`)},
			`{"_id":"a","sluice_version":1}`, ""},
		{"short embedding", true, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","embedding":[1,2,3]}`)}, "", fault.Validation},
		{"string embedding", true, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","embedding":"x"}`)}, "", fault.Validation},
		{"empty id", false, document.Doc{Body: json.RawMessage(`{"_id":""}`)}, "", fault.Validation},
		{"id mismatch", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"b"}`)}, "", fault.Validation},
		{"numeric id", false, document.Doc{ID: "1", Body: json.RawMessage(`{"_id":1}`)}, "", fault.Validation},
		{"no id", false, document.Doc{ID: "a", Body: json.RawMessage(`{"x":1}`)}, "", fault.Validation},
		{"duplicate key", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","x":1,"x":2}`)}, "", fault.Validation},
		{"escaped duplicate id", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","\u005fid":"a"}`)}, "", fault.Validation},
		{"array body", false, document.Doc{ID: "a", Body: json.RawMessage(`[1]`)}, "", fault.Validation},
		{"truncated", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","c":"x`)}, "", fault.Validation},
		{"indexed array too long", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","tags":` + floats(1001) + `}`)}, "", fault.Limit},
		{"string too long", false, document.Doc{ID: "a", Body: json.RawMessage(`{"_id":"a","content":"` + strings.Repeat("x", 8001) + `"}`)}, "", fault.Limit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSink(SinkConfig{Client: &dataapi.Client{}, Vector: tt.vector})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.prepare(tt.doc)
			if tt.wantErr != "" {
				if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != tt.wantErr {
					t.Fatalf("prepare() = %s, %v; want a permanent %s error", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("prepare(): %v", err)
			}
			if !json.Valid(got) {
				t.Fatalf("prepare() = %s, not valid JSON", got)
			}
			same, err := sameContent(got, json.RawMessage(tt.want))
			if err != nil || !same {
				t.Fatalf("prepare() = %s, want %s", got, tt.want)
			}
			var v struct {
				V *uint64 `json:"sluice_version"`
			}
			if err := json.Unmarshal(got, &v); err != nil || v.V == nil || *v.V != tt.doc.Version {
				t.Fatalf("prepare() = %s: sluice_version not %d", got, tt.doc.Version)
			}
		})
	}
}

func TestSameContent(t *testing.T) {
	tests := []struct {
		name   string
		a, b   string
		expect bool
	}{
		{"key order", `{"_id":"a","x":1,"y":{"p":[1,2],"q":"s"}}`, `{"y":{"q":"s","p":[1,2]},"_id":"a","x":1}`, true},
		{"number format", `{"x":1.0,"y":1e2}`, `{"x":1,"y":100}`, true},
		{"version ignored", `{"x":1,"sluice_version":3}`, `{"x":1,"sluice_version":4}`, true},
		{"value differs", `{"x":1}`, `{"x":2}`, false},
		{"extra field", `{"x":1,"z":null}`, `{"x":1}`, false},
		{"array order", `{"x":[1,2]}`, `{"x":[2,1]}`, false},
		{"vector float32", `{"$vector":[0.1,0.2]}`, `{"$vector":[0.10000000149011612,0.20000000298023224]}`, true},
		{"vector differs", `{"$vector":[0.1,0.2]}`, `{"$vector":[0.1,0.3]}`, false},
		{"content escapes", `{"c":"\u00e9\n"}`, "{\"c\":\"é\\n\"}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sameContent(json.RawMessage(tt.a), json.RawMessage(tt.b))
			if err != nil || got != tt.expect {
				t.Fatalf("sameContent(%s, %s) = %v, %v; want %v", tt.a, tt.b, got, err, tt.expect)
			}
		})
	}
}
