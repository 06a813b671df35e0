package docstore

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sinks/document"
)

// BenchmarkWriteDocs measures group-committed writes of new ~1.5 KB chunk documents, one
// synced transaction per WriteDocs call.
func BenchmarkWriteDocs(b *testing.B) {
	content, err := json.Marshal(strings.Repeat("A creature that is blinded can’t see and automatically fails any ability check. ", 16))
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			s, err := Open(b.Context(), Config{Path: filepath.Join(b.TempDir(), "bench.db")})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = s.Close() })
			docs := make([]document.Doc, size)
			next := 0
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				for i := range docs {
					id := fmt.Sprintf("job_1757237159_c8623a8fec21_c_1_%08d", next)
					next++
					docs[i] = document.Doc{ID: id, Version: uint64(next), Body: fmt.Appendf(nil,
						`{"_id":%q,"chunk_id":%q,"content":%s,"metadata":{"page":12,"section":"Conditions","element_type":"CompositeElement"},"stage":"raw"}`,
						id, id, content)}
				}
				b.StartTimer()
				outcomes, err := s.WriteDocs(b.Context(), "chunks", docs)
				if err != nil {
					b.Fatal(err)
				}
				for _, o := range outcomes {
					if o != nil {
						b.Fatal(o)
					}
				}
			}
			b.ReportMetric(float64(next)/b.Elapsed().Seconds(), "docs/s")
		})
	}
}
