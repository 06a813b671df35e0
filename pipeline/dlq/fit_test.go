package dlq_test

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-dev/sluice/pipeline/instrument/instrumenttest"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/dlq"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// longCtx bounds a test's JetStream calls generously: without a deadline nats.go uses its 5 s
// default, which a megabyte object read can exceed on a loaded machine.
func longCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// wireHeaderBytes is what nats.go adds to a message for hdr ("NATS/1.0\r\n", "Key: value\r\n"
// per value, "\r\n"): with the data it must not exceed the max payload.
func wireHeaderBytes(hdr nats.Header) int {
	n := len("NATS/1.0\r\n") + 2
	for k, vs := range hdr {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n
}

// poison is an invalid-JSON chunk record of exactly n bytes: it opens a record and never
// closes its content string, so the worker dead-letters it at once (validation).
func poison(n int) []byte {
	const head = `{"chunk_id":"poison","content":"`
	b := []byte(head + strings.Repeat("a", max(n-len(head), 0)))
	return b[:n]
}

// publishRaw publishes data with hdr on subject and returns its stream sequence.
func publishRaw(t *testing.T, js jetstream.JetStream, subject string, hdr nats.Header, data []byte) uint64 {
	t.Helper()
	m := nats.NewMsg(subject)
	for k, v := range hdr {
		m.Header[k] = v
	}
	m.Data = data
	ack, err := js.PublishMsg(context.Background(), m)
	if err != nil {
		t.Fatalf("publish %d bytes: %v", len(data), err)
	}
	return ack.Sequence
}

func payloadObject(t *testing.T, js jetstream.JetStream, name string) (*jetstream.ObjectInfo, error) {
	t.Helper()
	obs, err := js.ObjectStore(context.Background(), schemas.BucketDLQPayloads)
	if err != nil {
		t.Fatal(err)
	}
	return obs.GetInfo(context.Background(), name)
}

// Regression (issue 11, finding 3): a 900 KB invalid-JSON chunk was accepted, its dead letter
// (payload in base64) exceeded 1 MiB, storing it failed, and after max deliveries the message
// was gone. Now every poison message up to the max payload is dead-lettered, its payload comes
// back byte for byte, and replay republishes the original bytes.
func TestOversizedPoisonIsDeadLetteredByReference(t *testing.T) {
	e := newEnv(t)
	e.startWorker(t, e.store)
	ctx := longCtx(t)
	mp := int(e.nc.MaxPayload())
	subject := schemas.ChunkSubject(schemas.Dev)
	tests := []struct {
		name string
		// size gives the payload size from the max payload and the headers' wire size.
		size func(hdrBytes int) int
		// replays is false when the replayed message cannot fit (replay adds headers).
		replays bool
	}{
		{name: "10 KB stays inline", size: func(int) int { return 10_000 }, replays: true},
		{name: "900 KB invalid JSON", size: func(int) int { return 900_000 }, replays: true},
		{name: "max payload less 1 KiB", size: func(h int) int { return mp - h - 1024 }, replays: true},
		{name: "exactly the max payload", size: func(h int) int { return mp - h }, replays: false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := nats.Header{}
			hdr.Set(nats.MsgIdHdr, "poison/"+strconv.Itoa(i))
			hdr.Set(schemas.HeaderTraceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			data := poison(tt.size(wireHeaderBytes(hdr)))
			seq := publishRaw(t, e.js, subject, hdr, data)
			id := schemas.StreamChunks + "-" + strconv.FormatUint(seq, 10)
			checkPoisonDeadLetter(t, e, id, seq, data)
			res, err := e.dlq.Replay(ctx, dlq.ReplayRequest{IDs: []string{id}})
			if err != nil {
				t.Fatal(err)
			}
			if !tt.replays {
				checkReplayTooLarge(t, e, id, data, res)
			} else {
				checkPoisonReplayed(t, e, hdr, data, res)
			}
			// Gone from the DLQ, gone from the bucket.
			if _, err := e.dlq.Get(ctx, id); !errors.Is(err, dlq.ErrNotFound) {
				t.Fatalf("entry after replay/delete: %v", err)
			}
			if _, err := payloadObject(t, e.js, id); !errors.Is(err, jetstream.ErrObjectNotFound) {
				t.Fatalf("object of %s after replay/delete: %v", id, err)
			}
		})
	}
	// One byte more than the max payload is refused at the door (nothing to lose).
	hdr := nats.Header{}
	hdr.Set(nats.MsgIdHdr, "poison/over")
	m := nats.NewMsg(subject)
	m.Header = hdr
	m.Data = poison(mp - wireHeaderBytes(hdr) + 1)
	if _, err := e.js.PublishMsg(ctx, m); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("publish of max payload + 1: %v", err)
	}
	// Nothing left unsettled.
	info, err := e.streams.ChunkConsumer.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumPending != 0 {
		t.Fatalf("chunk consumer: %d pending ack, %d pending", info.NumAckPending, info.NumPending)
	}
}

