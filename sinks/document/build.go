package document

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/schemas/jsonscan"
	"github.com/sluice-dev/sluice/schemas/record"
)

// Config configures a Builder. Zero fields take the defaults given in their comments.
type Config struct {
	// Env is the environment the documents belong to: "dev", "test" or "prod". It fills the
	// document's and the metadata's "environment" when the record has none. Required.
	Env string
	// SplitThreshold is the largest content, in UTF-8 bytes, kept whole in one document;
	// longer content is split (the HEAD rule, reference ttrpg-center.md §1.6 rule 3).
	// Default 7000. It must not exceed Limits.MaxStringBytes, and must leave room for a
	// whole window (WindowChars × 4 bytes).
	SplitThreshold int
	// WindowChars is the size of one part of split content, in runes. Default 400.
	WindowChars int
	// MaxContentBytes is the largest content accepted at all, in UTF-8 bytes; a record with
	// more is rejected with "content too large". Default 1 MiB.
	MaxContentBytes int
	// Limits are the document limits every built document is checked against. Optional;
	// zero fields take the Data API defaults (see Limits).
	Limits Limits
}

const (
	defaultSplitThreshold  = 7000
	defaultWindowChars     = 400
	defaultMaxContentBytes = 1 << 20
)

func (c *Config) setDefaults() {
	if c.SplitThreshold == 0 {
		c.SplitThreshold = defaultSplitThreshold
	}
	if c.WindowChars == 0 {
		c.WindowChars = defaultWindowChars
	}
	if c.MaxContentBytes == 0 {
		c.MaxContentBytes = defaultMaxContentBytes
	}
	c.Limits = c.Limits.withDefaults()
}

// Validate reports every problem with c at once, judging zero fields by their defaults.
func (c Config) Validate() error {
	c.setDefaults()
	var errs []error
	switch c.Env {
	case "dev", "test", "prod":
	case "":
		errs = append(errs, errors.New("document config: Env is required (dev, test or prod)"))
	default:
		errs = append(errs, fmt.Errorf("document config: Env must be dev, test or prod, got %q", c.Env))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"SplitThreshold", c.SplitThreshold}, {"WindowChars", c.WindowChars}, {"MaxContentBytes", c.MaxContentBytes}} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("document config: %s must not be negative, got %d", f.name, f.v))
		}
	}
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("document config: %w", err))
	}
	if c.SplitThreshold > c.Limits.MaxStringBytes && c.Limits.MaxStringBytes > 0 {
		errs = append(errs, fmt.Errorf("document config: SplitThreshold %d exceeds Limits.MaxStringBytes %d",
			c.SplitThreshold, c.Limits.MaxStringBytes))
	}
	if c.WindowChars > 0 && c.SplitThreshold > 0 && c.WindowChars*utf8.UTFMax > c.SplitThreshold {
		errs = append(errs, fmt.Errorf("document config: a window of %d runes may take %d bytes, over SplitThreshold %d",
			c.WindowChars, c.WindowChars*utf8.UTFMax, c.SplitThreshold))
	}
	return errors.Join(errs...)
}

// Builder turns chunk records into documents. It holds no mutable state and is safe for
// concurrent use.
type Builder struct {
	cfg Config
	env []byte // Env as a JSON string
	// scratch pools the limit checker's working space (*scratch), kept off the stacks of
	// the short-lived goroutines that build documents.
	scratch sync.Pool
	// fields pools the maps records' top-level members are decoded into: a fresh map was
	// the largest allocation of a build.
	fields sync.Pool
}

// NewBuilder returns a Builder for cfg, or the errors of cfg.Validate.
func NewBuilder(cfg Config) (*Builder, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("new document builder: %w", err)
	}
	b := &Builder{cfg: cfg, env: jsonscan.AppendString(nil, cfg.Env)}
	b.scratch.New = func() any { return new(scratch) }
	b.fields.New = func() any { return make(map[string]json.RawMessage, 16) }
	return b, nil
}

