// Package embeddedtest starts a real embedded nats-server for tests: every package that
// tests against JetStream uses the same one-call setup and the same goroutine-leak allowances.
package embeddedtest

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/sources/embedded"
)

// Start runs an embedded nats-server (in a fresh t.TempDir() unless cfg.DataDir is set) and
// connects to it with its credential. The server and the connection close when the test ends.
// cfg.LazySync trades the fsync on every write for speed, as most tests may.
func Start(t testing.TB, cfg embedded.Config) (*embedded.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	srv, err := embedded.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc := Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return srv, nc, js
}

// Connect opens one more connection to srv, authenticated with its credential, closed when
// the test ends.
func Connect(t testing.TB, srv *embedded.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	ep := srv.Endpoint()
	nc, err := nats.Connect(ep.URL, append([]nats.Option{nats.UserInfo(ep.User, string(ep.Password))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// LeakOptions are the goroutines goleak must ignore in a test binary that ran nats-server or
// the SQLite driver: process-wide goroutines they start once and never stop.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.init.func1"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).handleSignals.func1"),
		goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("modernc.org/sqlite/lib.init.func1"),
	}
}
