package embeddedtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, LeakOptions()...) }

// TestCluster starts three clustered servers, keeps an R3 stream writable while its leader
// and then a follower are killed, and checks every acknowledged message is on every replica
// after the restarts.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	c := StartCluster(t, 3)
	if got := len(strings.Split(c.URL(), ",")); got != 3 {
		t.Fatalf("URL lists %d servers, want 3: the client must know every node", got)
	}
	ctx := context.Background()
	_, js := c.Connect()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	info := c.WaitStreamCurrent(ctx, js, "T", 30*time.Second)
	if info.Config.Replicas != 3 || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream T: replicas %d, followers %+v; want R3", info.Config.Replicas, info.Cluster.Replicas)
	}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			// A publish during an election fails with no responders or a timeout; retried
			// with its id it is stored once.
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := js.Publish(pctx, "t.x", []byte("m"), jetstream.WithMsgID(fmt.Sprint(i)))
				cancel()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("publish %d: %v", i, err)
				}
			}
		}
	}
	publish(0, 100)

	leader := c.WaitStreamLeader("T", 10*time.Second)
	if c.Index(info.Cluster.Leader) != leader {
		t.Fatalf("StreamLeader says node %d, stream info says %s", leader, info.Cluster.Leader)
	}
	c.Kill(leader)
	if c.Server(leader) != nil {
		t.Fatal("a killed node is still listed as running")
	}
	next := c.WaitStreamLeader("T", 30*time.Second)
	if next == leader {
		t.Fatalf("node %d leads T after it was killed", next)
	}
	publish(100, 200)
	follower := 3 - leader - next
	c.Kill(follower)
	// One node of three: no quorum, the stream cannot take writes.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	// A publish that timed out may still be stored once the quorum is back (its proposal
	// waits), hence a subject of its own.
	_, err = js.Publish(pctx, "t.noquorum", []byte("m"), jetstream.WithMsgID("no-quorum"))
	cancel()
	if err == nil {
		t.Fatal("a publish was acknowledged by one node of three")
	}
	c.Restart(leader)
	c.Restart(follower)
	publish(200, 300)
	c.WaitStreamCurrent(ctx, js, "T", 30*time.Second)
	s, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err = s.Info(ctx, jetstream.WithSubjectFilter("t.x"))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.State.Subjects["t.x"]; got != 300 {
		t.Fatalf("stream T holds %d messages on t.x, want 300", got)
	}
	// Every node answers on its original port after a restart.
	for i, u := range c.URLs() {
		nc, err := nats.Connect(u)
		if err != nil {
			t.Fatalf("node %d at its URL: %v", i, err)
		}
		nc.Close()
	}
}

// TestClusterRefusesWrongPassword: the cluster's clients need its credential.
func TestClusterRefusesWrongPassword(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node JetStream cluster")
	}
	c := StartCluster(t, 3)
	u := strings.Replace(c.URLs()[0], ClusterUser+":", ClusterUser+":x", 1)
	if nc, err := nats.Connect(u); err == nil {
		nc.Close()
		t.Fatal("connected with a wrong password")
	}
}
