package jetstream

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// A placement refused with no reason is retried while a cluster may still be forming (a CI
// run was refused an R3 stream a moment after its three servers had elected a leader); one
// refused for a reason a wait does not change (tags no server has) is returned at once.
func TestRetryTransientRetriesAPlacementWhileTheClusterForms(t *testing.T) {
	bare := &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeNoSuitablePeers, Description: "no suitable peers for placement"}
	tags := &jetstream.APIError{Code: 400, ErrorCode: jsErrCodeNoSuitablePeers, Description: "no suitable peers for placement, tags not matched ['az:x']"}

	calls := 0
	v, err := retryTransient(context.Background(), nil, func(context.Context) (int, error) {
		if calls++; calls < 3 {
			return 0, errors.Join(errors.New("create stream SLUICE_CHUNKS"), bare)
		}
		return 7, nil
	})
	if err != nil || v != 7 || calls != 3 {
		t.Fatalf("bare 10005 twice, then success: got %d, %v after %d calls; want 7, nil after 3", v, err, calls)
	}

	calls = 0
	_, err = retryTransient(context.Background(), nil, func(context.Context) (int, error) {
		calls++
		return 0, tags
	})
	if !errors.Is(err, tags) || calls != 1 {
		t.Fatalf("10005 naming unmatched tags: %v after %d calls; want it returned after 1", err, calls)
	}
	if forming(tags) || !forming(bare) || forming(errors.New("no suitable peers for placement")) {
		t.Fatal("forming: only JetStream's 10005 with no reason is a cluster that may be forming")
	}
}
