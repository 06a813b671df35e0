// Package schemas is Sluice's wire contract: the JSON Schemas (draft 2020-12) of every message
// producers and Sluice exchange over JetStream, the subject, stream and header names, and Go
// types mirroring the job and dead-letter messages. The schema files are embedded; Python
// (nats-py), nats.js and `nats` CLI producers use the same files (see README.md).
//
// The package has no state beyond its embedded files. A Validator compiles the schemas once and
// is safe for concurrent use.
package schemas

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// Name names one schema. The values are also what the Sluice-Schema header carries.
type Name string

// The schemas of contract v1.
const (
	// Chunk is one chunk record, the payload of a message on sluice.v1.chunks.{env}
	// (chunk.v1.json).
	Chunk Name = "sluice.chunk.v1"
	// ChunkBundle is many chunks of one job in one message on sluice.v1.chunks.{env}, each with
	// its item index (chunk-bundle.v1.json); the message's Sluice-Schema header names it.
	ChunkBundle Name = "sluice.chunk-bundle.v1"
	// JobEvent is a job lifecycle event (open or seal), the payload of a message on
	// sluice.v1.jobs.{env} (job.v1.json).
	JobEvent Name = "sluice.job.v1"
	// DeadLetter is the dead-letter envelope Sluice writes on sluice.dlq.>
	// (dead-letter.v1.json).
	DeadLetter Name = "sluice.dead-letter.v1"
	// Command is a requirement or feature-request command, the payload of a message on
	// sluice.v1.requirements.{key} or sluice.v1.features.{key} (command.v1.json).
	Command Name = "sluice.command.v1"
	// Requirements is a stored requirements version (requirements.v1.json).
	Requirements Name = "sluice.requirements.v1"
	// FeatureRequest is a stored feature request (feature-request.v1.json).
	FeatureRequest Name = "sluice.feature-request.v1"
)

// MaxProblems is the most problems a ValidationError lists; further ones are summarised in one
// last entry, so a huge invalid document cannot produce a huge error.
const MaxProblems = 20

// ErrUnknownSchema is returned (wrapped) by Validate for a Name that is not one of Names().
var ErrUnknownSchema = errors.New("unknown schema")

//go:embed chunk.v1.json chunk-bundle.v1.json job.v1.json dead-letter.v1.json command.v1.json requirements.v1.json feature-request.v1.json
var files embed.FS

// fileOf maps each Name to its embedded file.
func fileOf(name Name) (string, bool) {
	switch name {
	case Chunk:
		return "chunk.v1.json", true
	case ChunkBundle:
		return "chunk-bundle.v1.json", true
	case JobEvent:
		return "job.v1.json", true
	case DeadLetter:
		return "dead-letter.v1.json", true
	case Command:
		return "command.v1.json", true
	case Requirements:
		return "requirements.v1.json", true
	case FeatureRequest:
		return "feature-request.v1.json", true
	}
	return "", false
}

// Names returns every schema name, sorted. The caller owns the slice.
func Names() []Name {
	return []Name{ChunkBundle, Chunk, Command, DeadLetter, FeatureRequest, JobEvent, Requirements}
}

// FileName returns the file name of schema name (e.g. "chunk.v1.json"), the last path element of
// its $id, and whether name is known.
func FileName(name Name) (string, bool) {
	return fileOf(name)
}

// Schema returns the raw JSON Schema file of name, to serve it as is, and whether name is known.
// The caller owns the returned bytes.
func Schema(name Name) ([]byte, bool) {
	f, ok := fileOf(name)
	if !ok {
		return nil, false
	}
	b, err := files.ReadFile(f)
	if err != nil {
		// Every file fileOf names is embedded; TestSchemaFiles keeps it so.
		return nil, false
	}
	return b, true
}

