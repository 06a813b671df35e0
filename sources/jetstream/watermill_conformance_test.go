package jetstream_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/nats-io/nats.go/jetstream"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// TestWatermillConformance runs Watermill's own Pub/Sub suite (pubsub/tests.TestPubSub)
// against Sluice's Publisher and Subscriber on the embedded broker. A Watermill topic is a
// subject of one stream; each subscription drains a durable pull consumer filtered to it,
// named after the consumer group (or the topic), as Sluice's workers drain theirs, one
// message in flight so that order is kept. Declared: consumer groups, persistence and order;
// not exactly-once delivery (a message is redelivered after a crash; Sluice's handlers are
// idempotent instead), no broker restart (TestReconnect needs a command to restart it). What
// the suite found, fixed: the Subscriber gave each message "<stream>:<seq>" as its UUID instead
// of the one it was published with, and the Publisher deduplicated by UUID across topics of a
// stream (one message published to ten topics was stored once). One difference is declared in
// topicSubscriber.Close.
func TestWatermillConformance(t *testing.T) {
	js, _ := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WMTEST", Subjects: []string{"wmtest.>"}, Storage: jetstream.FileStorage,
		AllowAtomicPublish: true,
	}); err != nil {
		t.Fatal(err)
	}
	features := tests.Features{
		ConsumerGroups:      true,
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     true,
		// Declared: order holds for one subscriber of a consumer (MaxInFlight 1). Several
		// subscribers of one durable consumer compete for its messages, so two messages of a
		// key can be handled at once by two of them (the suite's ten-subscriber order test
		// failed 1 run in 4 without this). Where Sluice needs key order across workers, it
		// partitions the stream and pins each partition's consumer to one worker (commands).
		GuaranteedOrderWithSingleSubscriber: true,
		Persistent:                          true,
		ForceShort:                          true,
		GenerateTopicFunc:                   func(tctx tests.TestContext) string { return "wmtest." + string(tctx.TestID) },
	}
	// Some of the suite's tests leave a subscriber open; closing each at the end of its test
	// keeps the package's goroutine-leak check meaningful.
	newSub := func(t *testing.T, group string) *topicSubscriber {
		s := &topicSubscriber{js: js, group: group}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	pubSub := func(t *testing.T) (message.Publisher, message.Subscriber) {
		return sjs.NewPublisher(js), newSub(t, "")
	}
	groupPubSub := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		return sjs.NewPublisher(js), newSub(t, group)
	}
	tests.TestPubSub(t, features, pubSub, groupPubSub)
}

// topicSubscriber adapts Watermill's Subscribe(topic) to Sluice's Subscriber, which drains
// one given consumer: each topic gets a durable consumer filtered to it.
type topicSubscriber struct {
	js    jetstream.JetStream
	group string

	mu     sync.Mutex
	subs   []*sjs.Subscriber
	closed bool
}

func (s *topicSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("subscriber closed")
	}
	name := s.group
	if name == "" {
		name = "wm_" + strings.NewReplacer(".", "_", "-", "_").Replace(topic)
	}
	c, err := s.js.CreateOrUpdateConsumer(ctx, "WMTEST", jetstream.ConsumerConfig{
		Durable: name, FilterSubject: topic, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	sub, err := sjs.NewSubscriber(sjs.SubscriberConfig{Consumer: c, MaxInFlight: 1, FetchBatch: 1, DrainTimeout: time.Second})
	if err != nil {
		return nil, err
	}
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	s.subs = append(s.subs, sub)
	return ch, nil
}

func (s *topicSubscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	subs := s.subs
	s.subs = nil
	s.mu.Unlock()
	var errs []error
	for _, sub := range subs {
		// The one declared difference: Sluice's Close reports a drain that ran out
		// (ErrDrainTimeout; what was unsettled is handed back), and its workers surface that in
		// their exit status. The suite closes subscribers that hold unacked messages on purpose
		// and expects no error, so that report is not an error here.
		if err := sub.Close(); err != nil && !errors.Is(err, sjs.ErrDrainTimeout) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