// Meta is what the message around a record adds to its documents.
type Meta struct {
	// Version becomes Doc.Version (the JetStream stream sequence). 0 means unconditional.
	Version uint64
	// Job is the Sluice job id, stored as "sluice_job"; "" when the message has none.
	Job string
}

// Build turns one chunk record (a JSON object in any format of reference ttrpg-center.md
// §1.2-1.3) into its documents: one, or one per part when the content is split. It decodes
// only the top level; every other field passes through as raw JSON. The documents carry
//
//   - every field of the record, except that the "id" and "text" it took the id and content
//     from are replaced by "chunk_id" and "content" (the other of a pair, if also present,
//     passes through);
//   - "_id" (the part id), "chunk_id", "content" (this part's text), "environment" (Env when
//     absent or null), "metadata" (an object; "environment" added when absent; created when
//     absent or null), "stage" (the record's, else metadata.stage, else "raw"), "sluice_job"
//     when m.Job is set, and "part" (1-based) and "parts" when the content was split.
//
// A legacy enriched item (no content or text, but enhanced_content or original_content) is
// converted first, as ConvertEnriched does. Content is kept byte for byte as decoded.
// Content over SplitThreshold bytes is cut into WindowChars-rune windows, each trimmed of
// surrounding white space, empty ones dropped; part 1 keeps the chunk id and part n ≥ 2 is
// "{id}-part{n}". The same record always gives the same documents.
//
// Every error is permanent: fault.Validation for a broken record (no id, a non-string id,
// empty content, metadata that is not an object, …) and fault.Limit for content over
// MaxContentBytes or a document that breaks Limits (then the error wraps a *LimitError).
// The returned documents own their bodies. Build is safe for concurrent use.
func (b *Builder) Build(raw json.RawMessage, m Meta) ([]Doc, error) {
	// The split is structural only: every value that reaches a document is validated by
	// Limits.Check on the body, the dropped ones in tail, the id and content when decoded.
	// The map is not kept: values point into raw or into new slices, documents get new
	// bodies, errors copy what they quote.
	pooled := b.fields.Get().(map[string]json.RawMessage)
	defer func() {
		clear(pooled)
		b.fields.Put(pooled)
	}()
	fields, err := record.DecodeInto(pooled, raw, false)
	if err != nil {
		return nil, err
	}
	if record.IsEnriched(fields) {
		if err := record.ConvertEnrichedFields(fields); err != nil {
			return nil, err
		}
	}
	id, idField, err := record.PickID(fields["chunk_id"], fields["id"])
	if err != nil {
		return nil, err
	}
	content, contentLen, rawContent, contentField, err := b.content(fields)
	if err != nil {
		return nil, err
	}

	tail, split, err := b.tail(fields, idField, contentField, contentLen > b.cfg.SplitThreshold, m)
	if err != nil {
		return nil, err
	}
	parts := []string{content}
	if split {
		parts = windows(content, b.cfg.WindowChars)
		if len(parts) == 0 {
			return nil, fault.Permanentf(fault.Validation, "empty content: only white space")
		}
	}

	docs := make([]Doc, len(parts))
	for n, p := range parts {
		pid := id
		if n > 0 {
			pid = id + "-part" + strconv.Itoa(n+1)
		}
		body := make([]byte, 0, len(tail)+len(p)+2*len(id)+96)
		body = append(body, `{"_id":`...)
		body = jsonscan.AppendString(body, pid)
		body = append(body, `,"chunk_id":`...)
		body = jsonscan.AppendString(body, id)
		body = append(body, `,"content":`...)
		if rawContent != nil && !split {
			body = append(body, rawContent...) // the producer's own encoding of the same text
		} else {
			body = jsonscan.AppendString(body, p)
		}
		if split {
			body = append(body, `,"part":`...)
			body = strconv.AppendInt(body, int64(n+1), 10)
			body = append(body, `,"parts":`...)
			body = strconv.AppendInt(body, int64(len(parts)), 10)
		}
		body = append(body, tail...)
		body = append(body, '}')
		sc := b.scratch.Get().(*scratch)
		err := b.cfg.Limits.check(body, sc)
		b.scratch.Put(sc)
		if err != nil {
			if fault.ClassOf(err) == fault.Validation && !json.Valid(raw) {
				return nil, record.SyntaxError(raw) // say where the record is broken, not the body
			}
			return nil, err
		}
		docs[n] = Doc{ID: pid, Version: m.Version, Body: body}
	}
	return docs, nil
}

