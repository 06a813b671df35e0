package jetstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// streamOrder reads every message of the chunk stream in stream order and returns the
// chunk_id of each.
func streamOrder(t *testing.T, s jetstream.Stream) []string {
	t.Helper()
	ctx := context.Background()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		var rec struct {
			ChunkID string `json:"chunk_id"`
		}
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, rec.ChunkID)
	}
	return ids
}

func wantInOrder(t *testing.T, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("stream holds %d messages, want %d", len(got), n)
	}
	for i, id := range got {
		if want := fmt.Sprintf("c%05d", i); id != want {
			t.Fatalf("stream position %d holds %s, want %s: the writer reordered batches", i, id, want)
		}
	}
}

// Issue 11, findings 1 and 2: the BatchWriter published up to four atomic batches at once and
// the stream stored them in whatever order they committed (seq 1 held the upload's last item),
// so graph edges arrived before their nodes and "the later item wins" did not hold. Batches
// of uneven size (some close early on BatchBytes) make the commits race.
func TestBatchWriterKeepsAddOrderAcrossConcurrentBatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		cfg  sjs.BatchWriterConfig
	}{
		{"small batches, 8 in flight", 3000, sjs.BatchWriterConfig{BatchSize: 7, Concurrency: 8}},
		{"defaults", 3000, sjs.BatchWriterConfig{}},
		{"byte-cut batches", 3000, sjs.BatchWriterConfig{BatchSize: 400, BatchBytes: 20 << 10, Concurrency: 4}},
		{"one in flight", 3000, sjs.BatchWriterConfig{BatchSize: 50, Concurrency: 1}},
		{"one message a batch", 300, sjs.BatchWriterConfig{BatchSize: 1, Concurrency: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			js, p := setup(t, sjs.ProvisionConfig{})
			w := sjs.NewBatchWriter(context.Background(), js, tc.cfg)
			n := tc.n
			for i := range n {
				m := chunkMsg(fmt.Sprintf("c%05d", i))
				if i%3 == 0 {
					// Uneven payloads: some batches are cut by bytes, and sizes differ.
					m.Data = fmt.Appendf(nil, `{"chunk_id":"c%05d","content":%q}`, i, strings.Repeat("x", 2000))
				}
				if err := w.Add(m); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			wantInOrder(t, streamOrder(t, p.Chunks), n)
		})
	}
}

// A job resumed after an interrupted publish sends messages the stream already holds: the
// batches holding them are refused (10201) and published one by one, still in order, each
// message stored once.
func TestBatchWriterResumedPublishStoresEachOnceInOrder(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	const n, stored = 1000, 330
	w := sjs.NewBatchWriter(ctx, js, sjs.BatchWriterConfig{BatchSize: 100})
	for i := range stored {
		if err := w.Add(chunkMsg(fmt.Sprintf("c%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = sjs.NewBatchWriter(ctx, js, sjs.BatchWriterConfig{BatchSize: 100, Concurrency: 4})
	for i := range n {
		if err := w.Add(chunkMsg(fmt.Sprintf("c%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wantInOrder(t, streamOrder(t, p.Chunks), n)
}

// A batch the server refuses stops the writer: no batch after it commits (that would leave a
// gap in the order), the batches before it stay stored, and Close reports the refusal.
func TestBatchWriterStopsAtAFailedBatch(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	w := sjs.NewBatchWriter(context.Background(), js, sjs.BatchWriterConfig{BatchSize: 10, Concurrency: 4})
	var addErr error
	for i := range 200 {
		m := chunkMsg(fmt.Sprintf("c%05d", i))
		if i == 55 {
			// No stream stores this subject: the sixth batch cannot commit.
			m.Subject = "sluice.v1.nowhere"
		}
		if addErr = w.Add(m); addErr != nil {
			break
		}
	}
	err := w.Close()
	if err == nil {
		t.Fatal("Close returned nil after a batch was refused")
	}
	got := streamOrder(t, p.Chunks)
	if len(got) != 50 {
		t.Fatalf("stream holds %d messages after batch 6 failed, want the 50 of batches 1–5", len(got))
	}
	wantInOrder(t, got, 50)
}
