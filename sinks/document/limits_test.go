package document

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// nest wraps inner in n objects {"a":…}.
func nest(n int, inner string) string {
	return strings.Repeat(`{"a":`, n) + inner + strings.Repeat(`}`, n)
}

// array returns a JSON array of n copies of v.
func array(n int, v string) string {
	return "[" + strings.TrimSuffix(strings.Repeat(v+",", n), ",") + "]"
}

// props returns n properties "p0":1,"p1":1,… (without braces).
func props(prefix string, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"` + prefix + itoa(i) + `":1`)
	}
	return b.String()
}

// limitsCase is a scenario of TestLimitsCheck: body checked against limits, and the limit it
// breaks if any.
type limitsCase struct {
	name   string
	limits Limits
	body   string
	limit  string // "" = passes
	path   string
	max    int
	actual int
}

func TestLimitsCheck(t *testing.T) {
	small := Limits{MaxDocChars: 11}
	tests := []limitsCase{
		// strings: UTF-8 bytes of the decoded value
		{name: "string at 8000 bytes", body: `{"s":"` + strings.Repeat("a", 8000) + `"}`},
		{name: "string over 8000 bytes", body: `{"s":"` + strings.Repeat("a", 8001) + `"}`, limit: LimitStringBytes, path: "s", max: 8000, actual: 8001},
		{name: "multibyte string counts bytes", body: `{"s":"` + strings.Repeat("€", 2667) + `"}`, limit: LimitStringBytes, path: "s", max: 8000, actual: 8001},
		{name: "escapes count decoded bytes", body: `{"s":"` + strings.Repeat(`\u00e9`, 4001) + `"}`, limit: LimitStringBytes, path: "s", max: 8000, actual: 8002},
		{name: "surrogate pair is 4 bytes, lone surrogate 3", body: `{"s":"` + strings.Repeat(`\ud83d\udc09`, 1999) + `\ud83d\ud83d"}`, limit: LimitStringBytes, path: "s", max: 8000, actual: 8002},
		{name: "short escapes are one byte", body: `{"s":"` + strings.Repeat(`\n`, 8000) + `"}`},
		{name: "string inside array of objects", body: `{"m":{"l":[{"s":"` + strings.Repeat("a", 8001) + `"}]}}`, limit: LimitStringBytes, path: "m.l.s", max: 8000, actual: 8001},
		{name: "unindexed embedding string exempt", body: `{"embedding":"` + strings.Repeat("a", 9000) + `"}`},
		{name: "only top-level embedding is unindexed", body: `{"m":{"embedding":"` + strings.Repeat("a", 9000) + `"}}`, limit: LimitStringBytes, path: "m.embedding", max: 8000, actual: 9000},
		{name: "$vectorize exempt", body: `{"$vectorize":"` + strings.Repeat("a", 9000) + `"}`},
		{name: "custom string limit", limits: Limits{MaxStringBytes: 3}, body: `{"s":"abcd"}`, limit: LimitStringBytes, path: "s", max: 3, actual: 4},

		// document size: UTF-16 chars of the serialized document
		{name: "doc chars at max", limits: small, body: `{"a":"😀é"}`},
		{name: "doc chars over max, emoji counts 2", limits: Limits{MaxDocChars: 10}, body: `{"a":"😀é"}`, limit: LimitDocChars, max: 10, actual: 11},
		{name: "unindexed counts towards size", limits: Limits{MaxDocChars: 20}, body: `{"embedding":[1,2,3,4,5,6]}`, limit: LimitDocChars, max: 20, actual: 27},

		// depth: root is 1, objects and arrays add one
		{name: "depth 16", body: nest(16, "1")},
		{name: "depth 17", body: nest(17, "1"), limit: LimitDepth, path: strings.TrimSuffix(strings.Repeat("a.", 16), "."), max: 16, actual: 17},
		{name: "arrays count as depth", body: `{"a":` + strings.Repeat("[", 16) + strings.Repeat("]", 16) + `}`, limit: LimitDepth, path: "a", max: 16, actual: 17},
		{name: "depth reports the deepest level", body: `{"x":` + nest(17, "1") + `,"y":"` + strings.Repeat("a", 9000) + `"}`, limit: LimitDepth, path: "x" + strings.Repeat(".a", 16), max: 16, actual: 18},
		{name: "unindexed counts towards depth", body: `{"embedding":` + nest(16, "1") + `}`, limit: LimitDepth, max: 16, actual: 17, path: "embedding" + strings.Repeat(".a", 15)},

		// arrays
		{name: "array of 1000", body: `{"t":` + array(1000, `"x"`) + `}`},
		{name: "array of 1001", body: `{"t":` + array(1001, `"x"`) + `}`, limit: LimitArrayLen, path: "t", max: 1000, actual: 1001},
		{name: "nested array", body: `{"m":{"t":[` + array(1500, "1") + `]}}`, limit: LimitArrayLen, path: "m.t", max: 1000, actual: 1500},
		{name: "embedding of 1024 unindexed", body: `{"embedding":` + array(1024, "0.5") + `}`},
		{name: "embedding indexed when Unindexed is empty", limits: Limits{Unindexed: []string{}}, body: `{"embedding":` + array(1024, "0.5") + `}`, limit: LimitArrayLen, path: "embedding", max: 1000, actual: 1024},
		{name: "custom Unindexed", limits: Limits{Unindexed: []string{"payload"}}, body: `{"payload":` + array(1024, "0.5") + `}`},
		{name: "$vector up to 4096", body: `{"$vector":` + array(4096, "0.5") + `}`},
		{name: "$vector over 4096", body: `{"$vector":` + array(4097, "0.5") + `}`, limit: LimitArrayLen, path: "$vector", max: 4096, actual: 4097},

		// object properties
		{name: "1000 properties", body: `{"o":{` + props("p", 1000) + `}}`},
		{name: "1001 properties", body: `{"o":{` + props("p", 1001) + `}}`, limit: LimitObjectProps, path: "o", max: 1000, actual: 1001},
		{name: "unindexed object exempt", body: `{"embedding":{` + props("p", 1001) + `}}`},

		// document properties: every indexed key at every depth
		{name: "2000 doc properties", body: `{"a":{` + props("p", 999) + `},"b":{` + props("p", 999) + `}}`},
		{name: "2001 doc properties", body: `{"a":{` + props("p", 999) + `},"b":{` + props("p", 999) + `},"c":1}`, limit: LimitDocProps, max: 2000, actual: 2001},

		// property paths
		{name: "path of 1000 chars", body: `{"` + strings.Repeat("k", 1000) + `":1}`},
		{name: "path of 1001 chars", body: `{"` + strings.Repeat("k", 1001) + `":1}`, limit: LimitPathLen, path: strings.Repeat("k", 1001), max: 1000, actual: 1001},
		{name: "dotted path counts dots", body: `{"` + strings.Repeat("k", 500) + `":{"` + strings.Repeat("k", 500) + `":1}}`, limit: LimitPathLen, path: strings.Repeat("k", 500) + "." + strings.Repeat("k", 500), max: 1000, actual: 1001},
		{name: "path counts chars not bytes", body: `{"` + strings.Repeat("é", 1000) + `":1}`},

		// numbers: parser level, everywhere
		{name: "number of 100 chars", body: `{"n":` + strings.Repeat("1", 100) + `}`},
		{name: "number of 101 chars", body: `{"n":` + strings.Repeat("1", 100) + `.5e3}`, limit: LimitNumberLen, path: "n", max: 100, actual: 104},
		{name: "long number in unindexed field", body: `{"embedding":[` + strings.Repeat("1", 101) + `]}`, limit: LimitNumberLen, path: "embedding", max: 100, actual: 101},

		// field names
		{name: "empty name", body: `{"m":{"":1}}`, limit: LimitFieldName, path: "m."},
		{name: "dollar name", body: `{"$set":1}`, limit: LimitFieldName, path: "$set"},
		{name: "nested $vector", body: `{"m":{"$vector":[1]}}`, limit: LimitFieldName, path: "m.$vector"},
		{name: "escaped dollar", body: `{"\u0024x":1}`, limit: LimitFieldName, path: "$x"},
		{name: "top-level $vector, $lexical, _id", body: `{"_id":"a","$vector":[1],"$lexical":"x","a$":1}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { checkLimits(t, tc) })
	}
}

