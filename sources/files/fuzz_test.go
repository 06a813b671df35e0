package files

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
)

// fuzzSeedBytes bounds a seed taken from a fixture: the fuzzer mutates small inputs far
// faster, and a fixture's first kilobytes hold every structural feature of its format (a
// cut fixture is itself a useful seed: a truncated file).
const fuzzSeedBytes = 6 << 10

// fuzzMaxDecompressed bounds what a compressed fuzz input unpacks to: a few bytes of gzip
// can unpack to gigabytes, and the fuzzer finds such inputs.
const fuzzMaxDecompressed = 256 << 10

// FuzzReader reads arbitrary bytes as a chunk file, with and without the JSONL hint and with
// small item limits, and checks the Reader's promises: no panic, no endless loop, every item
// carries either a record or an *ItemError naming its own index, indexes count up from 0,
// a fatal error of an in-memory input is a permanent validation error and stays sticky, and
// every prefix of the input is read under the same rules.
//
// Run it longer with: go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 10m ./sources/files/
func FuzzReader(f *testing.F) {
	for _, seed := range [][]byte{
		[]byte(`{"chunks":[{"id":"a","content":"x"},{"id":"a","content":"y"},{"content":"no id"},42]}`),
		[]byte(`{"job_id":"j1","vectorized_chunks":[{"chunk_id":"c1","content":"t","embedding":[0.1,0.2]}]}`),
		[]byte(`{"items":[{"id":"i1","text":"hello"}],"chunks":[]}`),
		[]byte(`{"enriched_chunks":[{"chunk_id":"e1","enhanced_content":"e","original_content":"o"},{"chunk_id":"e2"}]}`),
		[]byte("{\"chunk_id\":\"l1\",\"content\":\"a\"}\n\n{\"chunk_id\":\"l2\",\"content\":\"b\"}\nnot json\n[1]\n"),
		[]byte(`{"chunk_id":"single","content":"one record"}`),
		[]byte(`{"nodes":[],"edges":[]}`),
		[]byte("\xEF\xBB\xBF{\"chunks\":[{\"id\":\"bom\",\"content\":\"x\"}]}"),
		[]byte(`[{"id":"a"}]`),
		[]byte(`{"chunks":[{"id":"a","content":"x"}],"items":[{"id":"b","text":"y"}]}`),
		[]byte(`{"chunks":[{"id":"a","content":"x"}]} trailing`),
		[]byte(`{"chunks":[{"id":"a","content":"x"`),
		{},
		[]byte(" \n\t"),
		[]byte("\x7fELF\x02\x01\x01\x00{"),
		[]byte("\xff\xfe{\x00\"\x00"),
	} {
		f.Add(seed, uint8(0), uint16(0))
	}
	// Compressed seeds: gzip (one and two members) and zstd of a JSONL and an object file,
	// and of binary content, whole and cut short.
	jsonl := "{\"chunk_id\":\"l1\",\"content\":\"a\"}\n{\"chunk_id\":\"l2\",\"content\":\"b\"}\n"
	object := `{"chunks":[{"id":"a","content":"x"},{"id":"b","content":"y"}]}`
	for _, plain := range []string{jsonl, object, "\x00\x01binary", ""} {
		for _, packed := range [][]byte{gzipped(f, plain), gzipped(f, plain, plain), zstded(f, plain)} {
			f.Add(packed, uint8(0), uint16(0))
			f.Add(packed, uint8(1), uint16(len(packed)/2))
		}
	}
	for _, dir := range []string{fixtures} {
		names, _ := filepath.Glob(filepath.Join(dir, "*.json*"))
		for _, name := range names {
			data, err := os.ReadFile(name)
			if err != nil {
				continue
			}
			f.Add(data[:min(len(data), fuzzSeedBytes)], uint8(0), uint16(0))
			if filepath.Ext(name) == ".jsonl" {
				f.Add(data[:min(len(data), fuzzSeedBytes)], uint8(1), uint16(300))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, hint uint8, maxItem uint16) {
		opts := Options{Name: "fuzz", MaxDecompressedBytes: fuzzMaxDecompressed}
		if hint&1 == 1 {
			opts.Format = JSONL
		}
		opts.MaxItemBytes = int(maxItem) // 0: the default
		checkRead(t, data, opts)
		if len(data) > 1 {
			// A truncated copy of the input, cut at a point the input itself chooses.
			cut := int(maxItem) % len(data)
			checkRead(t, data[:cut], opts)
		}
	})
}

// checkRead reads data to the end and checks every item and the final error.
func checkRead(t *testing.T, data []byte, opts Options) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(data), opts)
	if err != nil {
		t.Fatalf("NewReader: %v", err)
	}
	// Every item consumes at least one byte of the (uncompressed) input, so more calls than
	// bytes (plus the final EOF) would be an endless loop.
	limit := len(data) + 2
	if DetectCompression(data) != Uncompressed {
		limit = int(max(opts.MaxDecompressedBytes, 0)) + 2
	}
	next := 0
	for calls := 0; ; calls++ {
		if calls > limit {
			t.Fatalf("Next called %d times on %d bytes without an end", calls, len(data))
		}
		it, err := r.Next()
		if err == io.EOF {
			if _, again := r.Next(); again != io.EOF {
				t.Fatalf("Next after EOF returned %v, want io.EOF again", again)
			}
			return
		}
		if err != nil {
			if !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("fatal error of an in-memory input is not a permanent validation error: %v", err)
			}
			if _, again := r.Next(); again != err {
				t.Fatalf("fatal error is not sticky: first %v, then %v", err, again)
			}
			return
		}
		if it.Index != next {
			t.Fatalf("item index %d, want %d", it.Index, next)
		}
		next++
		if it.DuplicateOf != -1 && (it.DuplicateOf < 0 || it.DuplicateOf >= it.Index) {
			t.Fatalf("item %d: DuplicateOf %d is not an earlier item", it.Index, it.DuplicateOf)
		}
		if it.Err != nil {
			var ie *ItemError
			if !errors.As(it.Err, &ie) {
				t.Fatalf("item %d: error %v is not an *ItemError", it.Index, it.Err)
			}
			if ie.Index != it.Index {
				t.Fatalf("item %d: ItemError names index %d", it.Index, ie.Index)
			}
			if !fault.IsPermanent(it.Err) || fault.ClassOf(it.Err) != fault.Validation {
				t.Fatalf("item %d: error is not a permanent validation error: %v", it.Index, it.Err)
			}
			continue
		}
		if it.Record == nil || !json.Valid(it.Record) || jsonscan.FirstByte(it.Record) != '{' {
			t.Fatalf("item %d accepted without a JSON object record: %q", it.Index, it.Record)
		}
		if it.ID == "" {
			t.Fatalf("item %d accepted without an id: %q", it.Index, it.Record)
		}
		if opts.MaxItemBytes > 0 && r.Format() != EnrichedChunks && len(it.Record) > opts.MaxItemBytes {
			t.Fatalf("item %d of %d bytes accepted over MaxItemBytes %d", it.Index, len(it.Record), opts.MaxItemBytes)
		}
	}
}

