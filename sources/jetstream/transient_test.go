package jetstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// Issue 15 (three-node proof): four processes starting with a JetStream cluster, provisioning
// at once, and one worker exited with "provision stream SLUICE_COMMANDS: context deadline
// exceeded"; a process starting while the cluster has no meta leader (servers restarting)
// exited the same way, leaving its start to a restart policy. Provisioning now waits for the
// cluster: started with two of three servers down, it completes once they are back.
func TestProvisionWaitsForTheCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	cl := embeddedtest.StartCluster(t, 3)
	_, js := cl.Connect()
	cl.Kill(1)
	cl.Kill(2)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: sjs.Settings{Replicas: 3}})
		done <- err
	}()
	// Long enough for several JetStream requests to time out or be refused without a leader.
	select {
	case err := <-done:
		t.Fatalf("provisioning ended without a quorum: %v", err)
	case <-time.After(6 * time.Second):
	}
	cl.Restart(1)
	cl.Restart(2)
	if err := <-done; err != nil {
		t.Fatalf("provisioning once the cluster is back: %v", err)
	}
	for _, name := range sjs.KnownStreams() {
		if r := streamConfig(t, js, name).Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}
}

// A role without stream-admin permission that creates what is missing (--provision missing on
// an empty broker) is refused by the server, which never answers the request: that looks like
// a timeout, but it must fail at once, naming the violation, not wait for the cluster.
func TestProvisionRefusedPermissionFailsAtOnce(t *testing.T) {
	url := startExternal(t)
	js, _ := connectAs(t, url, "worker")
	start := time.Now()
	_, err := sjs.Provision(context.Background(), js, sjs.ProvisionConfig{Mode: sjs.ModeMissing})
	if err == nil || !strings.Contains(err.Error(), "permissions violation") {
		t.Fatalf("err = %v, want the permissions violation named", err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("failed after %s: a refused permission was retried", d)
	}
}
