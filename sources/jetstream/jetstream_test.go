package jetstream_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...)
}

func setup(t testing.TB, cfg sjs.ProvisionConfig) (jetstream.JetStream, *sjs.Provisioned) {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{DataDir: t.TempDir(), LazySync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := sjs.Connect(context.Background(), sjs.ConnConfig{URL: srv.ClientURL(), User: embedded.User, Password: srv.Endpoint().Password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := sjs.Provision(context.Background(), js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Provisioning twice is harmless.
	if _, err := sjs.Provision(context.Background(), js, cfg); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	return js, p
}

func chunkMsg(id string) *nats.Msg {
	m := nats.NewMsg(schemas.ChunkSubject("dev"))
	m.Data = fmt.Appendf(nil, `{"chunk_id":%q,"content":"x"}`, id)
	m.Header.Set(nats.MsgIdHdr, "job/"+id)
	return m
}

func streamMsgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestPublishAtomicDeduplicatesARetriedBatch(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	batch := []*nats.Msg{chunkMsg("a"), chunkMsg("b"), chunkMsg("c")}
	if err := sjs.PublishAtomic(ctx, js, batch); err != nil {
		t.Fatal(err)
	}
	// The same batch again (a retry after a lost ack), plus one new message: the server
	// rejects the batch for its duplicate ids (10201), and the fallback stores only "d".
	again := []*nats.Msg{chunkMsg("a"), chunkMsg("b"), chunkMsg("c"), chunkMsg("d")}
	if err := sjs.PublishAtomic(ctx, js, again); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, p.Chunks); n != 4 {
		t.Fatalf("stream holds %d messages, want 4", n)
	}
}

func TestBatchWriterPublishesEverything(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	w := sjs.NewBatchWriter(context.Background(), js, sjs.BatchWriterConfig{BatchSize: 100, Concurrency: 3})
	for i := range 2500 {
		if err := w.Add(chunkMsg(fmt.Sprintf("c%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, p.Chunks); n != 2500 {
		t.Fatalf("stream holds %d messages, want 2500", n)
	}
}

func TestSubscriberBoundsInFlightAndMapsOutcomes(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{MaxDeliver: 5})
	ctx := context.Background()
	const n = 300
	w := sjs.NewBatchWriter(ctx, js, sjs.BatchWriterConfig{})
	for i := range n {
		_ = w.Add(chunkMsg(fmt.Sprintf("m%04d", i)))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sub, err := sjs.NewSubscriber(sjs.SubscriberConfig{Consumer: p.ChunkConsumer, MaxInFlight: 16, FetchBatch: 8})
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := sub.Subscribe(ctx, sjs.ConsumerChunks)
	if err != nil {
		t.Fatal(err)
	}
	rec := &outcomeRecorder{seen: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for m := range msgs {
			wg.Go(func() { rec.handle(m) })
		}
		wg.Wait()
	}()
	waitAllSettled(t, p.ChunkConsumer, n)
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	<-done
	if got := rec.maxInFlight.Load(); got > 16 {
		t.Fatalf("%d messages in flight at once, over the bound of 16", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := rec.seen
	if len(seen) != n {
		t.Fatalf("saw %d distinct messages, want %d", len(seen), n)
	}
	if seen["m0007"] != 2 {
		t.Fatalf("the retried message was delivered %d times, want 2", seen["m0007"])
	}
	if seen["m0009"] != 1 {
		t.Fatalf("the terminated message was delivered %d times, want 1", seen["m0009"])
	}
}

// outcomeRecorder handles the messages of TestSubscriberBoundsInFlightAndMapsOutcomes,
// concurrently: it counts the deliveries of each chunk id and the most messages handled at
// once, asks for m0007 to be retried once and terminates m0009.
type outcomeRecorder struct {
	inFlight, maxInFlight atomic.Int64
	mu                    sync.Mutex
	seen                  map[string]int // guarded by mu
}

func (r *outcomeRecorder) handle(m *message.Message) {
	cur := r.inFlight.Add(1)
	for {
		old := r.maxInFlight.Load()
		if cur <= old || r.maxInFlight.CompareAndSwap(old, cur) {
			break
		}
	}
	time.Sleep(time.Millisecond)
	r.mu.Lock()
	r.seen[seenKey(m)]++
	first := r.seen[seenKey(m)] == 1
	r.mu.Unlock()
	r.inFlight.Add(-1)
	switch {
	case first && seenKey(m) == "m0007":
		sjs.SetRetry(m, 10*time.Millisecond)
		m.Ack()
	case seenKey(m) == "m0009":
		sjs.SetTerm(m, "test terminates it")
		m.Ack()
	default:
		m.Ack()
	}
}

// waitAllSettled waits up to 30 s for consumer c to have settled all n messages of its stream.
func waitAllSettled(t *testing.T, c jetstream.Consumer, n uint64) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream == n && info.NumAckPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all settled: %+v", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seenKey extracts the chunk id from a test payload.
func seenKey(m *message.Message) string {
	s := string(m.Payload)
	const pre = `{"chunk_id":"`
	if len(s) < len(pre)+5 {
		return ""
	}
	return s[len(pre) : len(pre)+5]
}

func TestReclaimPurgesAckedMessages(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	if err := sjs.PublishAtomic(ctx, js, []*nats.Msg{chunkMsg("r1"), chunkMsg("r2"), chunkMsg("r3")}); err != nil {
		t.Fatal(err)
	}
	batch, err := p.ChunkConsumer.Fetch(2, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	removed, err := sjs.Reclaim(ctx, js, p.Chunks, sjs.ConsumerChunks)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 2 || streamMsgs(t, p.Chunks) != 1 {
		t.Fatalf("removed %d, stream holds %d; want 2 removed and the unacked one kept", removed, streamMsgs(t, p.Chunks))
	}
}
