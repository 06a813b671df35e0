package docstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

// referenceID finds the top-level "_id" of a valid JSON object the slow, obviously correct
// way, with json.Decoder tokens. It is the oracle for topLevelID.
func referenceID(body []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errNotObject
	}
	var found []byte
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if tok == "_id" {
			if found != nil {
				return nil, errDupBodyID
			}
			found = v
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	if found == nil {
		return nil, errNoBodyID
	}
	return found, nil
}

func FuzzTopLevelID(f *testing.F) {
	seeds := []string{
		`{"_id":"a"}`,
		` { "x" : [1, {"_id":"nested"}, "]}\"" ] , "_id" : "b" } `,
		`{"\u005fid":"escaped key"}`,
		`{"_id":"a","_id":"b"}`,
		`{"a":{"b":{"c":[[],{}]}},"_id":null}`,
		`{"_id":-1.5e3,"z":true}`,
		`{"k\"_id":"x","_id":"y\\"}`,
		`{}`,
		`[{"_id":"a"}]`,
		`"_id"`,
		"{\"_id\"\t:\r\n\"ws\"\n}",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		want, wantErr := referenceID(body)
		got, gotErr := topLevelID(body)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("topLevelID(%s) = %s, %v; reference %s, %v", body, got, gotErr, want, wantErr)
		}
		if wantErr == nil && !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
			t.Fatalf("topLevelID(%s) = %s, reference %s", body, got, want)
		}
	})
}