// checkPoisonDeadLetter waits for the dead letter id of the poison data published at chunk
// stream sequence seq, and checks its envelope: class validation, valid against its schema,
// the payload by reference exactly when it would not fit inline, and the payload back byte
// for byte.
func checkPoisonDeadLetter(t *testing.T, e *testEnv, id string, seq uint64, data []byte) {
	t.Helper()
	ctx := longCtx(t)
	var ent dlq.Entry
	waitFor(t, "dead letter "+id, func() bool {
		var err error
		ent, err = e.dlq.Get(ctx, id)
		return err == nil
	})
	env := ent.Envelope
	if env.Error.Class != "validation" || env.Subject != schemas.ChunkSubject(schemas.Dev) || env.StreamSeq != seq {
		t.Fatalf("envelope = %+v", env.Error)
	}
	if err := schemasValidate(env); err != nil {
		t.Fatalf("dead letter breaks its schema: %v", err)
	}
	// By reference exactly when embedding would not have fitted.
	whole := env
	whole.Payload, whole.PayloadRef = data, nil
	if fits := dlq.Fits(whole, e.nc.MaxPayload()); fits != (env.PayloadRef == nil) {
		t.Fatalf("%d bytes: fits inline %v, payload_ref %+v", len(data), fits, env.PayloadRef)
	}
	if env.PayloadRef != nil {
		if len(env.Payload) != 0 || env.PayloadRef.Size != int64(len(data)) || env.PayloadRef.Object != id {
			t.Fatalf("payload %d bytes inline, ref %+v", len(env.Payload), env.PayloadRef)
		}
	}
	got, err := e.dlq.Payload(ctx, id)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Payload: %d bytes (want %d), equal %v, err %v", len(got), len(data), bytes.Equal(got, data), err)
	}
}

// checkReplayTooLarge checks the replay res of dead letter id whose original data filled the
// max payload: replay headers cannot be added, so it failed and the entry and its stored
// original stay; then it deletes the entry.
func checkReplayTooLarge(t *testing.T, e *testEnv, id string, data []byte, res dlq.ReplayResult) {
	t.Helper()
	ctx := longCtx(t)
	if len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Error, "maximum payload") {
		t.Fatalf("replay of a max-size original = %+v", res)
	}
	if got, err := e.dlq.Payload(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the failed replay: %d bytes, %v", len(got), err)
	}
	if err := e.dlq.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
}

