package astra

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sinks/sinktest"
)

const ks = "default_keyspace"

// The sink is the pipeline's chunk sink and job rollback.
var (
	_ pipeline.DocSink       = (*Sink)(nil)
	_ pipeline.JobDocDeleter = (*Sink)(nil)
)

// testEnv is a double, a client of it whose logs go to logs, and a sink.
type testEnv struct {
	srv   *dataapitest.Server
	c     *dataapi.Client
	sink  *Sink
	logs  *bytes.Buffer
	token string
}

func newEnv(t testing.TB, srv *dataapitest.Server, mod func(*dataapi.Config), smod func(*SinkConfig)) *testEnv {
	t.Helper()
	logs := &bytes.Buffer{}
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := dataapi.Config{
		Endpoint: srv.URL(), Token: secret.String(srv.Token()), Logger: logger,
		BaseBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		RequestTimeout: 5 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := dataapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	scfg := SinkConfig{Client: c, Logger: logger}
	if smod != nil {
		smod(&scfg)
	}
	sink, err := NewSink(scfg)
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{srv: srv, c: c, sink: sink, logs: logs, token: srv.Token()}
	t.Cleanup(func() {
		if strings.Contains(logs.String(), env.token) {
			t.Errorf("logs contain the token")
		}
	})
	return env
}

// syncWriter serialises writes of concurrent log records into one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestSinkConformance(t *testing.T) {
	for _, vector := range []bool{false, true} {
		t.Run(fmt.Sprintf("vector=%v", vector), func(t *testing.T) {
			srv := dataapitest.Start(t, dataapitest.Config{})
			sinktest.Run(t, sinktest.Features{NotFound: dataapi.ErrNotFound, MaxBatch: 100, VersionGuard: true},
				func(t *testing.T) sinktest.Sink {
					// A fresh sink (and collection cache) per subtest, on one server.
					return newEnv(t, srv, nil, func(c *SinkConfig) { c.Vector = vector }).sink
				})
		})
	}
}

// chunkDoc builds a chunk-like document.
func chunkDoc(id string, version uint64, content string) document.Doc {
	body, err := json.Marshal(map[string]any{"_id": id, "chunk_id": id, "content": content,
		"metadata": map[string]any{"page": 1, "section": "Combat"}})
	if err != nil {
		panic(err)
	}
	return document.Doc{ID: id, Version: version, Body: body}
}

func chunkDocs(prefix string, n int, version uint64) []document.Doc {
	docs := make([]document.Doc, n)
	for i := range docs {
		docs[i] = chunkDoc(fmt.Sprintf("%s_%04d", prefix, i), version, fmt.Sprintf("content of %s %d", prefix, i))
	}
	return docs
}

// mustWrite writes docs and fails t unless every document succeeded.
func mustWrite(t *testing.T, sink *Sink, coll string, docs []document.Doc) {
	t.Helper()
	out, err := sink.WriteDocs(t.Context(), coll, docs)
	if err != nil {
		t.Fatalf("WriteDocs: %v", err)
	}
	for i, o := range out {
		if o != nil {
			t.Fatalf("document %d: %v", i, o)
		}
	}
}

// assertStoredExactly fails t unless the collection holds exactly docs (content and
// version), no more.
func assertStoredExactly(t *testing.T, srv *dataapitest.Server, coll string, docs []document.Doc) {
	t.Helper()
	stored := srv.Documents(ks, coll)
	want := map[string]document.Doc{}
	for _, d := range docs {
		want[d.ID] = d
	}
	if len(stored) != len(want) {
		t.Fatalf("collection %s holds %d documents, want %d", coll, len(stored), len(want))
	}
	for id, d := range want {
		got, ok := stored[id]
		if !ok {
			t.Fatalf("document %s missing", id)
		}
		var g, w struct {
			Content string  `json:"content"`
			Version *uint64 `json:"sluice_version"`
		}
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(d.Body, &w); err != nil {
			t.Fatal(err)
		}
		if g.Content != w.Content || g.Version == nil || *g.Version != d.Version {
			t.Fatalf("document %s = %s, want content %q version %d", id, got, w.Content, d.Version)
		}
	}
}

