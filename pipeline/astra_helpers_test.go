package pipeline_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/document"
)

func newBuilder(env string) (*document.Builder, error) {
	return document.NewBuilder(document.Config{Env: env})
}

// buildFile builds the documents of a JSONL chunk file, as the seed and astrapy loaders would
// send them.
func buildFile(t testing.TB, b *document.Builder, path string) []document.Doc {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []document.Doc
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		docs, err := b.Build(append([]byte(nil), sc.Bytes()...), document.Meta{Version: 1})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, docs...)
	}
	return out
}

// bulkInsert is astrapy's insert_many: chunks of size, concurrency at once, no retries.
func bulkInsert(t testing.TB, c *astra.Client, docs []document.Doc, size, concurrency int) {
	t.Helper()
	parts := make(chan []document.Doc)
	var wg sync.WaitGroup
	errs := make(chan error, concurrency)
	for range concurrency {
		wg.Go(func() {
			for p := range parts {
				bodies := make([]json.RawMessage, len(p))
				for i, d := range p {
					bodies[i] = d.Body
				}
				out, err := c.InsertMany(context.Background(), "ttrpg_chunks_dev", bodies)
				if err == nil {
					for _, o := range out {
						if o != nil {
							err = o
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
	for i := 0; i < len(docs); i += size {
		parts <- docs[i:min(i+size, len(docs))]
	}
	close(parts)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
