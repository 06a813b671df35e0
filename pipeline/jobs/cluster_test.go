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