// checkPoisonReplayed checks the replay res of a poison message (data, published with hdr):
// republished with its bytes and trace header, it fails again into a new dead letter with the
// same bytes and one replay, which is then deleted with its stored object.
func checkPoisonReplayed(t *testing.T, e *testEnv, hdr nats.Header, data []byte, res dlq.ReplayResult) {
	t.Helper()
	ctx := longCtx(t)
	if len(res.Replayed) != 1 || res.Replayed[0].Seq == 0 {
		t.Fatalf("replay = %+v", res)
	}
	rm, err := e.streams.Chunks.GetMsg(ctx, res.Replayed[0].Seq)
	if err != nil || !bytes.Equal(rm.Data, data) || rm.Header.Get(schemas.HeaderTraceparent) != hdr.Get(schemas.HeaderTraceparent) {
		t.Fatalf("republished message: %d bytes, equal %v, headers %v, err %v", len(rm.Data), bytes.Equal(rm.Data, data), rm.Header, err)
	}
	// It fails again: a new dead letter, with the same bytes.
	id2 := schemas.StreamChunks + "-" + strconv.FormatUint(res.Replayed[0].Seq, 10)
	waitFor(t, "dead letter of the replay "+id2, func() bool {
		_, err := e.dlq.Get(ctx, id2)
		return err == nil
	})
	if got, err := e.dlq.Payload(ctx, id2); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("replayed dead letter payload: %d bytes, %v", len(got), err)
	}
	if e2, _ := e.dlq.Get(ctx, id2); e2.Envelope.Replays != 1 {
		t.Fatalf("replayed dead letter replays = %d", e2.Envelope.Replays)
	}
	if err := e.dlq.Delete(ctx, id2); err != nil {
		t.Fatal(err)
	}
	if _, err := payloadObject(t, e.js, id2); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("object of deleted %s: %v", id2, err)
	}
}