// content returns the decoded content, the field it came from, and, when the producer's JSON
// encoding of it can go into the document as it is, that encoding (else nil). Most records
// take that path, which neither decodes nor re-encodes the text: only content that will be
// split is decoded.
func (b *Builder) content(fields map[string]json.RawMessage) (text string, n int, encoded json.RawMessage, field string, err error) {
	raw, field := fields["content"], "content"
	if jsonscan.IsNull(raw) {
		raw, field = fields["text"], "text"
	}
	if jsonscan.IsNull(raw) {
		return "", 0, nil, "", fault.Permanentf(fault.Validation, "no content (content or text)")
	}
	if jsonscan.FirstByte(raw) != '"' {
		return "", 0, nil, "", fault.Permanentf(fault.Validation, "%s must be a string, got %s", field, jsonscan.Type(raw))
	}
	raw = bytes.TrimSpace(raw)
	if n, ok := plainStringLen(raw); ok {
		switch {
		case n == 0:
			return "", 0, nil, "", fault.Permanentf(fault.Validation, "empty content")
		case n > b.cfg.MaxContentBytes:
			return "", 0, nil, "", fault.Permanentf(fault.Limit, "content too large: %d bytes exceeds maximum %d", n, b.cfg.MaxContentBytes)
		case n <= b.cfg.SplitThreshold:
			// Not split: the document takes the encoded text as it is; n is all Build needs.
			return "", n, raw, field, nil
		}
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", 0, nil, "", fault.Permanent(fault.Validation, fmt.Errorf("decode %s: %w", field, err))
	}
	if s == "" {
		return "", 0, nil, "", fault.Permanentf(fault.Validation, "empty content")
	}
	if len(s) > b.cfg.MaxContentBytes {
		return "", 0, nil, "", fault.Permanentf(fault.Limit, "content too large: %d bytes exceeds maximum %d", len(s), b.cfg.MaxContentBytes)
	}
	return s, len(s), nil, field, nil
}

// tail renders every member after content, each preceded by a comma, in key order. It is
// shared by all parts of a split record.
func (b *Builder) tail(fields map[string]json.RawMessage, idField, contentField string, split bool, m Meta) ([]byte, bool, error) {
	md, mdStage, err := b.metadata(fields["metadata"])
	if err != nil {
		return nil, false, err
	}
	stage := fields["stage"]
	switch {
	case !jsonscan.IsNull(stage) && jsonscan.FirstByte(stage) != '"':
		return nil, false, fault.Permanentf(fault.Validation, "stage must be a string, got %s", jsonscan.Type(stage))
	case !jsonscan.IsNull(stage):
	case jsonscan.FirstByte(mdStage) == '"':
		stage = mdStage
	default:
		stage = json.RawMessage(`"raw"`)
	}

	ms := make([]jsonscan.Member, 0, len(fields)+4)
	for k, v := range fields {
		// Replaced fields reach the body in another form (checked there) or were decoded.
		// Dropped ones are validated here, so that a broken record is never accepted.
		replaced, dropped := false, false
		switch k {
		case "chunk_id", "content", "metadata", "stage", idField, contentField:
			replaced = true
		case "environment":
			replaced = jsonscan.IsNull(v)
		case "_id":
			dropped = true
		case "sluice_job":
			dropped = m.Job != ""
		case "part", "parts":
			dropped = split
		}
		if dropped && !json.Valid(v) {
			return nil, false, fault.Permanentf(fault.Validation, "decode record: field %q is not valid JSON", k)
		}
		if !replaced && !dropped {
			ms = append(ms, jsonscan.Member{Key: k, Val: v})
		}
	}
	if jsonscan.IsNull(fields["environment"]) {
		ms = append(ms, jsonscan.Member{Key: "environment", Val: b.env})
	}
	ms = append(ms, jsonscan.Member{Key: "metadata", Val: md}, jsonscan.Member{Key: "stage", Val: stage})
	if m.Job != "" {
		ms = append(ms, jsonscan.Member{Key: "sluice_job", Val: jsonscan.AppendString(nil, m.Job)})
	}
	slices.SortFunc(ms, jsonscan.ByKey)

	size := 0
	for _, x := range ms {
		size += len(x.Key) + len(x.Val) + 4
	}
	out := make([]byte, 0, size)
	for _, x := range ms {
		out = append(out, ',')
		out = jsonscan.AppendString(out, x.Key)
		out = append(out, ':')
		out = jsonscan.AppendRaw(out, x.Val)
	}
	return out, split, nil
}

