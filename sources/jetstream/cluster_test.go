package jetstream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Issue 15, item 6 (the three-node proof): on a JetStream cluster with the streams at R3, the
// chunk worker wrote nothing. Its pulls asked for a byte limit (FetchMaxBytes); a replicated
// consumer answers such a pull, once its message count is reached, with a "409 Batch
// Completed" status that reaches the client before the messages, and nats.go ends the fetch
// on it: every message was counted as delivered, never handed over, and delivered again after
// AckWait, for ever ("pull from consumer failed: batch completed" every 2 s). The subscriber
// now bounds bytes by the message count it asks for (MinPullBytes each) and sends no byte
// limit.
func TestSubscriberBoundedByBytesDrainsAnR3Stream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	cl := embeddedtest.StartCluster(t, 3)
	_, js := cl.Connect()
	ctx := context.Background()
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	cl.WaitStreamCurrent(ctx, js, "SLUICE_CHUNKS", 30*time.Second)
	const n = 50
	for i := range n {
		if _, err := js.PublishMsg(ctx, chunkMsg(fmt.Sprintf("c%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	sub := newSubscriber(t, sjs.SubscriberConfig{
		// Pulls of 5 reach their count with bytes to spare, as the chunk worker's do (its
		// weight bound sizes them).
		Consumer: p.ChunkConsumer, MaxInFlight: 1000, MaxInFlightBytes: 8 << 20, FetchBatch: 5,
		FetchMaxWait: 200 * time.Millisecond,
	})
	var mu sync.Mutex
	seen := map[string]bool{}
	cancel, done := consumeBatches(t, sub, sjs.BatchConfig{MaxBatch: 10, Linger: time.Millisecond},
		func(_ context.Context, batch []*sjs.Delivery) {
			for _, d := range batch {
				mu.Lock()
				seen[chunkID(d)] = true
				mu.Unlock()
				d.Ack()
			}
		})
	stopWhenSettled(t, p.ChunkConsumer, n, cancel, done)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != n {
		t.Fatalf("handled %d distinct messages, want %d", len(seen), n)
	}
	if info := consumerInfo(t, p.ChunkConsumer); info.Delivered.Consumer != n {
		t.Fatalf("%d deliveries for %d messages: messages delivered by the server never reached the handler", info.Delivered.Consumer, n)
	}
}