// ValidationError reports why a document does not match its schema. It is a permanent
// failure: the same bytes can never become valid, so callers classify it as
// fault.Validation and dead-letter the message.
type ValidationError struct {
	// Schema is the schema the document was checked against.
	Schema Name
	// Problems lists what is wrong, each as a quoted JSON pointer into the document followed
	// by a message, e.g. `"/rejections/0": missing property 'reason'`; "" is the whole document.
	// At most MaxProblems entries.
	Problems []string
}

// Error joins the problems into one line.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("document does not match %s: %s", e.Schema, strings.Join(e.Problems, "; "))
}

// Validator checks documents against the embedded schemas. It is immutable after NewValidator
// and safe for concurrent use.
type Validator struct {
	compiled map[Name]*jsonschema.Schema
}

// NewValidator compiles every embedded schema. It does no I/O beyond reading the embedded
// files: no schema is ever fetched from the network. An error means a schema file is broken,
// which the package tests rule out.
//
// Formats are asserted (a created_at that is not an RFC 3339 date-time is invalid), unlike the
// draft 2020-12 default.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	names := Names()
	ids := make(map[Name]string, len(names))
	for _, name := range names {
		file, _ := fileOf(name)
		raw, err := files.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read schema %s: %w", file, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("parse schema %s: %w", file, err)
		}
		obj, _ := doc.(map[string]any)
		id, _ := obj["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("schema %s has no $id", file)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("add schema %s: %w", file, err)
		}
		ids[name] = id
	}
	v := &Validator{
		compiled: make(map[Name]*jsonschema.Schema, len(ids)),
	}
	for name, id := range ids {
		s, err := c.Compile(id)
		if err != nil {
			return nil, fmt.Errorf("compile schema %s: %w", id, err)
		}
		v.compiled[name] = s
	}
	return v, nil
}

// Validate checks doc, one JSON document, against schema name. It returns nil when doc is
// valid, a *ValidationError when it is not (including when doc is not JSON), and an error
// wrapping ErrUnknownSchema when name is not one of Names(). For JobEvent it also checks the
// rules JSON Schema cannot express (see JobSeal.Check). It does not block and is safe for
// concurrent use; doc is only read.
func (v *Validator) Validate(name Name, doc []byte) error {
	s, ok := v.compiled[name]
	if !ok {
		return fmt.Errorf("validate against %q: %w", name, ErrUnknownSchema)
	}
	var inst any
	if name == Chunk {
		inst = decodeChunk(doc)
	}
	if inst == nil {
		var err error
		inst, err = jsonschema.UnmarshalJSON(bytes.NewReader(doc))
		if err != nil {
			return &ValidationError{Schema: name, Problems: []string{fmt.Sprintf("%q: not valid JSON: %v", "", err)}}
		}
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return &ValidationError{Schema: name, Problems: []string{fmt.Sprintf("%q: %v", "", err)}}
		}
		return &ValidationError{Schema: name, Problems: problems(ve)}
	}
	if name == JobEvent {
		var ev JobEventEnvelope
		if err := json.Unmarshal(doc, &ev); err != nil {
			// The schema accepted it, so this is a drift between schema and Go types.
			return &ValidationError{Schema: name, Problems: []string{fmt.Sprintf("%q: %v", "", err)}}
		}
		if ev.Seal != nil {
			if err := ev.Seal.Check(); err != nil {
				return &ValidationError{Schema: name, Problems: []string{fmt.Sprintf("%q: %v", "", err)}}
			}
		}
	}
	return nil
}

