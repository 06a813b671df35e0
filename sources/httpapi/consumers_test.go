package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// consumersAnswer is GET /v1/consumers as a client decodes it.
type consumersAnswer struct {
	ReadAt    *time.Time            `json:"read_at"`
	Streams   []httpapi.StreamStat  `json:"streams"`
	Consumers []httpapi.ConsumerLag `json:"consumers"`
}

// Issue 18: the console's lag page reads streams and consumer lag from the statistics cached
// for /metrics. Messages published to a real broker and held by a real consumer show up as
// pending, ack pending and redelivered after the next refresh, and not before.
func TestConsumersFromARealBroker(t *testing.T) {
	ctx := context.Background()
	_, nc, js := embeddedtest.Start(t, embedded.Config{LazySync: true})
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := sjs.NewBrokerStats(sjs.BrokerStatsConfig{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	h := newServer(t, httpapi.Config{Tokens: testTokens(), Broker: httpapi.BrokerStatsReader(stats)}).Handler()
	get := func(t *testing.T) consumersAnswer {
		t.Helper()
		rec := serve(t, h, "GET", "/v1/consumers", readTok, nil, nil)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /v1/consumers = %d %s", rec.Code, rec.Body)
		}
		if err := doc.Check("GET /v1/consumers", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
			t.Error(err)
		}
		var a consumersAnswer
		if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
			t.Fatalf("decode %s: %v", rec.Body, err)
		}
		return a
	}

	// Before the first refresh: read_at null, empty arrays (never null).
	rec := serve(t, h, "GET", "/v1/consumers", readTok, nil, nil)
	if body := strings.TrimSpace(rec.Body.String()); rec.Code != http.StatusOK || body != `{"read_at":null,"streams":[],"consumers":[]}` {
		t.Fatalf("GET /v1/consumers before a refresh = %d %s", rec.Code, body)
	}

	for range 5 {
		if _, err := js.Publish(ctx, "sluice.v1.chunks.dev", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Two delivered and held; one of them refused and delivered again: 3 pending, 2 ack
	// pending, 1 redelivered.
	first := fetchHeld(t, streams.ChunkConsumer, 2)
	if err := first[0].Nak(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // the server has the refusal before the next pull
		t.Fatal(err)
	}
	again := fetchHeld(t, streams.ChunkConsumer, 1)
	if md, err := again[0].Metadata(); err != nil || md.NumDelivered != 2 {
		t.Fatalf("the refused message was not delivered again: %+v %v", md, err)
	}

	if a := get(t); a.ReadAt != nil || len(a.Consumers) != 0 {
		t.Fatalf("answer before a refresh = %+v, want the empty reading (it is cached)", a)
	}
	before := time.Now()
	if err := stats.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	a := get(t)
	if a.ReadAt == nil || a.ReadAt.Before(before.Add(-time.Second)) || a.ReadAt.Location() != time.UTC {
		t.Errorf("read_at = %v, want the refresh's time in UTC", a.ReadAt)
	}
	var lag *httpapi.ConsumerLag
	for i, c := range a.Consumers {
		if c.Stream == schemas.StreamChunks && c.Consumer == sjs.ConsumerChunks {
			lag = &a.Consumers[i]
		}
	}
	if lag == nil {
		t.Fatalf("consumers = %+v, want %s of %s", a.Consumers, sjs.ConsumerChunks, schemas.StreamChunks)
	}
	if lag.Pending != 3 || lag.AckPending != 2 || lag.Redelivered != 1 {
		t.Errorf("lag of %s = %+v, want pending 3, ack_pending 2, redelivered 1", sjs.ConsumerChunks, *lag)
	}
	var chunks *httpapi.StreamStat
	for i, s := range a.Streams {
		if s.Stream == schemas.StreamChunks {
			chunks = &a.Streams[i]
		}
	}
	if chunks == nil || chunks.Messages != 5 || chunks.Bytes == 0 || chunks.MaxBytes != 8<<30 {
		t.Errorf("stream %s = %+v, want 5 messages, bytes > 0, max_bytes 8 GiB", schemas.StreamChunks, chunks)
	}

	// Reads need a token, and any token will do.
	decodeProblem(t, serve(t, h, "GET", "/v1/consumers", "", nil, nil), http.StatusUnauthorized)
	if rec := serve(t, h, "GET", "/v1/consumers", adminTok, nil, nil); rec.Code != http.StatusOK {
		t.Errorf("GET /v1/consumers with an admin token = %d", rec.Code)
	}
}

// fetchHeld fetches n messages from c without acknowledging them.
func fetchHeld(t *testing.T, c jetstream.Consumer, n int) []jetstream.Msg {
	t.Helper()
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if len(msgs) != n {
		t.Fatalf("fetched %d messages, want %d (err %v)", len(msgs), n, batch.Error())
	}
	return msgs
}

func TestConsumersNotConfigured(t *testing.T) {
	h := newServer(t, httpapi.Config{Tokens: testTokens()}).Handler()
	rec := serve(t, h, "GET", "/v1/consumers", readTok, nil, nil)
	decodeProblem(t, rec, http.StatusNotImplemented)
	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Check("GET /v1/consumers", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes()); err != nil {
		t.Error(err)
	}
}