func TestSinkRetriesTransientFailures(t *testing.T) {
	tests := []struct {
		name  string
		fault dataapitest.Fault
		n     int
	}{
		{"429", dataapitest.FaultHTTP429, 2},
		{"503", dataapitest.FaultHTTP503, 2},
		{"504", dataapitest.FaultHTTP504, 1},
		{"retryable code", dataapitest.FaultRetryableCode, 2},
		{"timeout", dataapitest.FaultTimeout, 1},
		{"lost response", dataapitest.FaultLostResponse, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := dataapitest.Start(t, dataapitest.Config{})
			env := newEnv(t, srv, func(c *dataapi.Config) { c.RequestTimeout = 300 * time.Millisecond }, nil)
			docs := chunkDocs("r", 150, 1)
			srv.SetCommandFilter("insertMany")
			srv.InjectNext(tt.n, tt.fault)
			mustWrite(t, env.sink, "chunks", docs)
			assertStoredExactly(t, srv, "chunks", docs)
			st := srv.Stats()
			if st.Faults[tt.fault] != tt.n {
				t.Fatalf("double injected %d %s faults, want %d", st.Faults[tt.fault], tt.fault, tt.n)
			}
			if want := 2 + tt.n; st.Requests["insertMany"] != want {
				t.Fatalf("insertMany requests = %d, want %d (2 chunks + %d retries)", st.Requests["insertMany"], want, tt.n)
			}
			if st.Requests["findOneAndReplace"] != 0 {
				t.Fatalf("%d findOneAndReplace requests, want 0: nothing changed", st.Requests["findOneAndReplace"])
			}
		})
	}
}

func TestSinkTransientFailureExhausted(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	srv.SetCommandFilter("insertMany")
	srv.SetFaultRate(1, dataapitest.FaultHTTP503)
	out, err := env.sink.WriteDocs(t.Context(), "chunks", chunkDocs("x", 3, 1))
	if err == nil || fault.IsPermanent(err) {
		t.Fatalf("WriteDocs = %v, %v; want a transient whole-call error", out, err)
	}
	var he *dataapi.HTTPError
	if !errors.As(err, &he) || he.StatusCode != 503 {
		t.Fatalf("error %v does not wrap the HTTP 503", err)
	}
	if got := srv.Stats().Requests["insertMany"]; got != 3 {
		t.Fatalf("insertMany requests = %d, want MaxAttempts = 3", got)
	}
}

func TestSinkLostResponseResolved(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)

	t.Run("same content is success", func(t *testing.T) { lostSameContent(t, srv, env) })
	t.Run("changed content is replaced", func(t *testing.T) { lostChangedContent(t, srv, env) })
	t.Run("same version changed content replaces", func(t *testing.T) { sameVersionChangedContent(t, srv, env) })
	t.Run("foreign document without version is replaced", func(t *testing.T) { foreignDocReplaced(t, srv, env) })
}

func lostSameContent(t *testing.T, srv *dataapitest.Server, env *testEnv) {
	docs := chunkDocs("same", 10, 1)
	srv.ResetStats()
	srv.SetCommandFilter("insertMany")
	srv.InjectNext(1, dataapitest.FaultLostResponse)
	mustWrite(t, env.sink, "chunks", docs)
	assertStoredExactly(t, srv, "chunks", docs)
	st := srv.Stats()
	if st.Faults[dataapitest.FaultLostResponse] != 1 || st.Requests["insertMany"] != 2 {
		t.Fatalf("stats %+v: want one lost response and one retry", st)
	}
	if st.Requests["find"] == 0 || st.Requests["findOneAndReplace"] != 0 {
		t.Fatalf("stats %+v: want a read of the conflicts and no replace", st.Requests)
	}
}

func lostChangedContent(t *testing.T, srv *dataapitest.Server, env *testEnv) {
	old := chunkDocs("chg", 4, 1)
	mustWrite(t, env.sink, "chunks", old)
	// Re-ingest with changed text for two documents, a new version, and a response
	// lost on the way back.
	docs := chunkDocs("chg", 4, 2)
	docs[1] = chunkDoc(docs[1].ID, 2, "changed text one")
	docs[3] = chunkDoc(docs[3].ID, 2, "changed text three")
	srv.ResetStats()
	srv.SetCommandFilter("insertMany")
	srv.InjectNext(1, dataapitest.FaultLostResponse)
	mustWrite(t, env.sink, "chunks", docs)
	for _, d := range docs {
		got, err := env.sink.GetDoc(t.Context(), "chunks", d.ID)
		if err != nil {
			t.Fatal(err)
		}
		var g struct {
			Content string `json:"content"`
			V       uint64 `json:"sluice_version"`
		}
		var w struct {
			Content string `json:"content"`
		}
		_ = json.Unmarshal(got, &g)
		_ = json.Unmarshal(d.Body, &w)
		if g.Content != w.Content || g.V != 2 {
			t.Fatalf("%s = %s, want content %q version 2", d.ID, got, w.Content)
		}
	}
	// A higher version replaces every document, changed or not (docstore's rule).
	if got := srv.Stats().Requests["findOneAndReplace"]; got != 4 {
		t.Fatalf("findOneAndReplace requests = %d, want 4", got)
	}
}