// A number outside float64's range in the top-level object (before or after the items
// array) stopped reading with an unclassified error, "json: cannot unmarshal number 1e700
// into Go value of type float64", which callers retry as transient although the same bytes
// can never load: the decoder that walks the object turned every number token into a
// float64. Found by FuzzReader (testdata/fuzz/FuzzReader/huge-number-in-sniffed-object).
func TestReaderNumberOutOfFloatRange(t *testing.T) {
	tests := []struct {
		name  string
		input string
		items int    // items read before the end
		fatal string // "" when the input ends with io.EOF
	}{
		{name: "before the array", input: `{"version":1e700,"chunks":[{"id":"a","content":"x"}]}`, items: 1},
		{name: "after the array", input: `{"chunks":[{"id":"a","content":"x"}],"version":-1e700}`, items: 1},
		{name: "one record", input: `{"id":"a","content":"x","score":1e700}`, items: 1},
		{name: "truncated object", input: `{"000000":"00", "":1e700`, items: 1}, // read as one broken JSONL line
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader([]byte(tc.input)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for {
				_, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d items: %v (class %q)", n, err, fault.ClassOf(err))
				}
				n++
			}
			if n != tc.items {
				t.Fatalf("read %d items, want %d", n, tc.items)
			}
		})
	}
}

// A file holding one record (not an array, not JSONL) was accepted when the record was over
// MaxItemBytes by less than the 64 KiB the format sniffer captures beyond it; only larger
// records were rejected. Found by FuzzReader
// (testdata/fuzz/FuzzReader/single-record-over-max-item-bytes).
func TestReaderSingleRecordOverMaxItemBytes(t *testing.T) {
	const rec = `{"id":"0","content":"x"}` // 24 bytes
	tests := []struct {
		name    string
		max     int
		rejects bool
	}{
		{name: "one byte under", max: len(rec) + 1},
		{name: "at the limit", max: len(rec)},
		{name: "one byte over", max: len(rec) - 1, rejects: true},
		{name: "far over", max: 1, rejects: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader([]byte(rec)), Options{MaxItemBytes: tc.max})
			if err != nil {
				t.Fatal(err)
			}
			it, err := r.Next()
			if err != nil {
				t.Fatal(err)
			}
			if got := it.Err != nil; got != tc.rejects {
				t.Fatalf("rejected = %v (%v), want %v", got, it.Err, tc.rejects)
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("second Next = %v, want io.EOF", err)
			}
		})
	}
}
