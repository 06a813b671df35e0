package jetstream_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// BenchmarkBatchWriter publishes b.N chunk messages of ≈1.5 KB through a BatchWriter onto a
// broker that fsyncs every write, as the loader does, 4 batches in flight. "ordered-1000" is the
// writer's default (batches staged at once, committed in order, 1,000 messages each);
// "unordered-500" is the writer before issue 11 (each batch committed as soon as it was staged,
// 500 each); the other two separate the effect of ordering from that of the batch size. Run
// them in one go and compare msgs/s.
func BenchmarkBatchWriter(b *testing.B) {
	body := strings.Repeat("the quick brown fox jumps over the lazy dog ", 32)
	for _, mode := range []struct {
		name      string
		unordered bool
		size      int
	}{
		{"ordered-1000", false, 1000}, {"unordered-500", true, 500}, {"ordered-500", false, 500}, {"unordered-1000", true, 1000},
	} {
		b.Run(mode.name, func(b *testing.B) {
			_, _, js := embeddedtest.Start(b, embedded.Config{DataDir: b.TempDir()})
			p, err := sjs.Provision(context.Background(), js, sjs.ProvisionConfig{})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			w := sjs.NewBatchWriter(context.Background(), js, sjs.BatchWriterConfig{Unordered: mode.unordered, BatchSize: mode.size})
			for i := range b.N {
				m := chunkMsg(fmt.Sprintf("b%08d", i))
				m.Data = fmt.Appendf(nil, `{"chunk_id":"b%08d","content":%q}`, i, body)
				if err := w.Add(m); err != nil {
					b.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.StopTimer()
			if info, err := p.Chunks.Info(context.Background()); err != nil || info.State.Msgs != uint64(b.N) {
				b.Fatalf("stream holds %v messages (%v), want %d", info.State.Msgs, err, b.N)
			}
		})
	}
}
