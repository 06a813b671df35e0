// Package files reads chunk files in every format the Python system wrote (reference
// ttrpg-center.md §1.2-1.3): object files holding a chunks, vectorized_chunks, items or
// enriched_chunks array, and JSONL/NDJSON files with one record per line. Items are streamed
// one at a time, so a file of any size is read in bounded memory, and each item is decoded
// on its own, so one bad item rejects only itself.
package files

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
	"github.com/sluice-dev/sluice/schemas/record"
)

// Format names the shape of a chunk file.
type Format string

// The formats a Reader recognises.
const (
	// Chunks is an object with a "chunks" array (legacy Pass A, mock files, HEAD loader input).
	Chunks Format = "chunks"
	// VectorizedChunks is an object with a "vectorized_chunks" array.
	VectorizedChunks Format = "vectorized_chunks"
	// Items is an object with an "items" array whose records use "id" and "text".
	Items Format = "items"
	// EnrichedChunks is a legacy Pass B object with an "enriched_chunks" array; its items are
	// converted with record.ConvertEnriched.
	EnrichedChunks Format = "enriched_chunks"
	// JSONL is one record per line (Pass C and Pass D files, NDJSON).
	JSONL Format = "jsonl"
)

// arrayFormat returns the Format of a recognised array key.
func arrayFormat(key string) (Format, bool) {
	switch f := Format(key); f {
	case Chunks, VectorizedChunks, Items, EnrichedChunks:
		return f, true
	}
	return "", false
}

// ErrNoChunks is returned (wrapped, naming the input) by Next when the input is a JSON
// object that holds none of the recognised arrays and does not look like a chunk record,
// such as a graph snapshot, a split index or a dictionary delta.
var ErrNoChunks = errors.New("no chunk array (chunks, vectorized_chunks, items, enriched_chunks)")

// DefaultMaxItemBytes is the default Options.MaxItemBytes.
const DefaultMaxItemBytes = 16 << 20

// Options configures a Reader. Zero fields take the defaults given in their comments.
type Options struct {
	// Name names the input in errors, such as a file name. Optional; default "input".
	Name string
	// Format is a hint. JSONL makes the Reader read lines without looking at the content
	// (use it for a .jsonl/.ndjson name or an application/x-ndjson Content-Type); any other
	// value, or "", lets the Reader recognise the format from the content. Optional.
	Format Format
	// MaxItemBytes bounds one item: a longer JSONL line or array item is rejected as that
	// item and reading goes on. Default DefaultMaxItemBytes (16 MiB); negative is invalid.
	MaxItemBytes int
	// MaxDecompressedBytes bounds what a gzip or zstd input unpacks to; past it Next fails
	// with ErrTooLarge. Default DefaultMaxDecompressedBytes (1 GiB, the API's default upload
	// limit); negative is invalid. An uncompressed input is not bounded here: its size is
	// the caller's (the API limits uploads).
	MaxDecompressedBytes int64
}

// Item is one item of a chunk file.
type Item struct {
	// Index is the item's 0-based position: in its array, or among the non-blank lines of a
	// JSONL file.
	Index int
	// ID is the chunk id ("" when none is usable).
	ID string
	// Record is the item as published, or the canonical record for an enriched_chunks item.
	// It is the caller's to keep. nil when the item was too large.
	Record json.RawMessage
	// Err is non-nil when the item is rejected: a *ItemError wrapped in
	// fault.Permanent(fault.Validation, …).
	Err error
	// DuplicateOf is -1, or the index of the latest earlier item with the same ID. That is a
	// warning, not a rejection: the later item wins downstream.
	DuplicateOf int
}

// ItemError says why one item was rejected.
type ItemError struct {
	Index  int    // the item's Index
	ID     string // the chunk id, "" when none is usable
	Reason string // what is wrong, e.g. "no id"
}

// Error returns e.g. "item 34: no id".
func (e *ItemError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("item %d (%s): %s", e.Index, e.ID, e.Reason)
	}
	return fmt.Sprintf("item %d: %s", e.Index, e.Reason)
}

type mode int

const (
	modeStart      mode = iota
	modeArray           // streaming the items of the chosen array
	modeAfterArray      // the array ended; the rest of the object is left to check
	modeLines           // JSONL
	modeSingle          // a file holding one record, kept in single
	modeDone
)

