package sinktest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sinks/sinktest"
)

var errMemNotFound = errors.New("memsink: not found")

// memSink is a minimal in-memory reference sink. The suite running green against it shows
// that the suite asks for nothing beyond the DocSink contract; the embedded store's test runs
// the suite against a real store.
type memSink struct {
	guard bool

	mu   sync.Mutex // guards docs
	docs map[string]memDoc
}

type memDoc struct {
	version uint64
	body    json.RawMessage
}

func (m *memSink) WriteDocs(ctx context.Context, coll string, docs []document.Doc) ([]error, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("memsink write: %w", err)
	}
	outcomes := make([]error, len(docs))
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, d := range docs {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(d.Body, &obj); err != nil || obj == nil {
			outcomes[i] = fault.Permanentf(fault.Rejected, "document %s: body is not a JSON object", d.ID)
			continue
		}
		key := coll + "\x00" + d.ID
		if old, ok := m.docs[key]; ok && m.guard && d.Version < old.version {
			continue
		}
		m.docs[key] = memDoc{version: d.Version, body: append(json.RawMessage(nil), d.Body...)}
	}
	return outcomes, nil
}

func (m *memSink) GetDoc(_ context.Context, coll, id string) (json.RawMessage, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.docs[coll+"\x00"+id]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", id, errMemNotFound)
	}
	return d.body, nil
}

func TestRunAgainstMemSink(t *testing.T) {
	tests := []struct {
		name  string
		guard bool
	}{
		{"with version guard", true},
		{"without version guard", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shared := &memSink{guard: tt.guard, docs: map[string]memDoc{}}
			sinktest.Run(t, sinktest.Features{
				NotFound:     errMemNotFound,
				MaxBatch:     250,
				VersionGuard: tt.guard,
			}, func(*testing.T) sinktest.Sink { return shared })
		})
	}
}
