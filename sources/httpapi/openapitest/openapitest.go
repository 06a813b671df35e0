// Package openapitest checks HTTP responses against the API's OpenAPI 3.1 document, so tests
// of the real handlers (in any package) prove the document describes what they send.
package openapitest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Doc is a compiled OpenAPI document.
type Doc struct {
	raw   map[string]any
	c     *jsonschema.Compiler
	cache map[string]*jsonschema.Schema
}

const base = "https://sluice.dev/openapi.json"

// Load parses an OpenAPI 3.1 document (its schemas are JSON Schema 2020-12).
func Load(doc []byte) (*Doc, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("parse openapi: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(base, v); err != nil {
		return nil, fmt.Errorf("load openapi: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	return &Doc{raw: m, c: c, cache: map[string]*jsonschema.Schema{}}, nil
}

// Operations returns every "METHOD /path" the document describes.
func (d *Doc) Operations() []string {
	var out []string
	paths, _ := d.raw["paths"].(map[string]any)
	for p, item := range paths {
		for m := range item.(map[string]any) {
			switch m {
			case "get", "post", "put", "delete", "patch":
				out = append(out, strings.ToUpper(m)+" "+p)
			}
		}
	}
	return out
}

func escape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// Check validates one response: the operation (method and path template, e.g.
// "GET /v1/jobs/{id}") must document status with contentType, and a JSON body must match its
// schema.
func (d *Doc) Check(op string, status int, contentType string, body []byte) error {
	method, path, _ := strings.Cut(op, " ")
	paths, _ := d.raw["paths"].(map[string]any)
	item, ok := paths[path].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: path not documented", op)
	}
	o, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: method not documented", op)
	}
	resps, _ := o["responses"].(map[string]any)
	code := strconv.Itoa(status)
	r, ok := resps[code].(map[string]any)
	if !ok {
		return fmt.Errorf("%s: status %d not documented", op, status)
	}
	content, _ := r["content"].(map[string]any)
	if len(content) == 0 {
		if len(bytes.TrimSpace(body)) != 0 {
			return fmt.Errorf("%s %d: documented without a body, got %q", op, status, body)
		}
		return nil
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	if _, ok := content[mt]; !ok {
		return fmt.Errorf("%s %d: content type %q not documented", op, status, mt)
	}
	if !strings.HasSuffix(mt, "json") {
		return nil
	}
	ptr := fmt.Sprintf("%s#/paths/%s/%s/responses/%s/content/%s/schema", base, escape(path), strings.ToLower(method), code, escape(mt))
	sch, ok := d.cache[ptr]
	if !ok {
		var err error
		if sch, err = d.c.Compile(ptr); err != nil {
			return fmt.Errorf("compile schema of %s %d: %w", op, status, err)
		}
		d.cache[ptr] = sch
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%s %d: body is not JSON: %w", op, status, err)
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %d: body does not match the OpenAPI document: %w", op, status, err)
	}
	return nil
}