// Reader streams the items of one chunk file. It is not safe for concurrent use.
type Reader struct {
	name   string
	max    int
	hint   Format
	format Format
	jobID  string
	closer io.Closer
	maxDec int64
	dcmp   *Decompressed // a compressed input's decompressor, nil when uncompressed

	br   *bufio.Reader // the input (its uncompressed content, once start ran)
	mode mode
	err  error // sticky: a fatal error, or io.EOF

	// modeArray, modeAfterArray
	dec     *json.Decoder
	capture *captureReader // while recognising the format

	// modeLines
	lr   *bufio.Reader
	line []byte

	single json.RawMessage
	index  int
	// seen maps a 64-bit hash of each id to the index of its latest item: 12 bytes an item
	// however long the ids, so a file of millions of items stays small. Two different ids
	// with the same hash (odds about n²/2⁶⁵) would only draw a false duplicate warning.
	seen     map[uint64]int
	seenSeed maphash.Seed
}

// Open opens the chunk file at path; a .jsonl or .ndjson name is read as JSONL. The caller
// must Close the Reader.
func Open(path string) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open chunk file: %w", err)
	}
	opts := Options{Name: filepath.Base(path)}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		opts.Format = JSONL
	}
	r, err := NewReader(f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = f
	return r, nil
}

// NewReader returns a Reader over r. It reads nothing until the first Next, and never
// closes r. It fails only for invalid opts.
func NewReader(r io.Reader, opts Options) (*Reader, error) {
	if opts.MaxItemBytes < 0 {
		return nil, fmt.Errorf("new chunk reader: MaxItemBytes must not be negative, got %d", opts.MaxItemBytes)
	}
	if opts.MaxDecompressedBytes < 0 {
		return nil, fmt.Errorf("new chunk reader: MaxDecompressedBytes must not be negative, got %d", opts.MaxDecompressedBytes)
	}
	if opts.Name == "" {
		opts.Name = "input"
	}
	if opts.MaxItemBytes == 0 {
		opts.MaxItemBytes = DefaultMaxItemBytes
	}
	return &Reader{
		name:     opts.Name,
		max:      opts.MaxItemBytes,
		maxDec:   opts.MaxDecompressedBytes,
		hint:     opts.Format,
		br:       bufio.NewReaderSize(r, 64<<10),
		seen:     make(map[uint64]int),
		seenSeed: maphash.MakeSeed(),
	}, nil
}

// Format returns the file's format: the hint until the first Next has recognised it.
func (r *Reader) Format() Format {
	if r.format == "" {
		return r.hint
	}
	return r.format
}

// SourceJobID returns the file's top-level "job_id" when it came before the items array
// ("" for JSONL, or before the first Next).
func (r *Reader) SourceJobID() string { return r.jobID }

// Compression returns how the input is compressed, once the first Next has looked at it.
func (r *Reader) Compression() Compression {
	if r.dcmp == nil {
		return Uncompressed
	}
	return r.dcmp.Compression()
}

// Close releases a compressed input's decompressor and closes the file when the Reader came
// from Open; it never closes the reader given to NewReader. It is idempotent.
func (r *Reader) Close() error {
	if r.dcmp != nil {
		_ = r.dcmp.Close()
	}
	if r.closer == nil {
		return nil
	}
	c := r.closer
	r.closer = nil
	if err := c.Close(); err != nil {
		return fmt.Errorf("close chunk file %s: %w", r.name, err)
	}
	return nil
}

// Next returns the next item; a rejected item comes back with Item.Err set and a nil error.
// It returns io.EOF after the last item. Any other error is fatal for the rest of the
// input (it names the item index or byte offset) and is returned again by later calls:
// fault.Permanent(fault.Validation, …) for an empty input (ErrEmpty) or one whose first
// bytes are not JSON text (ErrNotJSON) — both from the first call, before any item —, broken
// JSON structure, an input with no chunk array (ErrNoChunks) or conflicting arrays, corrupt
// compressed data or a compressed input past MaxDecompressedBytes (ErrTooLarge); read
// errors of the underlying reader are returned wrapped and unclassified. gzip and zstd
// inputs are recognised by their first bytes and read uncompressed. Next blocks while the
// underlying reader does.
func (r *Reader) Next() (Item, error) {
	if r.err != nil {
		return Item{}, r.err
	}
	it, err := r.next()
	if err != nil {
		r.err = err
		r.mode = modeDone
	}
	return it, err
}

