package jobs_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...) }

// Issue 15, item 6 (the three-node proof): with the jobs bucket at R3, two writers of one job
// record (three workers recording progress, the API sealing the job) failed instead of
// retrying: a replicated stream reports a compare-and-set conflict as error 10164, not 10071,
// and the store took only 10071 for a conflict. POST /v1/jobs answered 500 ("write job …:
// wrong last sequence") and workers retried whole bundles for a lost progress write. Every
// concurrent write now lands.
func TestStoreConcurrentWritersOnAnR3Bucket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	cl := embeddedtest.StartCluster(t, 3)
	_, js := cl.Connect()
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "jobs_r3", History: 1, Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	// A new R3 stream answers once its leader is elected.
	cl.WaitStreamCurrent(ctx, js, "KV_jobs_r3", 30*time.Second)
	store := jobs.NewStore(kv)
	const id = "jr3"
	if _, err := store.Open(ctx, schemas.JobOpen{JobID: id, Env: "dev", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 25
	errs := make(chan error, writers*each)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := store.Mark(ctx, id, jobs.Mark{Job: id, Item: int64(w*each + i), Outcome: jobs.Written})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a concurrent write failed: %v", err)
		}
	}
	job, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if job.Written != writers*each {
		t.Fatalf("job records %d written, want %d", job.Written, writers*each)
	}
}

// Issue 15, item 6: on the three-node proof every worker logged "job progress to the change
// feed: … 10158 duplicate message id is in process". Every worker forwards every job revision
// under one message id; on a replicated stream a copy that arrives while another is being
// replicated is refused with 10158 rather than answered as a duplicate, so the forwarder
// reported an error for an event that was (or was about to be) stored. Concurrent publishes of
// one revision now all succeed, and the stream keeps it once.
func TestJobEventPublishersRaceOnAnR3Stream(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	cl := embeddedtest.StartCluster(t, 3)
	_, js := cl.Connect()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS_R3", Subjects: []string{sjs.EventSubjects},
		Replicas: 3, Storage: jetstream.FileStorage, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	cl.WaitStreamCurrent(ctx, js, "EVENTS_R3", 30*time.Second)
	// Three workers' forwarders, each on its own connection as in production.
	conns := make([]jetstream.JetStream, 3)
	for i := range conns {
		_, conns[i] = cl.Connect()
	}
	const revisions, copies = 40, 6
	var wg sync.WaitGroup
	errs := make(chan error, revisions*copies)
	for rev := uint64(1); rev <= revisions; rev++ {
		job := jobs.Job{JobID: "race", State: jobs.JobRunning, Written: int64(rev)}
		for c := range copies {
			wg.Go(func() { errs <- jobs.PublishJob(ctx, conns[c%len(conns)], job, rev) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a forwarder failed: %v", err)
		}
	}
	info, err := js.Stream(ctx, "EVENTS_R3")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != revisions {
		t.Fatalf("the stream holds %d events, want each of the %d revisions once", n, revisions)
	}
}
