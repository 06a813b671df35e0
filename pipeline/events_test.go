package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// countConsumers counts the consumers the server holds on stream.
func countConsumers(t *testing.T, js jetstream.JetStream, stream string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	names := s.ConsumerNames(ctx)
	for range names.Name() {
		n++
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// Regression: every Follow (one per /v1/events or /v1/ws request) left its ordered consumer on
// the server for 5 minutes after the client left; 1,100 short requests left 992 and reached
// the server's consumer limit. Now Follow deletes its consumer when it returns, however it
// ends (client gone, fn's error).
func TestFollowLeavesNoConsumer(t *testing.T) {
	ce := newCmdEnv(t)
	ce.startCommandWorker(t, pipeline.CommandWorkerConfig{})
	ce.run(t, featureCmd("FR-5000000000101"))
	feed := pipeline.NewEventFeed(ce.js)
	before := countConsumers(t, ce.js, sjs.StreamEvents) // the command client's own
	const n = 40
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if i%2 == 0 {
			// The client reads one event and leaves.
			err = feed.Follow(ctx, 0, func(pipeline.Event) error { return errStop })
			if !errors.Is(err, errStop) {
				t.Fatalf("follow %d: %v", i, err)
			}
		} else {
			// The client connects and goes away before any event.
			go func() { time.Sleep(20 * time.Millisecond); cancel() }()
			err = feed.Follow(ctx, pipeline.FeedFromNow, func(pipeline.Event) error { return nil })
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("follow %d: %v", i, err)
			}
		}
		cancel()
	}
	if got := countConsumers(t, ce.js, sjs.StreamEvents); got != before {
		t.Fatalf("%d consumers on %s after %d short feeds (%d before), want none left", got, sjs.StreamEvents, n, before)
	}
}

// /v1/jobs/{id}/events watches the job's key: the watch must not leave its consumer either.
func TestWatchJobLeavesNoConsumer(t *testing.T) {
	e := newEnv(t, envOpts{})
	res, err := e.loader(t).Load(context.Background(), pipeline.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 3, "w-%d")})
	if err != nil {
		t.Fatal(err)
	}
	stream := "KV_" + sjs.BucketJobs
	before := countConsumers(t, e.js, stream)
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.jobs.Watch(ctx, res.JobID, func(pipeline.Job) bool { return true }); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	// Unsubscribing deletes the watch's consumer; give the server a moment to apply it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := countConsumers(t, e.js, stream)
		if got <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers on %s after 20 job watches (%d before), want none left", got, stream, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Regression (issue 11, finding 6, found by the binary-level fault suite): a change-feed
// client that left within a few milliseconds of its request — before or while Follow created
// its consumer — left the consumer on the server until its InactiveThreshold (30 s): 300 short
// /v1/events requests left 82 consumers 30 s later. Follow must delete its consumer whenever
// it ends, even when ctx ended before the consumer was created.
func TestFollowCancelledAtOnceLeavesNoConsumer(t *testing.T) {
	ce := newCmdEnv(t)
	feed := pipeline.NewEventFeed(ce.js)
	before := countConsumers(t, ce.js, sjs.StreamEvents)
	const n = 40
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		if i%4 == 0 {
			cancel() // gone before Follow starts
		} else {
			go func() { time.Sleep(time.Duration(i%4) * time.Millisecond); cancel() }()
		}
		if err := feed.Follow(ctx, pipeline.FeedFromNow, func(pipeline.Event) error { return nil }); !errors.Is(err, context.Canceled) {
			t.Fatalf("follow %d: %v", i, err)
		}
		cancel()
	}
	if got := countConsumers(t, ce.js, sjs.StreamEvents); got != before {
		t.Fatalf("%d consumers on %s after %d feeds cancelled at once (%d before), want none left", got, sjs.StreamEvents, n, before)
	}
}