func (r *Reader) next() (Item, error) {
	for {
		switch r.mode {
		case modeStart:
			if err := r.start(); err != nil {
				return Item{}, err
			}
		case modeArray:
			if it, ok, err := r.nextArrayItem(); err != nil || ok {
				return it, err
			}
		case modeAfterArray:
			if err := r.finishObject(); err != nil {
				return Item{}, err
			}
			return Item{}, io.EOF
		case modeLines:
			return r.nextLine()
		case modeSingle:
			r.mode = modeDone
			raw := r.single
			r.single = nil
			if raw == nil || len(raw) > r.max { // the capture keeps up to max+64 KiB
				return r.reject(0, "", nil, fmt.Sprintf("item exceeds maximum size of %d bytes", r.max)), nil
			}
			return r.item(0, raw), nil
		default:
			return Item{}, io.EOF
		}
	}
}

// start undoes a compression, checks that the input is JSON text and recognises the format.
func (r *Reader) start() error {
	d, err := Decompress(r.br, r.name, r.maxDec)
	if err != nil {
		return err
	}
	if d.Compression() != Uncompressed {
		r.dcmp, r.br = d, bufio.NewReaderSize(d, 64<<10)
	}
	readErr := func(err error) error {
		if r.dcmp != nil {
			return err // the decompressor's errors name the input and are classified
		}
		return fmt.Errorf("read %s: %w", r.name, err)
	}
	// Skip a UTF-8 byte order mark and look at the first significant byte.
	if b, err := r.br.Peek(3); err == nil && string(b) == "\xEF\xBB\xBF" {
		_, _ = r.br.Discard(3)
	}
	for {
		b, err := r.br.Peek(1)
		if err == io.EOF {
			return checkText(r.name, nil) // nothing but white space: ErrEmpty
		}
		if err != nil {
			return readErr(err)
		}
		if !jsonscan.IsWS(b[0]) {
			break
		}
		_, _ = r.br.Discard(1)
	}
	head, err := r.br.Peek(sniffBytes)
	if err := checkText(r.name, head); err != nil {
		return err
	}
	if err != nil && err != io.EOF {
		// The bytes before a read error may still hold items: they are read first, then the
		// error again (Peek handed it over and the input need not repeat it).
		head = bytes.Clone(head)
		r.br = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(head), errorReader{err}), 64<<10)
	}
	if r.hint == JSONL {
		r.format, r.mode, r.lr = JSONL, modeLines, r.br
		return nil
	}
	if head[0] == '[' { // checkText let only { and [ through
		return fault.Permanentf(fault.Validation, "read %s: a top-level JSON array is not a chunk file "+
			"(want an object with a chunks, vectorized_chunks, items or enriched_chunks array, or JSONL)", r.name)
	}
	return r.sniffObject()
}

// errorReader fails every Read with err.
type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

// captureReader keeps what it reads, up to max bytes, so that the first value can be
// replayed as JSONL or returned as a one-record file. It stops keeping once the value turns
// out to be an object holding a chunk array.
type captureReader struct {
	r        io.Reader
	buf      []byte
	max      int
	off      bool // not capturing any more
	overflow bool // more than max bytes went by: buf is incomplete
}

func (c *captureReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 && !c.off {
		if len(c.buf)+n > c.max {
			c.overflow, c.off, c.buf = true, true, nil
		} else {
			c.buf = append(c.buf, p[:n]...)
		}
	}
	return n, err
}

