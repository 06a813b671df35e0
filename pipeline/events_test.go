package pipeline_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
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
	ce.startCommandWorker(t, commands.WorkerConfig{})
	ce.run(t, featureCmd("FR-5000000000101"))
	feed := jobs.NewEventFeed(ce.js)
	before := countConsumers(t, ce.js, sjs.StreamEvents) // the command client's own
	const n = 40
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if i%2 == 0 {
			// The client reads one event and leaves.
			err = feed.Follow(ctx, 0, func(jobs.Event) error { return errStop })
			if !errors.Is(err, errStop) {
				t.Fatalf("follow %d: %v", i, err)
			}
		} else {
			// The client connects and goes away before any event.
			go func() { time.Sleep(20 * time.Millisecond); cancel() }()
			err = feed.Follow(ctx, jobs.FeedFromNow, func(jobs.Event) error { return nil })
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

// Regression: a Follow whose ctx ended while its consumer's create request was in flight (an
// HTTP client that closed right after the response head) returned context.Canceled, but the
// broker had created the consumer and nothing deleted it: it stayed until the server's
// InactiveThreshold (27 of 40 such /v1/events requests). Now the create is not cut short by
// ctx and whatever it created is deleted. The cancel delays sweep the create's round trip.
func TestFollowCancelledWhileCreatingLeavesNoConsumer(t *testing.T) {
	ce := newCmdEnv(t)
	feed := jobs.NewEventFeed(ce.js)
	before := countConsumers(t, ce.js, sjs.StreamEvents)
	const n = 40
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		stop := time.AfterFunc(time.Duration(i)*50*time.Microsecond, cancel)
		err := feed.Follow(ctx, jobs.FeedFromNow, func(jobs.Event) error { return nil })
		stop.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("follow %d: %v, want context.Canceled", i, err)
		}
	}
	if got := countConsumers(t, ce.js, sjs.StreamEvents); got != before {
		t.Fatalf("%d consumers on %s after %d feeds cancelled while starting (%d before), want none left", got, sjs.StreamEvents, n, before)
	}
}

// /v1/jobs/{id}/events watches the job's key: the watch must not leave its consumer either.
func TestWatchJobLeavesNoConsumer(t *testing.T) {
	e := newEnv(t, envOpts{})
	res, err := e.loader(t).Load(context.Background(), intake.LoadRequest{Env: "dev", Path: writeChunks(t, t.TempDir(), 3, "w-%d")})
	if err != nil {
		t.Fatal(err)
	}
	stream := "KV_" + sjs.BucketJobs
	before := countConsumers(t, e.js, stream)
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := e.jobs.Watch(ctx, res.JobID, func(jobs.Job) bool { return true }); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	waitConsumers(t, e.js, stream, before, "20 job watches")

	// Regression: a watch whose ctx ended while its consumer's create request was in flight
	// (a /v1/jobs/{id}/events client that closed right after the response head) failed with
	// context.Canceled while the broker created the consumer, which stayed until its
	// inactivity threshold (5 s; 5 of 30 such requests against `sluice serve`). The cancel
	// delays sweep the create's round trip.
	for i := range 40 {
		ctx, cancel := context.WithCancel(context.Background())
		stop := time.AfterFunc(time.Duration(i)*50*time.Microsecond, cancel)
		err := e.jobs.Watch(ctx, res.JobID, func(jobs.Job) bool { return false })
		stop.Stop()
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("watch %d: %v, want context.Canceled", i, err)
		}
	}
	waitConsumers(t, e.js, stream, before, "40 job watches cancelled while starting")
}

// waitConsumers waits up to 3 s (less than the 5 s after which the server drops an idle
// watch's consumer by itself) for stream's consumers to be back to want.
func waitConsumers(t *testing.T, js jetstream.JetStream, stream string, want int, after string) {
	t.Helper()
	// Unsubscribing deletes a watch's consumer; give the server a moment to apply it.
	deadline := time.Now().Add(3 * time.Second)
	for {
		got := countConsumers(t, js, stream)
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers on %s after %s (%d before), want none left", got, stream, after, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
