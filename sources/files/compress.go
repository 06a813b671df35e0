package files

import (
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// Compression names how a chunk file's bytes are compressed.
type Compression string

// The compressions a Reader undoes. They are recognised by the input's first bytes (their
// magic numbers), never by a file name or a Content-Type.
const (
	// Uncompressed is a plain file.
	Uncompressed Compression = ""
	// Gzip is RFC 1952 gzip (magic 1f 8b), one member or several concatenated.
	Gzip Compression = "gzip"
	// Zstd is Zstandard (RFC 8878, frame magic 28 b5 2f fd), one frame or several.
	Zstd Compression = "zstd"
)

// DefaultMaxDecompressedBytes is the default Options.MaxDecompressedBytes: 1 GiB, the API's
// default upload limit (httpapi.DefaultMaxUploadBytes), so that a compressed file never
// unpacks to more than an uncompressed upload may hold.
const DefaultMaxDecompressedBytes int64 = 1 << 30

// MaxZstdWindow bounds the history window a zstd frame may ask the decoder to keep: 8 MiB,
// what `zstd -19` uses. The window is memory held per file being read, and a hostile frame
// header may ask for up to 3.75 TB; files made with --long or --ultra -20..-22 ask for more
// and are refused as corrupt (recompress them at level 19 or below).
const MaxZstdWindow = 8 << 20

// ErrTooLarge is returned (wrapped, naming the input and the limit, classified
// fault.Permanent(fault.Validation)) when a compressed input unpacks to more than its
// MaxDecompressedBytes: a compression bomb is refused, never unpacked into memory or disk.
var ErrTooLarge = errors.New("decompressed size over the limit")

// ErrNotJSON is returned (wrapped, naming the input and what its first bytes are; classified
// fault.Permanent(fault.Validation)) when the input's first bytes are not UTF-8 JSON text:
// an executable, random bytes, UTF-16. Nothing of such an input is read as items.
var ErrNotJSON = errors.New("not JSON text")

// ErrEmpty is returned (wrapped, naming the input; classified fault.Permanent(fault.Validation))
// for an input with no bytes, or only white space and a byte order mark, after decompression.
var ErrEmpty = errors.New("the file is empty")

// sniffBytes is how many leading bytes are checked for text: enough for the first line of
// any chunk file to show binary content (NUL or control bytes), few enough to peek from
// the 64 KiB read buffer.
const sniffBytes = 1 << 10

// DetectCompression reports how the bytes starting with head are compressed; head needs at
// most 4 bytes. It does not block.
func DetectCompression(head []byte) Compression {
	switch {
	case len(head) >= 2 && head[0] == 0x1f && head[1] == 0x8b:
		return Gzip
	case len(head) >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f && head[3] == 0xfd:
		return Zstd
	}
	return Uncompressed
}

// Decompressed reads the uncompressed content of an input. It is not safe for concurrent use.
type Decompressed struct {
	r    io.Reader // the decompressor, or the input itself when uncompressed
	src  *srcErr
	zd   *zstd.Decoder
	comp Compression
	name string
	max  int64
	n    int64 // bytes returned so far
	err  error // sticky
}

// srcErr remembers the input's own read error, so that a decompressor's failure can be told
// apart: a failed read of the input (a cut upload, a full spool) versus corrupt data.
type srcErr struct {
	r   io.Reader
	err error
}

func (s *srcErr) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// Decompress returns a reader of br's uncompressed content: gzip and zstd are recognised by
// their magic number and undone, anything else is passed through as is. It peeks at br's
// first bytes (blocking while br does) and reads nothing else until the first Read.
//
// Read of a compressed input fails, wrapped and naming the input, with ErrTooLarge past max
// uncompressed bytes (max <= 0 means DefaultMaxDecompressedBytes), and with a
// fault.Permanent(fault.Validation) error for corrupt or truncated data; a failed read of br
// itself is returned wrapped and unclassified. The caller must Close the result (it never
// closes br).
func Decompress(br *bufio.Reader, name string, max int64) (*Decompressed, error) {
	if max <= 0 {
		max = DefaultMaxDecompressedBytes
	}
	d := &Decompressed{r: br, name: name, max: max}
	head, err := br.Peek(4)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) && len(head) < 4 {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	d.comp = DetectCompression(head)
	d.src = &srcErr{r: br}
	switch d.comp {
	case Gzip:
		// The header is read at the first Read, not here: NewReader reads it at once.
		d.r = &lazyGzip{src: d.src}
	case Zstd:
		// Concurrency 1 decodes synchronously: no goroutines, one window in memory.
		zd, err := zstd.NewReader(d.src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(MaxZstdWindow),
			zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, fmt.Errorf("read %s: zstd decoder: %w", name, err)
		}
		d.zd, d.r = zd, zd
	}
	return d, nil
}

// lazyGzip opens the gzip stream at its first Read.
type lazyGzip struct {
	src io.Reader
	zr  *gzip.Reader
}

func (g *lazyGzip) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.src)
		if err != nil {
			return 0, err
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

// Compression returns how the input was compressed.
func (d *Decompressed) Compression() Compression { return d.comp }

// Read reads uncompressed bytes; see Decompress for its errors.
func (d *Decompressed) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.comp == Uncompressed {
		return d.r.Read(p)
	}
	// Read at most one byte past the limit, to tell "exactly max" from "over max".
	if room := d.max + 1 - d.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := d.r.Read(p)
	d.n += int64(n)
	if d.n > d.max {
		d.err = fault.Permanent(fault.Validation, fmt.Errorf("read %s: %w: the %s data unpacks to more than %d bytes",
			d.name, ErrTooLarge, d.comp, d.max))
		return n - int(d.n-d.max), d.err
	}
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case d.src.err != nil:
		d.err = fmt.Errorf("read %s: %w", d.name, d.src.err)
	default:
		d.err = fault.Permanent(fault.Validation, fmt.Errorf("read %s: corrupt or truncated %s data: %w", d.name, d.comp, err))
	}
	return n, d.err
}