// sniffObject reads the top-level object key by key until it finds a non-empty recognised
// array (object form), or the object ends (a one-record file, JSONL, or no chunks at all).
func (r *Reader) sniffObject() error {
	r.capture = &captureReader{r: r.br, max: r.max + 64<<10}
	r.dec = json.NewDecoder(r.capture)
	// Number tokens stay text: a float64 would fail on a number out of its range (1e700),
	// an error that is neither a syntax error nor retryable.
	r.dec.UseNumber()
	if _, err := r.dec.Token(); err != nil { // '{'
		return r.sniffFailed(err)
	}
	start := r.dec.InputOffset() - 1
	recordLike := false
	for r.dec.More() {
		key, err := r.objectKey()
		if err != nil {
			return r.sniffFailed(err)
		}
		switch key {
		case "chunk_id", "id", "content", "text", "enhanced_content", "original_content":
			recordLike = true
		}
		if f, ok := arrayFormat(key); ok {
			found, err := r.openArray()
			if err != nil {
				return r.sniffFailed(err)
			}
			if found {
				r.format, r.mode = f, modeArray
				r.capture.off, r.capture.buf = true, nil
				return nil
			}
			continue
		}
		if key == "job_id" {
			var v json.RawMessage
			if err := r.dec.Decode(&v); err != nil {
				return r.sniffFailed(err)
			}
			var s string
			if json.Unmarshal(v, &s) == nil {
				r.jobID = s
			}
			continue
		}
		if err := r.skipValue(); err != nil {
			return r.sniffFailed(err)
		}
	}
	if _, err := r.dec.Token(); err != nil { // '}'
		return r.sniffFailed(err)
	}
	end := r.dec.InputOffset()
	if r.dec.More() {
		// More values follow: JSONL whose first line happens to parse here too.
		r.jobID = ""
		return r.replayAsLines(nil)
	}
	if _, err := r.dec.Token(); err != io.EOF {
		r.jobID = ""
		return r.replayAsLines(err)
	}
	if !recordLike {
		return fault.Permanent(fault.Validation, fmt.Errorf("%w in %s", ErrNoChunks, r.name))
	}
	r.format, r.mode, r.jobID = JSONL, modeSingle, ""
	if !r.capture.overflow {
		r.single = bytes.Clone(r.capture.buf[start:end])
	}
	r.capture = nil
	return nil
}

// sniffFailed handles an error while reading the first value before any chunk array was
// found: the input may be JSONL whose first line is broken, so it is replayed as lines.
func (r *Reader) sniffFailed(err error) error {
	var syn *json.SyntaxError
	if !errors.As(err, &syn) && !errors.Is(err, io.ErrUnexpectedEOF) && err != io.EOF {
		return fmt.Errorf("read %s: %w", r.name, err) // a read error of the underlying reader
	}
	r.jobID = ""
	return r.replayAsLines(err)
}

// replayAsLines switches to JSONL, reading again from the start of the input.
func (r *Reader) replayAsLines(cause error) error {
	if r.capture.overflow {
		if cause == nil {
			cause = errors.New("more than one top-level value")
		}
		return fault.Permanentf(fault.Validation, "read %s: the first value is over %d bytes and not a chunk file: %v",
			r.name, r.max, cause)
	}
	r.format, r.mode = JSONL, modeLines
	r.lr = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(r.capture.buf), r.br), 64<<10)
	r.capture, r.dec = nil, nil
	return nil
}

func (r *Reader) objectKey() (string, error) {
	tok, err := r.dec.Token()
	if err != nil {
		return "", err
	}
	key, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("object key is %v", tok)
	}
	return key, nil
}

// openArray reads the value of a recognised key: it reports true, positioned at the first
// item, for a non-empty array, and consumes anything else.
func (r *Reader) openArray() (bool, error) {
	tok, err := r.dec.Token()
	if err != nil {
		return false, err
	}
	d, ok := tok.(json.Delim)
	switch {
	case !ok: // a scalar: already consumed
		return false, nil
	case d == '{':
		return false, r.skipRest(1)
	}
	if r.dec.More() {
		return true, nil
	}
	_, err = r.dec.Token() // ']'
	return false, err
}

// skipValue consumes one value without keeping it.
func (r *Reader) skipValue() error {
	tok, err := r.dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); ok && (d == '{' || d == '[') {
		return r.skipRest(1)
	}
	return nil
}

