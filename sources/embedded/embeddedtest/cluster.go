package embeddedtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ClusterUser is the user clients of a test cluster authenticate as; the password is generated
// per cluster and carried in URLs.
const ClusterUser = "sluice"

// clusterReadyTimeout bounds how long StartCluster and Restart wait for the JetStream meta
// group to elect a leader and every running node to catch up with it: a few seconds on a
// loaded 2-core machine under -race, so a minute leaves a wide margin without hiding a hang.
const clusterReadyTimeout = time.Minute

// Cluster is a JetStream cluster of in-process nats-servers on loopback, each with its own
// store directory, JetStream on and every write synced (SyncAlways), routed to every other.
// Client ports are picked at random on the first start and kept across Restart; cluster ports
// are allocated up front so the routes can name them. Its methods are safe for concurrent use;
// Kill, Restart and the helpers call t.Fatal, so call them from the test goroutine.
type Cluster struct {
	t        testing.TB
	name     string
	password string
	// routes are the cluster URLs of every node (with the route credential).
	routes []*url.URL

	mu    sync.Mutex // guards nodes
	nodes []*clusterNode
}

// clusterNode is one server of a Cluster: its options (kept for Restart) and, while it runs,
// the server.
type clusterNode struct {
	opts *server.Options
	srv  *server.Server // nil while killed
}

// StartCluster starts n clustered servers (n ≥ 3 for a JetStream quorum that survives a node),
// waits until JetStream has a meta leader and every node is current, and shuts every server
// down when the test ends.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartCluster: %d servers", n)
	}
	c := &Cluster{t: t, name: "sluice-test-" + randomHex(t, 4), password: randomHex(t, 16)}
	clusterPorts := make([]int, n)
	for i := range n {
		clusterPorts[i] = freePort(t)
		c.routes = append(c.routes, &url.URL{Scheme: "nats-route", User: url.UserPassword("route", c.password),
			Host: fmt.Sprintf("127.0.0.1:%d", clusterPorts[i])})
	}
	dir := t.TempDir()
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       server.RANDOM_PORT,
			Users:      []*server.User{{Username: ClusterUser, Password: c.password}},
			JetStream:  true,
			StoreDir:   filepath.Join(dir, fmt.Sprintf("n%d", i)),
			SyncAlways: true,
			NoSigs:     true,
			// Without it the first PING comes within 2 s of a connect, before any client
			// traffic, and a loaded machine may miss it.
			DisableShortFirstPing: true,
			Cluster: server.ClusterOpts{
				Name: c.name, Host: "127.0.0.1", Port: clusterPorts[i],
				Username: "route", Password: c.password,
			},
		}
		for j, r := range c.routes {
			if j != i {
				opts.Routes = append(opts.Routes, r)
			}
		}
		c.nodes = append(c.nodes, &clusterNode{opts: opts})
	}
	t.Cleanup(c.shutdown)
	for i := range n {
		c.startNode(i)
	}
	// The client port each picked is kept for its restarts.
	for _, nd := range c.nodes {
		nd.opts.Port = nd.srv.Addr().(*net.TCPAddr).Port
	}
	c.WaitReady()
	return c
}

// startNode starts node i with its options and waits until it accepts clients.
func (c *Cluster) startNode(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	srv, err := server.NewServer(nd.opts)
	if err != nil {
		c.t.Fatalf("cluster node %d: %v", i, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(20 * time.Second) {
		srv.Shutdown()
		c.t.Fatalf("cluster node %d not ready for connections after 20 s", i)
	}
	c.mu.Lock()
	nd.srv = srv
	c.mu.Unlock()
}

// shutdown stops every running node and waits for each.
func (c *Cluster) shutdown() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, nd := range c.nodes {
		if nd.srv != nil {
			nd.srv.Shutdown()
			nd.srv.WaitForShutdown()
			nd.srv = nil
		}
	}
}

// Len is the number of nodes, running or killed.
func (c *Cluster) Len() int { return len(c.nodes) }

// Name is node i's server name, as stream info's Cluster.Leader and Replicas name it.
func (c *Cluster) Name(i int) string { return c.nodes[i].opts.ServerName }

// Index returns the node whose server name is name, or -1.
func (c *Cluster) Index(name string) int {
	for i, nd := range c.nodes {
		if nd.opts.ServerName == name {
			return i
		}
	}
	return -1
}

// Server returns node i's server, nil while it is killed.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// URLs returns every node's client URL with the credential in it (tests only: a URL shows in
// ps), killed nodes included: their ports stay reserved for Restart.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.nodes))
	for i, nd := range c.nodes {
		u := url.URL{Scheme: "nats", User: url.UserPassword(ClusterUser, c.password), Host: fmt.Sprintf("127.0.0.1:%d", nd.opts.Port)}
		out[i] = u.String()
	}
	return out
}

