package dlq_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/schemas"
)

// Capture of the broker's advisories: messages naked past MaxDeliver or terminated by a
// consumer other than the worker become dead letters.

// naker creates a consumer on the chunk stream whose deliveries the test settles by hand.
func naker(t *testing.T, e *testEnv, name, subject string, maxDeliver int) jetstream.Consumer {
	t.Helper()
	c, err := e.streams.Chunks.CreateOrUpdateConsumer(context.Background(), jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: maxDeliver,
		FilterSubject: subject, AckWait: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fetchOne(t *testing.T, c jetstream.Consumer) jetstream.Msg {
	t.Helper()
	b, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range b.Messages() {
		return m
	}
	t.Fatalf("no message delivered: %v", b.Error())
	return nil
}

// TestCaptureAdvisories: the capture turns the broker's advisories into dead letters — a
// message a consumer naked until MaxDeliver ("exhausted") and one a consumer terminated itself
// ("transient") — and never writes a second dead letter for a message the worker dead-lettered
// and then terminated. The scenarios run in this order: the terminated one is the barrier that
// shows the worker's earlier advisory was handled.
func TestCaptureAdvisories(t *testing.T) {
	e := newEnv(t)
	captured := runCapture(t, e)

	// A message the worker dead-letters (and then terminates): its terminated advisory must
	// not create a second dead letter.
	sink := newFaultySink(e.store, "adv_0001")
	e.startWorker(t, sink)
	job := e.load(t, writeChunks(t, e.dir, 2, "adv_%04d"))
	workerEntry := e.waitEntries(t, dlq.Filter{Job: job.JobID}, 1)[0]

	n, id := captureExhausted(t, e)
	id2 := captureTerminated(t, e, n)

	// The worker's dead letter is still the only one for its message.
	if ents := e.all(t, e.dlq, dlq.Filter{Job: job.JobID}); len(ents) != 1 || ents[0].Seq != workerEntry.Seq {
		t.Fatalf("worker's message has entries %+v", ents)
	}
	captured.mu.Lock()
	defer captured.mu.Unlock()
	var capturedIDs []string
	for _, c := range captured.envs {
		capturedIDs = append(capturedIDs, c.ID)
		if c.ID == workerEntry.Envelope.ID {
			t.Fatalf("capture wrote a second dead letter for %s", c.ID)
		}
	}
	if len(captured.envs) != 2 {
		t.Fatalf("captured %v, want %s and %s", capturedIDs, id, id2)
	}
}

// capturedEnvelopes is what a capture's callback was given; mu guards envs.
type capturedEnvelopes struct {
	mu   sync.Mutex
	envs []schemas.DeadLetterEnvelope
}

// runCapture subscribes to e's advisories and runs the capture until the test ends (when it
// checks that Run returned no error), recording each envelope captured.
func runCapture(t *testing.T, e *testEnv) *capturedEnvelopes {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	captured := &capturedEnvelopes{}
	c, err := e.dlq.SubscribeAdvisories(ctx, func(_ context.Context, p dlq.CaptureParams) error {
		captured.mu.Lock()
		captured.envs = append(captured.envs, p.Envelope)
		captured.mu.Unlock()
		return nil
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return captured
}

// publishTraced publishes body on subject with a traceparent header and returns its stream
// sequence.
func publishTraced(t *testing.T, e *testEnv, subject, body string) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(body)
	m.Header.Set(schemas.HeaderTraceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	ack, err := e.js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// captureExhausted publishes a message that a consumer of its own ("naker", MaxDeliver 2)
// naks until the limit, and checks it is captured as "exhausted" with its payload, attempts,
// trace and place in the stream. It returns the naker and the dead letter's id.
func captureExhausted(t *testing.T, e *testEnv) (jetstream.Consumer, string) {
	t.Helper()
	// The worker's consumer sees these too and simply writes them; a consumer of our own
	// naks them.
	seq := publishTraced(t, e, "sluice.v1.chunks.test", `{"chunk_id":"adv_nak","content":"x"}`)
	n := naker(t, e, "naker", "sluice.v1.chunks.test", 2)
	for range 2 {
		if err := fetchOne(t, n).Nak(); err != nil {
			t.Fatal(err)
		}
	}
	id := schemas.StreamChunks + "-" + strconv.FormatUint(seq, 10)
	var got dlq.Entry
	waitFor(t, "captured max-deliveries dead letter", func() bool {
		// Ask for a redelivery so the server notices the limit.
		if b, err := n.FetchNoWait(1); err == nil {
			for m := range b.Messages() {
				_ = m.Nak()
			}
		}
		ents := e.all(t, e.dlq, dlq.Filter{Subject: "sluice.v1.chunks.test", ErrorClass: "exhausted"})
		for _, en := range ents {
			if en.Envelope.ID == id {
				got = en
				return true
			}
		}
		return false
	})
	env := got.Envelope
	if env.Consumer != "naker" || env.Attempts != 2 || string(env.Payload) != `{"chunk_id":"adv_nak","content":"x"}` ||
		env.StreamSeq != seq || env.TraceID != "0af7651916cd43dd8448eb211c80319c" || env.Subject != "sluice.v1.chunks.test" {
		t.Fatalf("captured envelope = %+v", env)
	}
	if err := schemasValidate(env); err != nil {
		t.Fatalf("captured envelope breaks its schema: %v", err)
	}
	return n, id
}

// captureTerminated publishes a message that the consumer n terminates itself, and checks it
// is captured as "transient" with the reason; it returns the dead letter's id. It also serves
// as a barrier: advisories are handled in order, so once it is captured every earlier
// advisory was handled too.
func captureTerminated(t *testing.T, e *testEnv, n jetstream.Consumer) string {
	t.Helper()
	ctx := context.Background()
	seq2 := publishTraced(t, e, "sluice.v1.chunks.test", `{"chunk_id":"adv_term","content":"y"}`)
	m := fetchOne(t, n)
	if md, _ := m.Metadata(); md.Sequence.Stream != seq2 {
		t.Fatalf("naker got seq %d, want %d", md.Sequence.Stream, seq2)
	}
	if err := m.TermWithReason("bad input"); err != nil {
		t.Fatal(err)
	}
	id2 := schemas.StreamChunks + "-" + strconv.FormatUint(seq2, 10)
	waitFor(t, "captured terminated dead letter", func() bool {
		_, err := e.dlq.Get(ctx, id2)
		return err == nil
	})
	term, _ := e.dlq.Get(ctx, id2)
	if term.Envelope.Error.Class != "transient" || !contains(term.Envelope.Error.Message, "bad input") {
		t.Fatalf("terminated envelope = %+v", term.Envelope)
	}
	return id2
}

// Advisories sent while no capture runs wait in the advisory stream and become dead letters
// once one runs; handled advisories leave the stream.
func TestCaptureAdvisoriesSentWhileNothingRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.dlq.SubscribeAdvisories(ctx, nil); err != nil { // provisions, never runs
		t.Fatal(err)
	}
	m := nats.NewMsg("sluice.v1.chunks.test")
	m.Data = []byte(`{"chunk_id":"adv_late","content":"z"}`)
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	n := naker(t, e, "naker", "sluice.v1.chunks.test", 1)
	if err := fetchOne(t, n).Nak(); err != nil {
		t.Fatal(err)
	}
	advisories, err := e.js.Stream(ctx, dlq.AdvisoryStream)
	if err != nil {
		t.Fatal(err)
	}
	held := func() uint64 {
		info, err := advisories.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	waitFor(t, "the max-deliveries advisory kept in the stream", func() bool {
		if b, err := n.FetchNoWait(1); err == nil { // let the server notice the limit
			for m := range b.Messages() {
				_ = m.Nak()
			}
		}
		return held() == 1
	})
	id := schemas.StreamChunks + "-" + strconv.FormatUint(ack.Sequence, 10)
	if _, err := e.dlq.Get(ctx, id); err == nil {
		t.Fatal("a dead letter exists before any capture ran")
	}

	runCtx, cancel := context.WithCancel(ctx)
	var captured atomic.Int64
	c, err := e.dlq.SubscribeAdvisories(runCtx, func(context.Context, dlq.CaptureParams) error {
		captured.Add(1)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	waitFor(t, "the late advisory captured", func() bool {
		_, err := e.dlq.Get(ctx, id)
		return err == nil
	})
	waitFor(t, "the handled advisory removed from the stream", func() bool { return held() == 0 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, _ := e.dlq.Get(ctx, id)
	if got.Envelope.Error.Class != "exhausted" || string(got.Envelope.Payload) != `{"chunk_id":"adv_late","content":"z"}` || captured.Load() != 1 {
		t.Fatalf("captured %d, envelope %+v", captured.Load(), got.Envelope)
	}
}
