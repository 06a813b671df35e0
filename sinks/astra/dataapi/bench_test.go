package dataapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/document"
)

const (
	// benchChunks is the number of chunks each benchmark iteration loads.
	benchChunks = 2000
	// benchLatency is the double's latency per request, about a round trip to Astra.
	benchLatency = 20 * time.Millisecond
	passCFixture = "../../../testdata/chunks/job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl"
)

// benchDocs builds n Pass C–sized chunk documents with document.NewBuilder, cycling through
// the Pass C fixture's records with fresh chunk ids.
func benchDocs(tb testing.TB, n int) []document.Doc {
	tb.Helper()
	f, err := os.Open(filepath.FromSlash(passCFixture))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]json.RawMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			tb.Fatal(err)
		}
		lines = append(lines, rec)
	}
	if err := sc.Err(); err != nil || len(lines) == 0 {
		tb.Fatalf("read %s: %d records, %v", passCFixture, len(lines), err)
	}
	b, err := document.NewBuilder(document.Config{Env: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	docs := make([]document.Doc, 0, n)
	for i := range n {
		rec := lines[i%len(lines)]
		rec["chunk_id"] = json.RawMessage(fmt.Sprintf(`"bench_c_%05d"`, i))
		raw, err := json.Marshal(rec)
		if err != nil {
			tb.Fatal(err)
		}
		built, err := b.Build(raw, document.Meta{Version: 1, Job: "bench"})
		if err != nil {
			tb.Fatal(err)
		}
		docs = append(docs, built[0])
	}
	return docs
}

// benchSetup starts a double with benchLatency per request and a client of it, creates
// collection "bench" and returns the client and the documents.
func benchSetup(b *testing.B) (*dataapitest.Server, *Client, []document.Doc) {
	srv := dataapitest.Start(b, dataapitest.Config{})
	c := newDoubleClient(b, srv)
	if err := c.CreateCollection(b.Context(), "bench", CollectionOptions{IndexingDeny: []string{"embedding"}}); err != nil {
		b.Fatal(err)
	}
	srv.SetLatency(benchLatency, 0)
	return srv, c, benchDocs(b, benchChunks)
}

// truncate empties the bench collection with the timer stopped.
func truncate(b *testing.B, c *Client) {
	b.StopTimer()
	defer b.StartTimer()
	if _, err := c.DeleteMany(b.Context(), "bench", nil); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSeedSequentialInsertOne is the Python seed's loader: one findOneAndReplace
// upsert per chunk, one after another, so every chunk waits a full round trip.
func BenchmarkSeedSequentialInsertOne(b *testing.B) {
	_, c, docs := benchSetup(b)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		truncate(b, c)
		for _, d := range docs {
			if _, err := c.FindOneAndReplace(b.Context(), "bench", map[string]any{"_id": d.ID}, d.Body, true); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.N*len(docs))/b.Elapsed().Seconds(), "docs/s")
}

// BenchmarkBulkLoaderAstrapy is a direct bulk loader as astrapy's insert_many does it:
// unordered insertMany of 50 documents, 20 requests at a time, no broker.
func BenchmarkBulkLoaderAstrapy(b *testing.B) {
	const chunk, concurrency = 50, 20
	_, c, docs := benchSetup(b)
	bodies := make([]json.RawMessage, len(docs))
	for i, d := range docs {
		bodies[i] = d.Body
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		truncate(b, c)
		next := make(chan []json.RawMessage)
		errs := make(chan error, concurrency)
		var wg sync.WaitGroup
		for range concurrency {
			wg.Go(func() {
				for part := range next {
					out, err := c.InsertMany(b.Context(), "bench", part)
					if err == nil {
						for _, o := range out {
							if o != nil {
								err = o
								break
							}
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for start := 0; start < len(bodies); start += chunk {
			next <- bodies[start:min(start+chunk, len(bodies))]
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(docs))/b.Elapsed().Seconds(), "docs/s")
}