func sameVersionChangedContent(t *testing.T, srv *dataapitest.Server, env *testEnv) {
	d := chunkDoc("samever", 5, "first")
	mustWrite(t, env.sink, "chunks", []document.Doc{d})
	d2 := chunkDoc("samever", 5, "second")
	srv.ResetStats()
	mustWrite(t, env.sink, "chunks", []document.Doc{d2})
	mustWrite(t, env.sink, "chunks", []document.Doc{d2}) // identical redelivery: no write
	if got := srv.Stats().Requests["findOneAndReplace"]; got != 1 {
		t.Fatalf("findOneAndReplace requests = %d, want 1", got)
	}
	got, _ := env.sink.GetDoc(t.Context(), "chunks", "samever")
	if !strings.Contains(string(got), `"second"`) {
		t.Fatalf("stored %s, want the second content", got)
	}
}

func foreignDocReplaced(t *testing.T, srv *dataapitest.Server, env *testEnv) {
	// A document written by another loader (the Python seed) has no sluice_version.
	if err := env.c.InsertOne(t.Context(), "chunks", json.RawMessage(`{"_id":"foreign","content":"seed"}`)); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, env.sink, "chunks", []document.Doc{chunkDoc("foreign", 1, "sluice")})
	got, _ := env.sink.GetDoc(t.Context(), "chunks", "foreign")
	if !strings.Contains(string(got), `"sluice"`) || !strings.Contains(string(got), `"sluice_version":1`) {
		t.Fatalf("stored %s, want the sluice document at version 1", got)
	}
}

func TestSinkUnauthorizedIsPermanentAuth(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	srv.SetFaultRate(1, dataapitest.FaultUnauthorized)
	out, err := env.sink.WriteDocs(t.Context(), "chunks", chunkDocs("auth", 5, 1))
	if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Auth {
		t.Fatalf("WriteDocs = %v, %v; want a permanent fault.Auth whole-call error", out, err)
	}
	if strings.Contains(err.Error(), env.token) {
		t.Fatal("error contains the token")
	}
	if st := srv.Stats(); st.Faults[dataapitest.FaultUnauthorized] != 1 {
		t.Fatalf("double answered %d requests with 401, want 1 (no retries)", st.Faults[dataapitest.FaultUnauthorized])
	}
	// Once the credentials work again, the write goes through: nothing was cached.
	srv.SetFaultRate(0)
	mustWrite(t, env.sink, "chunks", chunkDocs("auth", 5, 1))
}

func TestSinkWrongTokenIsPermanentAuth(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{}, "UNAUTHENTICATED_REQUEST") // a wrong token is a violation
	env := newEnv(t, srv, func(c *dataapi.Config) { c.Token = "AstraCS:wrong-token-xyz" }, nil)
	env.token = "AstraCS:wrong-token-xyz"
	_, err := env.sink.WriteDocs(t.Context(), "chunks", chunkDocs("auth", 1, 1))
	if err == nil || !fault.IsPermanent(err) || fault.ClassOf(err) != fault.Auth {
		t.Fatalf("WriteDocs error = %v; want permanent fault.Auth", err)
	}
	for _, tok := range []string{env.token, srv.Token()} {
		if strings.Contains(err.Error(), tok) {
			t.Fatalf("error %q contains a token", err)
		}
	}
}