// The envelope crosses the max payload at one exact payload size: there and one byte either
// side, Write stores a dead letter that fits, inline up to it and by reference past it.
func TestWriterThreshold(t *testing.T) {
	e := newEnv(t)
	ctx := longCtx(t)
	mp := e.nc.MaxPayload()
	at := time.Date(2025, 9, 10, 10, 4, 5, 1_000_000, time.UTC)
	base := schemas.DeadLetterEnvelope{
		Subject: schemas.ChunkSubject(schemas.Dev), Headers: map[string][]string{"Nats-Msg-Id": {"j/c"}},
		Error:    schemas.DeadLetterError{Class: "validation", Message: "not JSON"},
		Attempts: 1, FirstFailure: at, LastFailure: at, Stream: schemas.StreamChunks, DeadLetteredAt: at,
	}
	with := func(id string, n int) schemas.DeadLetterEnvelope {
		env := base
		env.ID, env.StreamSeq, env.Payload = id, 1, bytes.Repeat([]byte{0xff}, n)
		return env
	}
	// The largest payload that still fits inline.
	lo, hi := 0, int(mp)
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if dlq.Fits(with("SLUICE_CHUNKS-000000", mid), mp) { // ids below have as many digits
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	threshold := lo
	t.Logf("max payload %d: payloads up to %d bytes stay inline", mp, threshold)
	w := dlq.NewWriter(e.js, schemas.StreamDLQ)
	for _, n := range []int{threshold - 1, threshold, threshold + 1, threshold + 2, threshold + 3} {
		id := "SLUICE_CHUNKS-" + strconv.Itoa(n)
		env := with(id, n)
		got, err := w.Write(ctx, env)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if byRef := got.Envelope.PayloadRef != nil; byRef != (n > threshold) {
			t.Fatalf("%d bytes (threshold %d): by reference %v", n, threshold, byRef)
		}
		ent, err := e.dlq.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.dlq.Payload(ctx, id)
		if err != nil || !bytes.Equal(p, env.Payload) {
			t.Fatalf("%d bytes: read back %d, %v", n, len(p), err)
		}
		if err := schemasValidate(ent.Envelope); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
}

// Headers too large to embed, and an error message of megabytes, still make a dead letter that
// fits; the original headers come back whole.
func TestWriterHugeHeadersAndError(t *testing.T) {
	e := newEnv(t)
	ctx := longCtx(t)
	at := time.Now().UTC()
	// Control characters are escaped six times over in JSON: 200 KB of them make 1.2 MB.
	big := strings.Repeat("\x01", 200_000)
	env := schemas.DeadLetterEnvelope{
		ID: "SLUICE_GRAPH-7", Subject: schemas.GraphSubject(schemas.Dev),
		Headers: map[string][]string{"X-Huge": {big}, "Nats-Msg-Id": {"g/1"}, schemas.HeaderJob: {"job_1"}},
		Payload: bytes.Repeat([]byte("p"), 200_000),
		// Multi-byte runes, so the cut must land on a rune boundary.
		Error:    schemas.DeadLetterError{Class: "validation", Message: strings.Repeat("é", 1_500_000)},
		Attempts: 1, FirstFailure: at, LastFailure: at, Stream: sjs.StreamGraph, StreamSeq: 7, DeadLetteredAt: at,
	}
	got, err := dlq.NewWriter(e.js, "").Write(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	out := got.Envelope
	if out.PayloadRef == nil || out.HeadersRef == nil {
		t.Fatalf("refs: payload %+v headers %+v", out.PayloadRef, out.HeadersRef)
	}
	if len(out.Error.Message) > dlq.MaxErrorMessage || !utf8.ValidString(out.Error.Message) || !strings.HasSuffix(out.Error.Message, "…") {
		t.Fatalf("error message: %d bytes, valid UTF-8 %v", len(out.Error.Message), utf8.ValidString(out.Error.Message))
	}
	if _, ok := out.Headers["X-Huge"]; ok || out.Headers["Nats-Msg-Id"][0] != "g/1" {
		t.Fatalf("inline headers = %v", out.Headers)
	}
	ent, err := e.dlq.Get(ctx, env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := schemasValidate(ent.Envelope); err != nil {
		t.Fatal(err)
	}
	p, h, err := e.dlq.Original(ctx, ent.Envelope)
	if err != nil || !bytes.Equal(p, env.Payload) || h["X-Huge"][0] != big || h[schemas.HeaderJob][0] != "job_1" {
		t.Fatalf("original: %d bytes, %d headers, %v", len(p), len(h), err)
	}
	// The referenced object altered: reading it back says so instead of serving other bytes.
	obs, err := e.js.ObjectStore(ctx, schemas.BucketDLQPayloads)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.PutBytes(ctx, env.ID, []byte("other bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dlq.Payload(ctx, env.ID); !errors.Is(err, dlq.ErrPayloadMissing) {
		t.Fatalf("payload of an altered object: %v", err)
	}
	if err := e.dlq.Delete(ctx, env.ID); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{env.ID, env.ID + "/headers"} {
		if _, err := obs.GetInfo(ctx, name); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Fatalf("object %s after delete: %v", name, err)
		}
	}
}

// blockDLQ makes every dead-letter publish fail (the DLQ stream full, DiscardNew) until the
// returned function restores it: a real broker refusal, not a stand-in.
func blockDLQ(t *testing.T, e *testEnv) (unblock func()) {
	t.Helper()
	ctx := longCtx(t)
	info, err := e.streams.DLQ.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orig := info.Config
	filler := publishRaw(t, e.js, "sluice.dlq.v1.filler", nil, []byte("filler"))
	cfg := orig
	cfg.MaxMsgs = int64(info.State.Msgs + 1)
	if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := e.js.UpdateStream(ctx, orig); err != nil {
			t.Fatal(err)
		}
		if err := e.streams.DLQ.DeleteMsg(ctx, filler); err != nil {
			t.Fatal(err)
		}
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	if v, ok := instrumenttest.Value(t, reg, name, nil); ok {
		return v
	}
	return -1
}

// A message that can neither be applied nor dead-lettered is not terminated: it stays in its
// stream, unacknowledged, and the worker says so (Health, metrics) until its dead letter is
// stored on a later delivery.
func TestDeadLetterFailureKeepsMessageAndIsLoud(t *testing.T) {
	e := newEnv(t) // MaxDeliver 3
	ctx := longCtx(t)
	reg := prometheus.NewRegistry()
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{
		JS: e.js, Streams: e.streams, Sink: e.store, Registerer: reg,
		Retry: settle.RetryPolicy{Base: 2 * time.Second, Max: 2 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}()
	unblock := blockDLQ(t, e)
	data := poison(900_000)
	seq := publishRaw(t, e.js, schemas.ChunkSubject(schemas.Dev), nil, data)
	waitFor(t, "the worker to report the failed dead letter", func() bool { return w.Health() != nil })
	if !strings.Contains(w.Health().Error(), "could neither be applied nor dead-lettered") {
		t.Fatalf("Health = %v", w.Health())
	}
	if n := counter(t, reg, "sluice_dead_letter_failures_total"); n < 1 {
		t.Fatalf("sluice_dead_letter_failures_total = %v", n)
	}
	if n := counter(t, reg, "sluice_dead_letter_unresolved"); n != 1 {
		t.Fatalf("sluice_dead_letter_unresolved = %v", n)
	}
	// Kept: in the stream, not acknowledged or terminated.
	if _, err := e.streams.Chunks.GetMsg(ctx, seq); err != nil {
		t.Fatalf("poison message left its stream: %v", err)
	}
	ci, err := e.streams.ChunkConsumer.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ci.AckFloor.Stream >= seq {
		t.Fatalf("ack floor %d passed the undead-lettered message %d", ci.AckFloor.Stream, seq)
	}
	unblock()
	id := schemas.StreamChunks + "-" + strconv.FormatUint(seq, 10)
	waitFor(t, "dead letter on the next delivery", func() bool {
		_, err := e.dlq.Get(ctx, id)
		return err == nil
	})
	if got, err := e.dlq.Payload(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("payload: %d bytes, %v", len(got), err)
	}
	waitFor(t, "health to recover", func() bool { return w.Health() == nil })
	if n := counter(t, reg, "sluice_dead_letter_unresolved"); n != 0 {
		t.Fatalf("sluice_dead_letter_unresolved = %v after recovery", n)
	}
}

// Regression (issue 11, finding 3): when a message's last delivery could not be dead-lettered,
// the server moved the ack floor past it, the reclaimer purged it, and the advisory capture
// found "no longer in its stream; no dead letter written". Now the reclaimer stops below any
// message whose advisory is still waiting, and the capture dead-letters it once it can.
func TestExhaustedWhileDLQDownIsKeptUntilCaptured(t *testing.T) {
	e := newEnv(t) // MaxDeliver 3
	ctx := longCtx(t)
	capture, err := e.dlq.SubscribeAdvisories(ctx, nil) // provisions; runs later
	if err != nil {
		t.Fatal(err)
	}
	e.startWorker(t, e.store)
	unblock := blockDLQ(t, e)
	subject := schemas.ChunkSubject(schemas.Dev)
	good := func(id string) uint64 {
		return publishRaw(t, e.js, subject, nil, []byte(`{"chunk_id":"`+id+`","content":"fine"}`))
	}
	good("before_0001")
	data := poison(900_000)
	seq := publishRaw(t, e.js, subject, nil, data)
	good("after_0001")
	adv, err := e.js.Stream(ctx, dlq.AdvisoryStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the max-deliveries advisory", func() bool { return e.state(t, adv).msgs >= 1 })
	// Traffic goes on: once a later message is acknowledged, the server's ack floor passes the
	// one it gave up on.
	last := good("after_0002")
	waitFor(t, "the ack floor to pass every message", func() bool {
		ci, err := e.streams.ChunkConsumer.Info(ctx)
		return err == nil && ci.AckFloor.Stream >= last
	})

	if _, err := sjs.Reclaim(ctx, e.js, e.streams.Chunks, sjs.ConsumerChunks); err != nil {
		t.Fatal(err)
	}
	if _, err := e.streams.Chunks.GetMsg(ctx, seq); err != nil {
		t.Fatalf("reclaim purged the message awaiting its dead letter: %v", err)
	}
	if st := e.state(t, e.streams.Chunks); st.first != seq {
		t.Fatalf("reclaim kept from %d, want from %d (everything below is settled)", st.first, seq)
	}

	unblock()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- capture.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture: %v", err)
		}
	}()
	id := schemas.StreamChunks + "-" + strconv.FormatUint(seq, 10)
	waitFor(t, "captured dead letter "+id, func() bool {
		_, err := e.dlq.Get(ctx, id)
		return err == nil
	})
	ent, _ := e.dlq.Get(ctx, id)
	if ent.Envelope.Error.Class != "exhausted" || ent.Envelope.PayloadRef == nil {
		t.Fatalf("captured envelope: class %s, ref %+v", ent.Envelope.Error.Class, ent.Envelope.PayloadRef)
	}
	if got, err := e.dlq.Payload(ctx, id); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("payload: %d bytes, %v", len(got), err)
	}
	waitFor(t, "the advisory to be handled", func() bool { return e.state(t, adv).msgs == 0 })
	if _, err := sjs.Reclaim(ctx, e.js, e.streams.Chunks, sjs.ConsumerChunks); err != nil {
		t.Fatal(err)
	}
	if st := e.state(t, e.streams.Chunks); st.msgs != 0 {
		t.Fatalf("after capture, reclaim left %+v", st)
	}
}

// Regression (issue 11, finding 1): advisories were captured only for the chunk and job
// streams, so graph batches and commands that hit max deliveries were dropped with no dead
// letter. Every stream Sluice consumes is captured now.
func TestCaptureAdvisoriesEveryStream(t *testing.T) {
	e := newEnv(t)
	ctx := longCtx(t)
	cmds, err := sjs.ProvisionCommands(ctx, e.js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.dlq.SubscribeAdvisories(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture: %v", err)
		}
	}()
	tests := []struct {
		name, subject, wantSubject string
		stream                     jetstream.Stream
	}{
		{name: "graph", subject: schemas.GraphSubject(schemas.Test), wantSubject: schemas.GraphSubject(schemas.Test), stream: e.streams.Graph},
		{name: "jobs", subject: schemas.JobSubject(schemas.Test), wantSubject: schemas.JobSubject(schemas.Test), stream: e.streams.Jobs},
		// Stored under a partitioned subject; the dead letter names the one it was published on.
		{name: "commands", subject: schemas.FeatureSubject("FR-9"), wantSubject: schemas.FeatureSubject("FR-9"), stream: cmds.Commands},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := publishRaw(t, e.js, tt.subject, nil, []byte(`{"poison":true}`))
			stream := tt.stream.CachedInfo().Config.Name
			cons, err := tt.stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
				Durable: "naker-" + tt.name, AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 1,
				AckWait: 30 * time.Second, OptStartSeq: seq, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := fetchOne(t, cons).Nak(); err != nil {
				t.Fatal(err)
			}
			id := stream + "-" + strconv.FormatUint(seq, 10)
			waitFor(t, "captured "+id, func() bool {
				if b, err := cons.FetchNoWait(1); err == nil {
					for m := range b.Messages() {
						_ = m.Nak()
					}
				}
				_, err := e.dlq.Get(ctx, id)
				return err == nil
			})
			ent, _ := e.dlq.Get(ctx, id)
			if ent.Envelope.Subject != tt.wantSubject || ent.Envelope.Error.Class != "exhausted" || string(ent.Envelope.Payload) != `{"poison":true}` {
				t.Fatalf("envelope = %+v", ent.Envelope)
			}
		})
	}
}