// Close releases the decompressor. It never closes the input and is idempotent.
func (d *Decompressed) Close() error {
	if d.zd != nil {
		d.zd.Close()
		d.zd = nil
	}
	return nil
}

// checkText checks the first bytes of an uncompressed input, b: up to sniffBytes of it,
// from its first byte that is not white space (after any UTF-8 byte order mark); empty when
// there is none. It returns nil when b may start JSON text: it starts with { or [ and holds
// no control byte other than white space (JSON allows none, even inside strings). Bytes
// that are not valid UTF-8 pass, as they did before these checks (text in an 8-bit
// encoding loads with U+FFFD in their place).
func checkText(name string, b []byte) error {
	refuse := func(what string) error {
		return fault.Permanent(fault.Validation, fmt.Errorf("read %s: %w: %s "+
			"(a chunk file is UTF-8 JSON or JSONL, plain or gzip/zstd compressed)", name, ErrNotJSON, what))
	}
	if len(b) == 0 {
		return fault.Permanent(fault.Validation, fmt.Errorf("read %s: %w (no JSON in it)", name, ErrEmpty))
	}
	if len(b) >= 2 && (b[0] == 0xff && b[1] == 0xfe || b[0] == 0xfe && b[1] == 0xff) {
		return refuse("it is UTF-16 or UTF-32 text (byte order mark " + fmt.Sprintf("% x", b[:2]) + "); save it as UTF-8")
	}
	if c := b[0]; c != '{' && c != '[' {
		return refuse(fmt.Sprintf("it starts with %s, not { or [", describeStart(b)))
	}
	for i, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return refuse(fmt.Sprintf("byte %d is the control byte 0x%02x: binary data", i, c))
		}
	}
	return nil
}

// describeStart names the first bytes of b for an error: their hex, and their text when
// printable.
func describeStart(b []byte) string {
	b = b[:min(len(b), 8)]
	printable := true
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			printable = false
		}
	}
	if printable {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("the bytes % x", b)
}
