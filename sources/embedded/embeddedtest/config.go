package embeddedtest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// StartConfigured runs a nats-server configured from the file at path (as an external broker
// would be, with whatever it includes and the variables it reads from the environment), on a
// random loopback port with JetStream in a t.TempDir(). adjust, when not nil, may change the
// options first (drop a cluster's routes, say). It returns once the server accepts clients and
// shuts it down when the test ends.
func StartConfigured(t testing.TB, path string, adjust func(*server.Options)) *server.Server {
	t.Helper()
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	if adjust != nil {
		adjust(opts)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats-server configured from %s not ready", path)
	}
	return ns
}