func TestSinkPoolBound(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil) // MaxConns default 20
	if err := env.sink.EnsureCollection(t.Context(), "chunks"); err != nil {
		t.Fatal(err)
	}
	srv.SetLatency(5*time.Millisecond, 0)
	srv.ResetStats()
	const calls = 200
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	var all []document.Doc
	for i := range calls {
		docs := chunkDocs(fmt.Sprintf("pool%03d", i), 5, 1)
		all = append(all, docs...)
		wg.Go(func() {
			out, err := env.sink.WriteDocs(t.Context(), "chunks", docs)
			if err == nil {
				err = errors.Join(out...)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := srv.Stats()
	if st.MaxConcurrent > 20 {
		t.Fatalf("double saw %d concurrent requests, want at most MaxConns = 20", st.MaxConcurrent)
	}
	if st.MaxConcurrent < 10 {
		t.Fatalf("double saw at most %d concurrent requests: the pool was not used", st.MaxConcurrent)
	}
	if st.Requests["insertMany"] != calls {
		t.Fatalf("insertMany requests = %d, want %d", st.Requests["insertMany"], calls)
	}
	assertStoredExactly(t, srv, "chunks", all)
}

func TestTokenNeverLeaks(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, func(c *dataapi.Config) { c.RequestTimeout = 200 * time.Millisecond; c.MaxAttempts = 2 }, nil)
	var errs []error
	collect := func(out []error, err error) {
		errs = append(errs, err)
		errs = append(errs, out...)
	}
	for _, f := range []dataapitest.Fault{dataapitest.FaultHTTP503, dataapitest.FaultTimeout,
		dataapitest.FaultRetryableCode, dataapitest.FaultLostResponse, dataapitest.FaultUnauthorized, dataapitest.FaultHTTP429} {
		srv.SetFaultRate(1, f)
		collect(env.sink.WriteDocs(t.Context(), "chunks", chunkDocs("leak", 3, 1)))
		_, err := env.sink.GetDoc(t.Context(), "chunks", "leak_0000")
		errs = append(errs, err)
	}
	srv.SetFaultRate(0)
	collect(env.sink.WriteDocs(t.Context(), "chunks", []document.Doc{{ID: "bad", Body: json.RawMessage(`[1]`)}}))
	n := 0
	for _, err := range errs {
		if err == nil {
			continue
		}
		n++
		if strings.Contains(err.Error(), env.token) || strings.Contains(fmt.Sprintf("%+v %#v", err, err), env.token) {
			t.Fatalf("error contains the token: %v", err)
		}
	}
	if n < 6 {
		t.Fatalf("only %d errors produced; the test did not exercise the failure paths", n)
	}
	if !strings.Contains(env.logs.String(), "retrying") {
		t.Fatalf("no retry was logged; the test did not exercise logging:\n%s", env.logs)
	}
	if strings.Contains(env.logs.String(), env.token) {
		t.Fatal("logs contain the token")
	}
}

func TestSinkVectorCollection(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, func(c *SinkConfig) { c.Vector = true })
	emb := make([]float64, 1024)
	for i := range emb {
		emb[i] = float64(i%97) / 97.3
	}
	body, _ := json.Marshal(map[string]any{"_id": "v1", "content": "vector chunk", "embedding": emb})
	d := document.Doc{ID: "v1", Version: 1, Body: body}
	mustWrite(t, env.sink, "vec", []document.Doc{d})
	stored := srv.Documents(ks, "vec")["v1"]
	var got map[string]json.RawMessage
	if err := json.Unmarshal(stored, &got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["$vector"]; !ok {
		t.Fatalf("stored %s has no $vector", stored)
	}
	if _, ok := got["embedding"]; ok {
		t.Fatalf("stored document still has embedding")
	}
	// A redelivery with the same floats is recognised as the same content.
	srv.ResetStats()
	mustWrite(t, env.sink, "vec", []document.Doc{d})
	if n := srv.Stats().Requests["findOneAndReplace"]; n != 0 {
		t.Fatalf("identical redelivery replaced the document (%d findOneAndReplace)", n)
	}
	// A wrong dimension is rejected before sending.
	bad, _ := json.Marshal(map[string]any{"_id": "v2", "embedding": emb[:10]})
	out, err := env.sink.WriteDocs(t.Context(), "vec", []document.Doc{{ID: "v2", Version: 1, Body: bad}})
	if err != nil || out[0] == nil || !fault.IsPermanent(out[0]) {
		t.Fatalf("WriteDocs(short embedding) = %v, %v; want a permanent outcome", out, err)
	}
}

func TestSinkUnindexedEmbedding(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	emb := make([]float64, 1024)
	body, _ := json.Marshal(map[string]any{"_id": "e1", "content": "c", "embedding": emb})
	mustWrite(t, env.sink, "emb", []document.Doc{{ID: "e1", Version: 1, Body: body}})
	if _, ok := srv.Documents(ks, "emb")["e1"]; !ok {
		t.Fatal("document with a 1024-element embedding was not stored")
	}
}

func TestSinkPerDocumentRejection(t *testing.T) {
	// Limits raised past the server's so that the document reaches the server, which
	// rejects it for itself: that is the one expected violation.
	srv := dataapitest.Start(t, dataapitest.Config{}, "SHRED_DOC_LIMIT_VIOLATION")
	env := newEnv(t, srv, nil, func(c *SinkConfig) { c.Limits = document.Limits{MaxStringBytes: 100_000} })
	docs := chunkDocs("rej", 5, 1)
	docs[2] = chunkDoc(docs[2].ID, 1, strings.Repeat("long ", 2000)) // 10,000 bytes, indexed
	out, err := env.sink.WriteDocs(t.Context(), "chunks", docs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		switch {
		case i == 2 && (o == nil || !fault.IsPermanent(o) || fault.ClassOf(o) != fault.Limit):
			t.Fatalf("document 2: outcome %v, want a permanent fault.Limit", o)
		case i != 2 && o != nil:
			t.Fatalf("neighbour %d: %v", i, o)
		}
	}
	var ae *dataapi.APIError
	if !errors.As(out[2], &ae) || ae.Code != dataapi.CodeShredDocLimitViolation {
		t.Fatalf("outcome %v does not wrap the server's SHRED_DOC_LIMIT_VIOLATION", out[2])
	}
	if n := len(srv.Documents(ks, "chunks")); n != 4 {
		t.Fatalf("%d documents stored, want the 4 neighbours", n)
	}
}

func TestSinkLimitCheckedBeforeSending(t *testing.T) {
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	d := chunkDoc("big", 1, strings.Repeat("x", 9000))
	out, err := env.sink.WriteDocs(t.Context(), "chunks", []document.Doc{d})
	if err != nil || len(out) != 1 || fault.ClassOf(out[0]) != fault.Limit || !fault.IsPermanent(out[0]) {
		t.Fatalf("WriteDocs = %v, %v; want one permanent fault.Limit outcome", out, err)
	}
	var le *document.LimitError
	if !errors.As(out[0], &le) || le.Path != "content" {
		t.Fatalf("outcome %v does not name the field", out[0])
	}
	if n := srv.Stats().Requests["insertMany"]; n != 0 {
		t.Fatalf("%d insertMany requests, want none", n)
	}
}

func TestSinkCollectionCreation(t *testing.T) {
	t.Run("created once under concurrency", func(t *testing.T) {
		srv := dataapitest.Start(t, dataapitest.Config{})
		env := newEnv(t, srv, nil, nil)
		srv.SetLatency(5*time.Millisecond, 0)
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			wg.Go(func() {
				out, err := env.sink.WriteDocs(t.Context(), "once", chunkDocs(fmt.Sprint("c", i), 2, 1))
				if err == nil {
					err = errors.Join(out...)
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := srv.Stats().Requests["createCollection"]; n != 1 {
			t.Fatalf("createCollection requests = %d, want 1", n)
		}
	})

	t.Run("failure not cached", func(t *testing.T) {
		srv := dataapitest.Start(t, dataapitest.Config{})
		env := newEnv(t, srv, func(c *dataapi.Config) { c.MaxAttempts = 1 }, nil)
		srv.SetCommandFilter("createCollection")
		srv.InjectNext(1, dataapitest.FaultHTTP503)
		if _, err := env.sink.WriteDocs(t.Context(), "retry", chunkDocs("f", 1, 1)); err == nil || fault.IsPermanent(err) {
			t.Fatalf("WriteDocs error = %v, want transient", err)
		}
		mustWrite(t, env.sink, "retry", chunkDocs("f", 1, 1))
		if n := srv.Stats().Requests["createCollection"]; n != 2 {
			t.Fatalf("createCollection requests = %d, want 2", n)
		}
	})

	t.Run("dropped collection is created again", func(t *testing.T) {
		srv := dataapitest.Start(t, dataapitest.Config{}, "UNKNOWN_COLLECTION")
		env := newEnv(t, srv, nil, nil)
		mustWrite(t, env.sink, "gone", chunkDocs("g", 1, 1))
		if err := env.c.DeleteCollection(t.Context(), "gone"); err != nil {
			t.Fatal(err)
		}
		_, err := env.sink.WriteDocs(t.Context(), "gone", chunkDocs("g", 1, 1))
		if err == nil || fault.IsPermanent(err) {
			t.Fatalf("WriteDocs to a dropped collection = %v, want a transient error", err)
		}
		mustWrite(t, env.sink, "gone", chunkDocs("g", 1, 1))
	})

	t.Run("disabled", func(t *testing.T) {
		srv := dataapitest.Start(t, dataapitest.Config{}, "UNKNOWN_COLLECTION")
		env := newEnv(t, srv, nil, func(c *SinkConfig) { c.DisableCreate = true })
		_, err := env.sink.WriteDocs(t.Context(), "absent", chunkDocs("d", 1, 1))
		if err == nil || !fault.IsPermanent(err) {
			t.Fatalf("WriteDocs = %v, want a permanent error", err)
		}
		if n := srv.Stats().Requests["createCollection"]; n != 0 {
			t.Fatalf("createCollection requests = %d, want 0", n)
		}
	})

	t.Run("invalid name", func(t *testing.T) {
		srv := dataapitest.Start(t, dataapitest.Config{})
		env := newEnv(t, srv, nil, nil)
		_, err := env.sink.WriteDocs(t.Context(), "bad-name", chunkDocs("d", 1, 1))
		if err == nil || !fault.IsPermanent(err) {
			t.Fatalf("WriteDocs = %v, want a permanent error", err)
		}
	})
}

func TestSinkConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  SinkConfig
		want string
	}{
		{"no client", SinkConfig{}, "Client is required"},
		{"bad dimension", SinkConfig{Client: &dataapi.Client{}, VectorDimension: 5000}, "VectorDimension"},
		{"bad metric", SinkConfig{Client: &dataapi.Client{}, VectorMetric: "manhattan"}, "VectorMetric"},
		{"ok", SinkConfig{Client: &dataapi.Client{}}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestSinkUnderFaultRate(t *testing.T) {
	// One request in five fails: gateway 503s, retryable codes, and writes whose response
	// is lost. Every document must land exactly once with nothing permanent; a call that
	// still fails is retried as the pipeline would (a transient error, redelivered).
	srv := dataapitest.Start(t, dataapitest.Config{})
	env := newEnv(t, srv, nil, nil)
	srv.SetFaultRate(0.2, dataapitest.FaultHTTP503, dataapitest.FaultLostResponse, dataapitest.FaultRetryableCode)
	const writers, perWriter = 10, 100
	var all []document.Doc
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		docs := chunkDocs(fmt.Sprintf("fr%02d", w), perWriter, uint64(w+1))
		all = append(all, docs...)
		wg.Go(func() {
			pending := docs
			for attempt := 0; len(pending) > 0; attempt++ {
				if attempt == 20 {
					errs <- fmt.Errorf("writer %d: %d documents still failing after 20 deliveries", w, len(pending))
					return
				}
				out, err := env.sink.WriteDocs(t.Context(), "chunks", pending)
				if err != nil {
					if fault.IsPermanent(err) {
						errs <- fmt.Errorf("writer %d: permanent whole-call error: %w", w, err)
						return
					}
					continue
				}
				var again []document.Doc
				for i, o := range out {
					switch {
					case o == nil:
					case fault.IsPermanent(o):
						errs <- fmt.Errorf("writer %d: document %s dead-lettered: %w", w, pending[i].ID, o)
						return
					default:
						again = append(again, pending[i])
					}
				}
				pending = again
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	assertStoredExactly(t, srv, "chunks", all)
	st := srv.Stats()
	if st.Faults[dataapitest.FaultLostResponse] == 0 || st.Faults[dataapitest.FaultHTTP503] == 0 {
		t.Fatalf("faults injected %v: the test did not exercise them", st.Faults)
	}
}

func TestSinkIsolatesWholeRequestRejection(t *testing.T) {
	// A nested duplicate key passes the limit check but makes the server's parser reject
	// the whole insertMany. The sink halves the batch until the culprit stands alone, so its
	// neighbours are still written: the 5-, 3- and 1-document requests that held it are the
	// expected violations.
	srv := dataapitest.Start(t, dataapitest.Config{}, "REQUEST_NOT_JSON", "REQUEST_NOT_JSON", "REQUEST_NOT_JSON")
	env := newEnv(t, srv, nil, nil)
	docs := chunkDocs("iso", 5, 1)
	docs[2].Body = json.RawMessage(`{"_id":"iso_0002","content":"x","metadata":{"page":1,"page":2}}`)
	out, err := env.sink.WriteDocs(t.Context(), "chunks", docs)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		switch {
		case i == 2 && (o == nil || !fault.IsPermanent(o)):
			t.Fatalf("document 2: outcome %v, want permanent", o)
		case i != 2 && o != nil:
			t.Fatalf("neighbour %d: %v", i, o)
		}
	}
	assertStoredExactly(t, srv, "chunks", append(docs[:2:2], docs[3:]...))
}