// skipRest consumes tokens until depth open containers have closed.
func (r *Reader) skipRest(depth int) error {
	for depth > 0 {
		tok, err := r.dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// nextArrayItem decodes the next item of the array; ok is false at its end.
func (r *Reader) nextArrayItem() (Item, bool, error) {
	if !r.dec.More() {
		if _, err := r.dec.Token(); err != nil { // ']'
			return Item{}, false, r.structureErr(fmt.Sprintf("after item %d", r.index-1), err)
		}
		r.mode = modeAfterArray
		return Item{}, false, nil
	}
	idx := r.index
	r.index++
	offset := r.dec.InputOffset()
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		return Item{}, false, r.structureErr(fmt.Sprintf("item %d at byte offset %d", idx, offset), err)
	}
	if len(raw) > r.max {
		return r.reject(idx, "", nil, fmt.Sprintf("item of %d bytes exceeds maximum size of %d bytes", len(raw), r.max)), true, nil
	}
	return r.item(idx, raw), true, nil
}

// finishObject reads the rest of the top-level object after the items array: another
// non-empty recognised array is an error, as is anything after the object.
func (r *Reader) finishObject() error {
	for r.dec.More() {
		key, err := r.objectKey()
		if err != nil {
			return r.structureErr("after the items", err)
		}
		if _, ok := arrayFormat(key); ok {
			found, err := r.openArray()
			if err != nil {
				return r.structureErr("after the items", err)
			}
			if found {
				return fault.Permanentf(fault.Validation, "read %s: both a %q and a %q array hold items; a file must have one",
					r.name, r.format, key)
			}
			continue
		}
		if err := r.skipValue(); err != nil {
			return r.structureErr("after the items", err)
		}
	}
	if _, err := r.dec.Token(); err != nil { // '}'
		return r.structureErr("after the items", err)
	}
	if _, err := r.dec.Token(); err != io.EOF {
		return fault.Permanentf(fault.Validation, "read %s: unexpected data after the top-level object at byte offset %d",
			r.name, r.dec.InputOffset())
	}
	return nil
}

// structureErr classifies an error that breaks the object structure: no later item can be
// found, so reading stops.
func (r *Reader) structureErr(where string, err error) error {
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return fault.Permanentf(fault.Validation, "read %s: %s: invalid JSON at byte offset %d: %v", r.name, where, syn.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF) || err == io.EOF:
		return fault.Permanentf(fault.Validation, "read %s: %s: input ends inside the top-level object", r.name, where)
	default:
		return fmt.Errorf("read %s: %s: %w", r.name, where, err)
	}
}

// nextLine returns the next non-blank line as an item.
func (r *Reader) nextLine() (Item, error) {
	for {
		line, tooLong, err := r.readLine()
		if err != nil && err != io.EOF {
			return Item{}, fmt.Errorf("read %s: line of item %d: %w", r.name, r.index, err)
		}
		eof := err == io.EOF
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 && !tooLong {
			if eof {
				return Item{}, io.EOF
			}
			continue
		}
		idx := r.index
		r.index++
		if tooLong || len(trimmed) > r.max {
			return r.reject(idx, "", nil, fmt.Sprintf("line exceeds maximum size of %d bytes", r.max)), nil
		}
		if !json.Valid(trimmed) {
			var v json.RawMessage
			serr := json.Unmarshal(trimmed, &v)
			return r.reject(idx, "", bytes.Clone(trimmed), fmt.Sprintf("invalid JSON: %v", serr)), nil
		}
		return r.item(idx, bytes.Clone(trimmed)), nil
	}
}

// readLine reads one line into r.line, keeping at most max+slack bytes of it; tooLong
// reports a longer line (which is consumed to its end).
func (r *Reader) readLine() (line []byte, tooLong bool, err error) {
	const slack = 4 << 10 // white space around a line that is just under the limit
	if cap(r.line) > 1<<20 {
		r.line = nil // do not keep a huge buffer after one huge line
	}
	r.line = r.line[:0]
	for {
		frag, err := r.lr.ReadSlice('\n')
		if !tooLong {
			if len(r.line)+len(frag) > r.max+slack {
				tooLong, r.line = true, r.line[:0]
			} else {
				r.line = append(r.line, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return r.line, tooLong, err
	}
}

// item applies the reader-level checks to one raw item (known to be well-formed JSON) and
// tracks duplicates.
func (r *Reader) item(idx int, raw json.RawMessage) Item {
	if jsonscan.FirstByte(raw) != '{' {
		return r.reject(idx, "", raw, "item is not a JSON object (got "+jsonscan.Type(raw)+")")
	}
	rec := raw
	if r.format == EnrichedChunks {
		conv, err := record.ConvertEnriched(raw)
		if err != nil {
			return r.reject(idx, "", raw, err.Error())
		}
		rec = conv
	}
	id, err := record.ID(rec)
	if err != nil {
		return r.reject(idx, "", rec, err.Error())
	}
	it := Item{Index: idx, ID: id, Record: rec, DuplicateOf: -1}
	h := maphash.String(r.seenSeed, id)
	if prev, ok := r.seen[h]; ok {
		it.DuplicateOf = prev
	}
	r.seen[h] = idx
	return it
}

func (r *Reader) reject(idx int, id string, raw json.RawMessage, reason string) Item {
	return Item{
		Index:       idx,
		ID:          id,
		Record:      raw,
		Err:         fault.Permanent(fault.Validation, &ItemError{Index: idx, ID: id, Reason: reason}),
		DuplicateOf: -1,
	}
}