// metadata returns the document's metadata object, with "environment" set when absent, and
// the raw value of metadata.stage (nil when absent).
func (b *Builder) metadata(raw json.RawMessage) ([]byte, []byte, error) {
	if jsonscan.IsNull(raw) {
		out := append([]byte(`{"environment":`), b.env...)
		return append(out, '}'), nil, nil
	}
	if jsonscan.FirstByte(raw) != '{' {
		return nil, nil, fault.Permanentf(fault.Validation, "metadata must be an object, got %s", jsonscan.Type(raw))
	}
	var hasEnv bool
	var stage []byte
	err := jsonscan.EachMember(raw, func(key []byte, esc bool, val []byte) bool {
		switch {
		case jsonscan.KeyIs(key, esc, "environment"):
			hasEnv = true
		case jsonscan.KeyIs(key, esc, "stage"):
			stage = val
		}
		return true
	})
	if err != nil {
		return nil, nil, fault.Permanentf(fault.Validation, "metadata is not well-formed JSON")
	}
	md := jsonscan.AppendRaw(nil, raw)
	if hasEnv {
		return md, stage, nil
	}
	out := make([]byte, 0, len(md)+len(b.env)+16)
	out = append(out, `{"environment":`...)
	out = append(out, b.env...)
	if rest := md[1:]; jsonscan.FirstByte(rest) != '}' {
		out = append(out, ',')
		out = append(out, rest...)
	} else {
		out = append(out, '}')
	}
	return out, stage, nil
}

// windows cuts s into windows of n runes, trims each and drops empty ones.
func windows(s string, n int) []string {
	out := make([]string, 0, utf8.RuneCountInString(s)/n+1)
	count, start := 0, 0
	for i := range s {
		if count == n {
			if w := strings.TrimSpace(s[start:i]); w != "" {
				out = append(out, w)
			}
			start, count = i, 0
		}
		count++
	}
	if w := strings.TrimSpace(s[start:]); w != "" {
		out = append(out, w)
	}
	return out
}

// plainStringLen returns the decoded UTF-8 length of the JSON string token raw, and true,
// when raw can be copied into a document as it is: valid UTF-8, no raw control characters, and
// escapes that decode to exactly one valid character (no lone or paired surrogate escapes,
// which take the decoding path so that a lone one becomes U+FFFD as the reference requires).
func plainStringLen(raw []byte) (int, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return 0, false
	}
	body := raw[1 : len(raw)-1]
	if !utf8.Valid(body) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c < 0x20:
			return 0, false
		case c == '"':
			return 0, false // an unescaped quote: not one string token
		case c != '\\':
			n++
			continue
		}
		i++
		if i >= len(body) {
			return 0, false
		}
		switch body[i] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			n++
		case 'u':
			if i+4 >= len(body) {
				return 0, false
			}
			var v rune
			for _, h := range body[i+1 : i+5] {
				v <<= 4
				switch {
				case h >= '0' && h <= '9':
					v |= rune(h - '0')
				case h >= 'a' && h <= 'f':
					v |= rune(h - 'a' + 10)
				case h >= 'A' && h <= 'F':
					v |= rune(h - 'A' + 10)
				default:
					return 0, false
				}
			}
			if v >= 0xD800 && v <= 0xDFFF {
				return 0, false
			}
			n += utf8.RuneLen(v)
			i += 4
		default:
			return 0, false
		}
	}
	return n, true
}
