package files

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

func gzipped(t testing.TB, parts ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, p := range parts { // each part its own member, as `cat a.gz b.gz` makes
		zw := gzip.NewWriter(&buf)
		if _, err := io.WriteString(zw, p); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func zstded(t testing.TB, s string, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bigWindow rewrites a zstd frame's window descriptor to ask for a 1 GiB window, as a
// hostile header may (zstd --long=30 makes such frames).
func bigWindow(t testing.TB, frame []byte) []byte {
	t.Helper()
	if frame[4]&0x20 != 0 {
		t.Fatal("single-segment frame: no window descriptor")
	}
	frame = bytes.Clone(frame)
	frame[5] = 20 << 3 // exponent 20: 2^(10+20) bytes
	return frame
}

// readInput reads every item of input and returns them with the fatal error (nil at EOF).
func readInput(t testing.TB, input []byte, opts Options) (*Reader, []Item, error) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(input), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var items []Item
	for {
		it, err := r.Next()
		if err == io.EOF {
			return r, items, nil
		}
		if err != nil {
			return r, items, err
		}
		items = append(items, it)
	}
}

// A gzip file was read as JSONL line by line: every "line" of compressed bytes became a
// rejected item. gzip and zstd files are now read uncompressed, recognised by content.
func TestCompressedInputs(t *testing.T) {
	object := `{"chunks":[{"id":"a","content":"x"},{"id":"b","content":"y"}]}`
	jsonl := `{"chunk_id":"a","content":"x"}` + "\n" + `{"chunk_id":"b","content":"y"}` + "\n"
	tests := []struct {
		name   string
		input  []byte
		opts   Options
		comp   Compression
		format Format
	}{
		{name: "gzip object", input: gzipped(t, object), comp: Gzip, format: Chunks},
		{name: "gzip JSONL", input: gzipped(t, jsonl), comp: Gzip, format: JSONL},
		{name: "gzip JSONL with the JSONL hint", input: gzipped(t, jsonl), opts: Options{Format: JSONL}, comp: Gzip, format: JSONL},
		{name: "gzip of two members", input: gzipped(t, jsonl[:31], jsonl[31:]), comp: Gzip, format: JSONL},
		{name: "gzip with a byte order mark inside", input: gzipped(t, "\xEF\xBB\xBF"+object), comp: Gzip, format: Chunks},
		{name: "zstd object", input: zstded(t, object), comp: Zstd, format: Chunks},
		{name: "zstd JSONL, best compression", input: zstded(t, jsonl, zstd.WithEncoderLevel(zstd.SpeedBestCompression)), comp: Zstd, format: JSONL},
		{name: "plain", input: []byte(jsonl), comp: Uncompressed, format: JSONL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, items, err := readInput(t, tc.input, tc.opts)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if len(items) != 2 || items[0].ID != "a" || items[1].ID != "b" || items[0].Err != nil || items[1].Err != nil {
				t.Fatalf("items %+v, want a and b", items)
			}
			if r.Compression() != tc.comp || r.Format() != tc.format {
				t.Errorf("compression %q format %q, want %q %q", r.Compression(), r.Format(), tc.comp, tc.format)
			}
		})
	}
}

// A compressed file must not unpack to more than MaxDecompressedBytes: a compression bomb is
// refused while it is read, whole, as a permanent error, never unpacked into memory.
func TestDecompressedSizeBound(t *testing.T) {
	line := `{"chunk_id":"a","content":"x"}` + "\n" // 31 bytes
	body := strings.Repeat(line, 100)               // 3100 bytes
	n := int64(len(body))
	bomb := `{"chunk_id":"big","content":"` + strings.Repeat("x", 8<<20) + `"}` + "\n"
	tests := []struct {
		name    string
		input   []byte
		max     int64
		items   int
		tooLong bool
	}{
		{name: "gzip one byte under", input: gzipped(t, body), max: n + 1, items: 100},
		{name: "gzip at the limit", input: gzipped(t, body), max: n, items: 100},
		{name: "gzip one byte over", input: gzipped(t, body), max: n - 1, items: 99, tooLong: true},
		{name: "zstd at the limit", input: zstded(t, body), max: n, items: 100},
		{name: "zstd one byte over", input: zstded(t, body), max: n - 1, items: 99, tooLong: true},
		{name: "gzip of two members over it together", input: gzipped(t, body, body), max: 2*n - 1, items: 199, tooLong: true},
		{name: "gzip bomb: 8 MiB in one line", input: gzipped(t, bomb), max: 1 << 20, tooLong: true},
		{name: "zstd bomb: 8 MiB in one line", input: zstded(t, bomb), max: 1 << 20, tooLong: true},
		{name: "gzip bomb under the default limit is read", input: gzipped(t, bomb), items: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, items, err := readInput(t, tc.input, Options{MaxDecompressedBytes: tc.max})
			if len(items) != tc.items {
				t.Errorf("%d items before the end, want %d", len(items), tc.items)
			}
			if !tc.tooLong {
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrTooLarge) || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("error %v, want a permanent validation ErrTooLarge", err)
			}
			if want := "more than"; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		})
	}
}