// decodeChunk decodes a chunk record for validation without decoding its "embedding" when that
// is a flat array of numbers: decoding and checking 1024 floats one by one otherwise takes most
// of a Pass D record's validation time. Such an embedding is replaced by an empty array, which is
// exactly as valid, because chunk.v1.json constrains nothing but the array type and its items'
// type (TestEmbeddingShortcut keeps it so). It returns nil when the shortcut does not apply
// (no embedding, not an object, not JSON, or an embedding the schema must look at); the caller
// then decodes the whole document.
func decodeChunk(doc []byte) any {
	if !bytes.Contains(doc, []byte(`"embedding"`)) {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(doc, &fields); err != nil || fields == nil {
		return nil
	}
	if !flatNumberArray(fields["embedding"]) {
		return nil
	}
	obj := make(map[string]any, len(fields))
	for k, raw := range fields {
		if k == "embedding" {
			obj[k] = []any{}
			continue
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil
		}
		obj[k] = v
	}
	return obj
}

// flatNumberArray reports whether raw, a syntactically valid JSON value, is an array of numbers:
// one pair of brackets and, between them, nothing but number characters, commas and whitespace.
// Valid JSON made only of those characters can hold nothing but numbers.
func flatNumberArray(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) < 2 || raw[0] != '[' || raw[len(raw)-1] != ']' {
		return false
	}
	for _, c := range raw[1 : len(raw)-1] {
		switch {
		case c >= '0' && c <= '9', c == '.', c == 'e', c == 'E', c == '+', c == '-', c == ',',
			c == ' ', c == '\t', c == '\n', c == '\r':
		default:
			return false
		}
	}
	return true
}

// problems flattens a jsonschema error tree into at most MaxProblems lines.
func problems(ve *jsonschema.ValidationError) []string {
	var leaves []*jsonschema.ValidationError
	collectLeaves(ve, &leaves)
	out := make([]string, 0, min(len(leaves), MaxProblems))
	seen := make(map[string]bool, len(leaves))
	for _, l := range leaves {
		p := fmt.Sprintf("%q: %s", pointer(l.InstanceLocation), leafMessage(l))
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	if len(out) > MaxProblems {
		more := len(out) - (MaxProblems - 1)
		out = append(out[:MaxProblems-1], fmt.Sprintf("and %d more problems", more))
	}
	return out
}

// collectLeaves appends the errors that say what is wrong. Inside a oneOf/anyOf, branches that
// failed on their discriminator (a const, or a missing "type") are dropped when another branch
// failed otherwise: a seal missing "total" should not also report "type must be open". When
// every branch failed on its discriminator, the group error itself is the problem.
func collectLeaves(e *jsonschema.ValidationError, out *[]*jsonschema.ValidationError) {
	if len(e.Causes) == 0 {
		*out = append(*out, e)
		return
	}
	causes := e.Causes
	switch e.ErrorKind.(type) {
	case *kind.OneOf, *kind.AnyOf:
		var kept []*jsonschema.ValidationError
		for _, c := range causes {
			if !failsDiscriminator(c) {
				kept = append(kept, c)
			}
		}
		if len(kept) == 0 {
			*out = append(*out, &jsonschema.ValidationError{
				InstanceLocation: e.InstanceLocation,
				ErrorKind:        e.ErrorKind,
			})
			return
		}
		causes = kept
	}
	for _, c := range causes {
		collectLeaves(c, out)
	}
}

// leafMessage renders the message of an error without causes, in English.
func leafMessage(e *jsonschema.ValidationError) string {
	if out := e.BasicOutput(); out != nil && out.Error != nil {
		return out.Error.String()
	}
	return fmt.Sprintf("%T", e.ErrorKind)
}

// failsDiscriminator reports whether e, or an error under it, is a const mismatch or a missing
// "type" property.
func failsDiscriminator(e *jsonschema.ValidationError) bool {
	switch k := e.ErrorKind.(type) {
	case *kind.Const:
		return true
	case *kind.Required:
		if slices.Contains(k.Missing, "type") {
			return true
		}
	}
	for _, c := range e.Causes {
		if failsDiscriminator(c) {
			return true
		}
	}
	return false
}

// pointer renders instance location tokens as a JSON pointer (RFC 6901); "" is the root.
func pointer(tokens []string) string {
	var sb strings.Builder
	for _, t := range tokens {
		sb.WriteByte('/')
		t = strings.ReplaceAll(t, "~", "~0")
		sb.WriteString(strings.ReplaceAll(t, "/", "~1"))
	}
	return sb.String()
}
