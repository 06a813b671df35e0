package pipeline_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/bench"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// astraSink returns a Sluice Astra sink on a fresh strict Data API double.
func astraSink(t testing.TB, mod func(*dataapi.Config)) (*dataapitest.Server, *astra.Sink, *dataapi.Client) {
	t.Helper()
	srv := dataapitest.New(dataapitest.Config{MaxCollections: 10})
	t.Cleanup(srv.Close)
	cfg := dataapi.Config{Endpoint: srv.URL(), Token: secret.String(srv.Token()), BaseBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := dataapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := astra.NewSink(astra.SinkConfig{Client: c})
	if err != nil {
		t.Fatal(err)
	}
	return srv, s, c
}

func TestAstraEveryFixtureLands(t *testing.T) {
	e := newEnv(t, envOpts{})
	srv, sink, _ := astraSink(t, nil)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
	for _, f := range []string{
		"job_1757237159_c8623a8fec21_pass_c_raw_chunks.jsonl",
		"job_1757237159_c8623a8fec21_items.json",
		"job_1757237159_c8623a8fec21_pass_d_vectors.jsonl",
		"job_1757237159_c8623a8fec21_vectorized_chunks.json",
		"job_1757237159_c8623a8fec21_pass_a_chunks.json",
		"job_1757237159_c8623a8fec21_pass_b_enriched.json",
		"passA_chunks.json", "passB_enriched.json",
		"nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json",
	} {
		_, job := e.load(t, filepath.Join(fixtures, f), false)
		if job.DeadLettered != 0 || job.Written != job.Published {
			t.Fatalf("%s: %+v", f, job)
		}
	}
	docs := srv.Documents("default_keyspace", "ttrpg_chunks_dev")
	// Same total as on the embedded store: 820 from the normal files, plus the nasty file's
	// 30 normal ids, 3 whole adversarial items and the 52 + 24 parts of its two split items.
	if len(docs) != 820+30+3+52+24 {
		t.Fatalf("Astra holds %d documents, want %d", len(docs), 820+30+3+52+24)
	}
	for id, raw := range docs {
		var d map[string]any
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(id, d["chunk_id"].(string)) {
			t.Fatalf("document %s belongs to chunk %v", id, d["chunk_id"])
		}
	}
	st := srv.Stats()
	if len(st.Violations) != 0 {
		t.Fatalf("protocol violations: %v", st.Violations)
	}
	if st.MaxConcurrent > 20 {
		t.Fatalf("%d concurrent requests, over the pool of 20", st.MaxConcurrent)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}

func TestAstraFaultsLoseNothing(t *testing.T) {
	e := newEnv(t, envOpts{})
	srv, sink, _ := astraSink(t, nil)
	srv.SetCommandFilter("insertMany", "find", "findOneAndReplace")
	srv.SetFaultRate(0.2, dataapitest.FaultHTTP503, dataapitest.FaultLostResponse)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
	_, job := e.load(t, writeChunks(t, t.TempDir(), 2000, "fault_%05d"), false)
	if job.State != jobs.JobCompleted || job.Written != 2000 || job.DeadLettered != 0 {
		t.Fatalf("job = %+v", job)
	}
	docs := srv.Documents("default_keyspace", "ttrpg_chunks_dev")
	if len(docs) != 2000 {
		t.Fatalf("Astra holds %d documents, want 2000", len(docs))
	}
	st := srv.Stats()
	if st.Faults[dataapitest.FaultHTTP503] == 0 || st.Faults[dataapitest.FaultLostResponse] == 0 {
		t.Fatalf("no faults injected: %v", st.Faults)
	}
	if len(st.Violations) != 0 || st.MaxConcurrent > 20 {
		t.Fatalf("violations %v, max concurrent %d", st.Violations, st.MaxConcurrent)
	}
	if dl := e.deadLetters(t); len(dl) != 0 {
		t.Fatalf("dead letters: %v", dl)
	}
}

func TestAstraPersistentUnauthorizedDeadLetters(t *testing.T) {
	e := newEnv(t, envOpts{})
	srv, sink, _ := astraSink(t, nil)
	srv.InjectNext(1_000_000, dataapitest.FaultUnauthorized)
	e.startWorker(t, sink, func(c *pipeline.WorkerConfig) { c.SinkName = "astra" })
	_, job := e.load(t, writeChunks(t, t.TempDir(), 3, "auth_%04d"), false)
	if job.State != jobs.JobCompletedWithErrors || job.DeadLettered != 3 {
		t.Fatalf("job = %+v", job)
	}
	dl := e.deadLetters(t)
	if len(dl) != 3 {
		t.Fatalf("%d dead letters, want 3", len(dl))
	}
	for _, d := range dl {
		eo := d["error"].(map[string]any)
		if eo["class"] != "auth" || eo["sink"] != "astra" || d["attempts"].(float64) != 1 {
			t.Fatalf("dead letter = %v", d)
		}
		if strings.Contains(eo["message"].(string), srv.Token()) {
			t.Fatal("the token leaked into a dead letter")
		}
	}
}

// BenchmarkAstraLoad compares, against the same strict Data API double answering each request
// after 20 ms, one op per chunk, each mode starting from the chunk file on disk (pipeline/bench
// has the scenario; `sluice bench astra` runs the same):
//   - seed: the Python system today, one findOneAndReplace(upsert) per chunk, in sequence;
//   - astrapy: a direct bulk loader as astrapy does it (insertMany of 50, 20 concurrent), no broker;
//   - sluice: Sluice end to end: file -> JetStream (sync always) -> workers -> group commit -> Astra -> ack;
//   - jetstream: the floor, the records published durably to JetStream and nothing else.
func BenchmarkAstraLoad(b *testing.B) {
	for _, mode := range []string{bench.ModeSeed, bench.ModeAstrapy, bench.ModeSluice, bench.ModeJetStream} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			a, err := bench.NewAstra(ctx, bench.AstraConfig{Modes: []string{mode}, Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() {
				if err := a.Close(); err != nil {
					b.Error(err)
				}
			})
			b.ResetTimer()
			res, err := a.Run(ctx, mode, b.N)
			b.StopTimer()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.DocsPerSec, "docs/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