// URL returns URLs comma-separated, the form NATS_URL takes.
func (c *Cluster) URL() string { return strings.Join(c.URLs(), ",") }

// Connect opens a connection to the cluster (any node, reconnecting to the others), closed
// when the test ends, and its JetStream context.
func (c *Cluster) Connect(opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL(), append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		c.t.Fatal(err)
	}
	return nc, js
}

// Kill stops node i at once: its client and route connections close, with no lame-duck period
// (an in-process server cannot be SIGKILLed; what it acknowledged was synced already). It
// blocks until the server has stopped.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	c.mu.Lock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	c.mu.Unlock()
	if srv == nil {
		c.t.Fatalf("cluster node %d is not running", i)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart starts killed node i again on its client port and store, and waits until every
// running node is current with the meta leader.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Server(i) != nil {
		c.t.Fatalf("cluster node %d is running", i)
	}
	c.startNode(i)
	c.WaitReady()
}

// WaitReady waits (up to a minute) until the JetStream meta group has a leader among the
// running nodes, every running node is current with it, and the leader can place replicas
// on every running node.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		leader, current, running, peers := false, true, 0, 0
		c.mu.Lock()
		for _, nd := range c.nodes {
			if nd.srv == nil {
				continue
			}
			running++
			if nd.srv.JetStreamIsLeader() {
				leader = true
				// The peers the meta leader places replicas on: online, with JetStream
				// and with the stats each sends a while after it joins. Until every
				// running node is among them, an R3 stream is refused (10005 "no
				// suitable peers for placement"), as a CI run was right after start.
				peers = len(nd.srv.JetStreamClusterPeers())
			}
			current = current && nd.srv.JetStreamIsCurrent()
		}
		c.mu.Unlock()
		if leader && current && peers >= running {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream cluster not ready after %s: leader %v, all %d running nodes current %v, %d placeable peers",
				clusterReadyTimeout, leader, running, current, peers)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StreamLeader returns the index of the running node that leads stream (in the global
// account, where clients of the cluster live), or -1 when none does now (an election in
// progress).
func (c *Cluster) StreamLeader(stream string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, nd := range c.nodes {
		if nd.srv != nil && nd.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// WaitStreamLeader waits up to timeout for stream to have a leader among the running nodes
// and returns its index.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		if i := c.StreamLeader(stream); i >= 0 {
			return i
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("stream %s has no leader after %s", stream, timeout)
		}
	}
}

// WaitStreamCurrent waits up to timeout until stream has a leader and every replica it lists
// is current, as stream info reports them through js; it returns the last info.
func (c *Cluster) WaitStreamCurrent(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) *jetstream.StreamInfo {
	c.t.Helper()
	var last *jetstream.StreamInfo
	var lastErr error
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.Stream(rctx, stream)
		if err == nil {
			last, err = s.Info(rctx)
		}
		cancel()
		lastErr = err
		if err == nil && ReplicasCurrent(last) {
			return last
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("stream %s not current on every replica after %s: %+v (err %v)", stream, timeout, clusterInfo(last), lastErr)
		}
	}
}

// ReplicasCurrent reports whether info shows a leader and every listed replica current and
// online.
func ReplicasCurrent(info *jetstream.StreamInfo) bool {
	if info == nil || info.Cluster == nil || info.Cluster.Leader == "" {
		return false
	}
	for _, p := range info.Cluster.Replicas {
		if !p.Current || p.Offline {
			return false
		}
	}
	return true
}

func clusterInfo(info *jetstream.StreamInfo) any {
	if info == nil {
		return nil
	}
	return info.Cluster
}

// freePort returns a loopback port free at the time of the call.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
