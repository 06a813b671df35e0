package jetstream_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// BenchmarkSubscriberVsWatermillNATS answers the foundation issue's question: can
// watermill-nats (v2.1.3, pkg/jetstream) drain a durable consumer the way Sluice needs? Each
// handler waits 2 ms, as a handler waiting on a group commit does, then acks. One op is one
// message; msgs/s and the most messages seen in flight are reported. watermill-nats hands
// messages over from inside nats.go's Consume callback and waits there for the ack, so it holds
// one message at a time however many the router could run.
func BenchmarkSubscriberVsWatermillNATS(b *testing.B) {
	for _, impl := range []string{"sluice", "watermill-nats"} {
		b.Run(impl, func(b *testing.B) {
			js, p := setup(b, sjs.ProvisionConfig{})
			n := max(b.N, 500)
			w := sjs.NewBatchWriter(context.Background(), js, sjs.BatchWriterConfig{})
			for i := range n {
				_ = w.Add(chunkMsg(fmt.Sprintf("b%07d", i)))
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			var sub message.Subscriber
			var err error
			switch impl {
			case "sluice":
				sub, err = sjs.NewSubscriber(sjs.SubscriberConfig{Consumer: p.ChunkConsumer, MaxInFlight: 256})
			default:
				sub, err = wmnats.NewSubscriber(wmnats.SubscriberConfig{
					Conn:   js.Conn(),
					Logger: watermill.NopLogger{},
					ResourceInitializer: func(ctx context.Context, js jetstream.JetStream, topic string) (jetstream.Consumer, func(context.Context, watermill.LoggerAdapter), error) {
						c, err := js.Consumer(ctx, schemas.StreamChunks, sjs.ConsumerChunks)
						return c, nil, err
					},
					AckAsync: true,
				})
			}
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			msgs, err := sub.Subscribe(context.Background(), sjs.ConsumerChunks)
			if err != nil {
				b.Fatal(err)
			}
			var done, inFlight, peak atomic.Int64
			var elapsed time.Duration
			var wg sync.WaitGroup
			for m := range msgs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cur := inFlight.Add(1)
					for old := peak.Load(); cur > old && !peak.CompareAndSwap(old, cur); old = peak.Load() {
					}
					time.Sleep(2 * time.Millisecond)
					inFlight.Add(-1)
					m.Ack()
					if done.Add(1) == int64(n) {
						elapsed = time.Since(start)
						go sub.Close()
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
			b.ReportMetric(float64(peak.Load()), "peak-in-flight")
		})
	}
}