// Inputs that are not JSON text were read as JSONL: the sluice executable became 176,465
// rejected items. They are now refused whole at the first Next, before any item.
func TestInputsThatAreNotJSONText(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 4096)
	for i := range random {
		random[i] = byte(rng.UintN(256))
	}
	random[0] = '{' // the worst case: it starts like JSON
	utf16 := func(s string, bom bool) []byte {
		var b []byte
		if bom {
			b = append(b, 0xff, 0xfe)
		}
		for _, c := range s {
			b = append(b, byte(c), 0)
		}
		return b
	}
	rec := `{"chunk_id":"a","content":"x"}` + "\n"
	tests := []struct {
		name  string
		input []byte
		opts  Options
		want  error
		says  string
	}{
		{name: "an executable", input: append([]byte("\x7fELF\x02\x01\x01\x00"), random...), want: ErrNotJSON, says: `7f 45 4c 46`},
		{name: "random bytes starting with {", input: random, want: ErrNotJSON, says: "control byte"},
		{name: "random bytes with the JSONL hint", input: random, opts: Options{Format: JSONL}, want: ErrNotJSON},
		{name: "UTF-16 with a byte order mark", input: utf16(rec, true), want: ErrNotJSON, says: "UTF-16"},
		{name: "UTF-16 without one", input: utf16(rec, false), want: ErrNotJSON, says: "0x00"},
		{name: "a NUL after a valid first line", input: []byte(rec + "\x00"), want: ErrNotJSON},
		{name: "text that is not JSON", input: []byte("chunk_id,content\na,x\n"), want: ErrNotJSON, says: `"chunk_id"`},
		{name: "a gzipped executable", input: gzipped(t, "\x7fELF\x02\x01\x01\x00"), want: ErrNotJSON},
		{name: "gzip in gzip", input: gzipped(t, string(gzipped(t, rec))), want: ErrNotJSON},
		{name: "empty", input: nil, want: ErrEmpty},
		{name: "only white space", input: []byte(" \n\t\r\n  "), want: ErrEmpty},
		{name: "only white space with the JSONL hint", input: []byte("\n\n"), opts: Options{Format: JSONL}, want: ErrEmpty},
		{name: "only a byte order mark", input: []byte("\xEF\xBB\xBF\n"), want: ErrEmpty},
		{name: "gzip of nothing", input: gzipped(t, ""), want: ErrEmpty},
		{name: "zstd of white space", input: zstded(t, "   \n"), want: ErrEmpty},
		{name: "truncated gzip", input: gzipped(t, rec+rec)[:20], says: "corrupt or truncated gzip"},
		{name: "gzip header alone", input: []byte{0x1f, 0x8b}, says: "corrupt or truncated gzip"},
		{name: "zstd magic alone", input: []byte{0x28, 0xb5, 0x2f, 0xfd}, says: "corrupt or truncated zstd"},
		{name: "zstd window over the bound", input: bigWindow(t, zstded(t, strings.Repeat(rec, 1000), zstd.WithSingleSegment(false))),
			says: "window size exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, items, err := readInput(t, tc.input, tc.opts)
			if len(items) != 0 {
				t.Errorf("%d items read, want none", len(items))
			}
			if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Validation {
				t.Fatalf("error %v, want a permanent validation error", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if tc.says != "" && !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if strings.Count(err.Error(), "\n") > 0 {
				t.Errorf("error is more than one line: %q", err)
			}
		})
	}
}

// A failed read of a compressed input (a cut upload) is the input's error, unclassified so
// callers may retry, not "corrupt gzip data".
func TestCompressedReadErrorIsNotPermanent(t *testing.T) {
	boom := errors.New("connection reset")
	gz := gzipped(t, strings.Repeat(`{"chunk_id":"a","content":"x"}`+"\n", 10000))
	for _, cut := range []int{1, 3, 100, len(gz) / 2} {
		r, err := NewReader(io.MultiReader(bytes.NewReader(gz[:cut]), &failingReader{boom}), Options{})
		if err != nil {
			t.Fatal(err)
		}
		for {
			_, err = r.Next()
			if err != nil {
				break
			}
		}
		if !errors.Is(err, boom) || fault.IsPermanent(err) {
			t.Errorf("cut at %d: got %v (permanent %v), want the transient read error", cut, err, fault.IsPermanent(err))
		}
		r.Close()
	}
}

func TestNewReaderNegativeDecompressedBound(t *testing.T) {
	if _, err := NewReader(strings.NewReader(""), Options{MaxDecompressedBytes: -1}); err == nil {
		t.Error("negative MaxDecompressedBytes accepted")
	}
}
