package requirements_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/requirements"
)

// The expected strings below were produced by CPython 3 (repr(float), json.dumps).

func TestPyFloatRepr(t *testing.T) {
	tests := []struct {
		name string
		in   float64
		want string
	}{
		{name: "fixture created_at", in: 1757213987.6643305, want: "1757213987.6643305"},
		{name: "tenth", in: 0.1, want: "0.1"},
		{name: "1e16 switches to exponent", in: 1e16, want: "1e+16"},
		{name: "1e15 stays positional", in: 1e15, want: "1000000000000000.0"},
		{name: "large with digits", in: 123456789012345678.0, want: "1.2345678901234568e+17"},
		{name: "1e-4 positional", in: 0.0001, want: "0.0001"},
		{name: "1e-5 exponent", in: 0.00001, want: "1e-05"},
		{name: "small with digits", in: 1.5e-7, want: "1.5e-07"},
		{name: "negative zero", in: math.Copysign(0, -1), want: "-0.0"},
		{name: "zero", in: 0, want: "0.0"},
		{name: "integral", in: 100, want: "100.0"},
		{name: "1e300", in: 1e300, want: "1e+300"},
		{name: "tiny", in: 2.5e-300, want: "2.5e-300"},
		{name: "denormal", in: 5e-324, want: "5e-324"},
		{name: "max", in: math.MaxFloat64, want: "1.7976931348623157e+308"},
		{name: "3e22", in: 3e22, want: "3e+22"},
		{name: "plain", in: 12345.678, want: "12345.678"},
		{name: "negative", in: -1.5, want: "-1.5"},
		{name: "binary noise", in: 0.30000000000000004, want: "0.30000000000000004"},
		{name: "2^53", in: 9007199254740992, want: "9007199254740992.0"},
		{name: "nan", in: math.NaN(), want: "NaN"},
		{name: "inf", in: math.Inf(1), want: "Infinity"},
		{name: "-inf", in: math.Inf(-1), want: "-Infinity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := requirements.PyFloatRepr(tt.in); got != tt.want {
				t.Errorf("PyFloatRepr(%v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestDumps(t *testing.T) {
	nested := `{"b":[1,{"z":null,"a":[]},{}],"a":"é\u2028\"\\\n\t\u007f\u0001😀","c":true,"d":1.5,"e":[1.0,2]}`
	small := `{"b":[1,{"z":null,"a":[]},{}],"a":"é","c":true}`
	tests := []struct {
		name string
		in   string
		opt  requirements.DumpOptions
		want string
	}{
		{
			name: "indent 2, insertion order, unicode, control characters, floats",
			in:   nested,
			opt:  requirements.DumpOptions{Indent: 2},
			want: "{\n  \"b\": [\n    1,\n    {\n      \"z\": null,\n      \"a\": []\n    },\n    {}\n  ],\n  \"a\": \"\\u00e9\\u2028\\\"\\\\\\n\\t\\u007f\\u0001\\ud83d\\ude00\",\n  \"c\": true,\n  \"d\": 1.5,\n  \"e\": [\n    1.0,\n    2\n  ]\n}",
		},
		{
			name: "sort_keys, default separators",
			in:   small,
			opt:  requirements.DumpOptions{Indent: -1, SortKeys: true},
			want: `{"a": "\u00e9", "b": [1, {"a": [], "z": null}, {}], "c": true}`,
		},
		{
			name: "indent 0",
			in:   small,
			opt:  requirements.DumpOptions{Indent: 0},
			want: "{\n\"b\": [\n1,\n{\n\"z\": null,\n\"a\": []\n},\n{}\n],\n\"a\": \"\\u00e9\",\n\"c\": true\n}",
		},
		{
			name: "number literals as json.loads reads them",
			in:   `[1E400, -1e400, 1e-400, 1E5, -0, 12345678901234567890123]`,
			opt:  requirements.DumpOptions{Indent: -1},
			want: `[Infinity, -Infinity, 0.0, 100000.0, 0, 12345678901234567890123]`,
		},
		{
			name: "duplicate key keeps first position and last value",
			in:   `{"a":1,"b":2,"a":3}`,
			opt:  requirements.DumpOptions{Indent: -1},
			want: `{"a": 3, "b": 2}`,
		},
		{
			name: "compact separators",
			in:   `{"x":[1,2],"y":"z"}`,
			opt:  requirements.DumpOptions{Indent: -1, ItemSeparator: ",", KeySeparator: ":"},
			want: `{"x":[1,2],"y":"z"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := requirements.DecodeOrdered([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := requirements.Dumps(v, tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("Dumps =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestDumpsGoValues(t *testing.T) {
	got, err := requirements.Dumps(map[string]any{"z": int64(7), "a": []string{"x"}, "m": 2.0, "n": nil, "i": 3, "bad": "\xff"}, requirements.DumpOptions{Indent: -1})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a": ["x"], "bad": "\ufffd", "i": 3, "m": 2.0, "n": null, "z": 7}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if _, err := requirements.Dumps(struct{}{}, requirements.DumpOptions{}); err == nil {
		t.Error("Dumps of a struct succeeded")
	}
}

func TestDecodeOrderedErrors(t *testing.T) {
	for _, in := range []string{``, `{`, `{"a":1} {}`, `[1,]`, `{"a" 1}`} {
		t.Run(in, func(t *testing.T) {
			if _, err := requirements.DecodeOrdered([]byte(in)); err == nil {
				t.Errorf("DecodeOrdered(%q) succeeded", in)
			}
		})
	}
}

func TestObject(t *testing.T) {
	o := requirements.NewObject(requirements.Member{Key: "b", Value: "1"}, requirements.Member{Key: "a", Value: []any{requirements.NewObject(requirements.Member{Key: "x", Value: json.Number("1")})}})
	c := o.Clone()
	c.Set("b", "changed")
	inner, _ := c.Get("a")
	inner.([]any)[0].(*requirements.Object).Set("x", "changed")
	if v, _ := o.Get("b"); v != "1" {
		t.Errorf("Clone shares top level: b = %v", v)
	}
	if b, _ := o.MarshalJSON(); string(b) != `{"b":"1","a":[{"x":1}]}` {
		t.Errorf("Clone shares nested objects: %s", b)
	}
	o.Set("c", true)
	if !o.Delete("b") || o.Delete("nope") {
		t.Error("Delete reported wrongly")
	}
	var keys []string
	for _, m := range o.Members() {
		keys = append(keys, m.Key)
	}
	if strings.Join(keys, ",") != "a,c" {
		t.Errorf("keys %v, want a,c", keys)
	}
	var back requirements.Object
	if err := json.Unmarshal([]byte(`{"z":1,"y":{"b":2,"a":3}}`), &back); err != nil {
		t.Fatal(err)
	}
	if b, _ := back.MarshalJSON(); string(b) != `{"z":1,"y":{"b":2,"a":3}}` {
		t.Errorf("round trip lost order: %s", b)
	}
	if err := json.Unmarshal([]byte(`[1]`), &back); err == nil {
		t.Error("Object accepted an array")
	}
}

func TestAuditChecksumMatchesPython(t *testing.T) {
	reason := "Does not align with current priorities"
	legacy := requirements.AuditEntry{Timestamp: "2025-09-06T22:01:43.503978", RequestID: "FR-17572141034994902", OldStatus: "pending", NewStatus: "rejected", Admin: "test_admin", Reason: &reason}
	if got, want := requirements.LegacyAuditChecksum(legacy), "837abb06b97af1ea97c1e916139f38ae9afd44398fec45c2f587f235b26695f0"; got != want {
		t.Errorf("LegacyAuditChecksum = %s, want %s", got, want)
	}
	legacy.Reason = nil
	if got, want := requirements.LegacyAuditChecksum(legacy), "363ebb2274ac301c37e3390cf88c412bb254fd771eca95baf08ba269865feec3"; got != want {
		t.Errorf("LegacyAuditChecksum (null reason) = %s, want %s", got, want)
	}
	r2 := "Ünïcode ok"
	chained := requirements.AuditEntry{Seq: 2, Timestamp: "2025-10-09T08:53:20.123456Z", RequestID: "FR-123", OldStatus: "pending", NewStatus: "approved", Admin: "api-admin", Reason: &r2, PrevChecksum: "abc"}
	if got, want := requirements.AuditChecksum(chained), "91feb59b7c308e53cbb0e884b19f797bb1c9952997abda7af9f8497377a7e934"; got != want {
		t.Errorf("AuditChecksum = %s, want %s", got, want)
	}
}