// checkLimits checks tc.body against tc.limits: it passes, or fails with a permanent
// LimitError naming the limit, path, maximum and actual value.
func checkLimits(t *testing.T, tc limitsCase) {
	err := tc.limits.Check([]byte(tc.body))
	if tc.limit == "" {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	var le *LimitError
	if !errors.As(err, &le) {
		t.Fatalf("got %v, want a %s LimitError", err, tc.limit)
	}
	if !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Limit {
		t.Errorf("class %q permanent %v", fault.ClassOf(err), fault.IsPermanent(err))
	}
	if le.Limit != tc.limit || le.Path != tc.path || le.Max != tc.max || le.Actual != tc.actual {
		t.Errorf("got %s %q max %d actual %d, want %s %q max %d actual %d",
			le.Limit, le.Path, le.Max, le.Actual, tc.limit, tc.path, tc.max, tc.actual)
	}
}

func TestLimitErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  LimitError
		want string
	}{
		{"depth", LimitError{Path: "metadata.nested.child", Limit: LimitDepth, Max: 16, Actual: 21},
			`field "metadata.nested.child": nesting depth 21 exceeds maximum 16`},
		{"string", LimitError{Path: "content", Limit: LimitStringBytes, Max: 8000, Actual: 8001},
			`field "content": string length 8001 bytes exceeds maximum 8000 bytes`},
		{"document", LimitError{Limit: LimitDocChars, Max: 4000000, Actual: 4000001},
			`document size 4000001 chars exceeds maximum 4000000 chars`},
		{"name", LimitError{Path: "m.", Limit: LimitFieldName, Detail: "empty name"},
			`field "m.": invalid field name: empty name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestLimitsCheckMalformed(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"empty", ``},
		{"array", `[1]`},
		{"unterminated", `{"a":"x`},
		{"trailing", `{"a":1} 2`},
		{"mismatched", `{"a":[1}}`},
		{"bad literal", `{"a":nul}`},
		{"missing colon", `{"a" 1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Limits{}.Check([]byte(tc.body))
			if err == nil || fault.ClassOf(err) != fault.Validation || !fault.IsPermanent(err) {
				t.Fatalf("got %v, want a permanent validation error", err)
			}
		})
	}
}

// Check runs on every document on the hot path: it must not allocate.
func TestLimitsCheckDoesNotAllocate(t *testing.T) {
	docs, err := newBuilder(t).Build(firstLine(t, "job_1757237159_c8623a8fec21_pass_d_vectors.jsonl"), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	l := DataAPILimits()
	if n := testing.AllocsPerRun(20, func() {
		if err := l.Check(docs[0].Body); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Check allocates %.0f times per document", n)
	}
}

func TestDataAPILimits(t *testing.T) {
	l := DataAPILimits()
	want := Limits{8000, 4_000_000, 16, 1000, 1000, 2000, 1000, 100, nil}
	if l.MaxStringBytes != want.MaxStringBytes || l.MaxDocChars != want.MaxDocChars || l.MaxDepth != want.MaxDepth ||
		l.MaxArrayLen != want.MaxArrayLen || l.MaxObjectProps != want.MaxObjectProps || l.MaxDocProps != want.MaxDocProps ||
		l.MaxPathLen != want.MaxPathLen || l.MaxNumberLen != want.MaxNumberLen {
		t.Errorf("got %+v", l)
	}
	if !l.isUnindexed([]byte("embedding")) || l.isUnindexed([]byte("content")) {
		t.Error("embedding should be the only unindexed field by default")
	}
}
