package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/docstore"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sources/embedded"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// config is everything the commands read from flags and the environment. Packages get plain
// structs built from it.
type config struct {
	DataDir    string
	HTTPAddr   string
	TokensFile string
	NATS       sjs.ConnConfig
	LazySync   bool
	Astra      dataapi.Config
	// AstraVector stores a 1024-float embedding as $vector in vector collections.
	AstraVector bool
	// GraphDSN is the graph store: an SQLite path or a postgres:// DSN.
	GraphDSN string
	// CommandKey (SLUICE_COMMAND_KEY, never a flag) or CommandKeyFile is the key the API
	// signs commands and rollbacks with and the workers verify them with; without either,
	// command.key in the data directory (created on first use).
	CommandKey, CommandKeyFile string
}

// bindCommon registers the flags every command that opens the broker or the stores shares,
// each mirrored by its environment variable (applyEnv). The secrets are read from the
// environment only: a flag would show in ps.
func bindCommon(fs *pflag.FlagSet, c *config) {
	fs.StringVar(&c.DataDir, "data-dir", "./.sluice", "data directory of the embedded broker and stores")
	bindEnv(fs, "data-dir", "SLUICE_DATA_DIR")
	fs.StringVar(&c.NATS.URL, "nats-url", "", "external NATS server; empty runs the embedded one (password from $NATS_PASSWORD)")
	bindEnv(fs, "nats-url", "NATS_URL")
	fs.StringVar(&c.NATS.CredsFile, "nats-creds", "", "NATS credentials file")
	bindEnv(fs, "nats-creds", "NATS_CREDS")
	fs.StringVar(&c.NATS.User, "nats-user", "", "NATS user")
	bindEnv(fs, "nats-user", "NATS_USER")
	c.NATS.Password = envOr("NATS_PASSWORD", "") // never a flag: it would show in ps
	fs.StringVar(&c.NATS.CAFile, "nats-ca", "", "CA file for NATS TLS")
	bindEnv(fs, "nats-ca", "NATS_CA")
	fs.StringVar(&c.NATS.CertFile, "nats-cert", "", "client certificate for NATS TLS")
	bindEnv(fs, "nats-cert", "NATS_CERT")
	fs.StringVar(&c.NATS.KeyFile, "nats-key", "", "client key for NATS TLS")
	bindEnv(fs, "nats-key", "NATS_KEY")
	fs.BoolVar(&c.LazySync, "lazy-fsync", false, "embedded broker: fsync lazily (faster; loses acknowledged messages on power loss)")
	bindEnv(fs, "lazy-fsync", "SLUICE_LAZY_FSYNC")
	fs.StringVar(&c.Astra.Endpoint, "astra-endpoint", "", "AstraDB Data API endpoint; empty uses the embedded store (token from $ASTRA_DB_APPLICATION_TOKEN)")
	bindEnv(fs, "astra-endpoint", "ASTRA_DB_API_ENDPOINT")
	c.Astra.Token = envOr("ASTRA_DB_APPLICATION_TOKEN", "") // never a flag: it would show in ps
	fs.StringVar(&c.Astra.Keyspace, "astra-keyspace", "default_keyspace", "AstraDB keyspace")
	bindEnv(fs, "astra-keyspace", "ASTRA_DB_KEYSPACE")
	fs.BoolVar(&c.AstraVector, "astra-vector", false, "AstraDB: create vector collections and store embeddings as $vector")
	bindEnv(fs, "astra-vector", "SLUICE_ASTRA_VECTOR")
	c.CommandKey = envOr("SLUICE_COMMAND_KEY", "") // never a flag: it would show in ps
	fs.StringVar(&c.CommandKeyFile, "command-key-file", "", "key file the API signs commands and rollbacks with and workers verify them with; default command.key in the data directory (or the key itself in $SLUICE_COMMAND_KEY)")
	bindEnv(fs, "command-key-file", "SLUICE_COMMAND_KEY_FILE")
	fs.StringVar(&c.GraphDSN, "graph-dsn", "", "graph store: SQLite path or postgres:// DSN; default graph.db in the data directory")
	bindEnv(fs, "graph-dsn", "SLUICE_GRAPH_DSN")
}

// commandKey returns the key commands and rollbacks are signed and verified with:
// SLUICE_COMMAND_KEY, else the file SLUICE_COMMAND_KEY_FILE (owner-only), else command.key in
// the data directory, generated on first use. Every API and worker process of one deployment
// must hold the same key; the log line names its fingerprint so they can be compared.
func commandKey(c config, log *slog.Logger) (*sign.Key, error) {
	src, raw := "SLUICE_COMMAND_KEY", c.CommandKey
	if raw == "" {
		var err error
		if c.CommandKeyFile != "" {
			src = c.CommandKeyFile
			raw, err = secret.Read(c.CommandKeyFile)
		} else {
			src = filepath.Join(c.DataDir, sign.KeyFile)
			if err = os.MkdirAll(c.DataDir, 0o700); err == nil {
				raw, err = secret.ReadOrCreate(src)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("command signing key: %w", err)
		}
	}
	k, err := sign.NewKey(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	log.Info("command signing key", "source", src, "key_id", k.ID())
	return k, nil
}

// openGraph opens the graph store; with reg set, a PostgreSQL pool's statistics are exported.
func openGraph(ctx context.Context, c config, reg prometheus.Registerer) (graph.Store, error) {
	dsn := c.GraphDSN
	if dsn == "" {
		dsn = filepath.Join(c.DataDir, "graph.db")
	}
	g, err := graph.Open(ctx, dsn, graph.Options{})
	if err != nil {
		return nil, fmt.Errorf("open graph store: %w", err)
	}
	if pg, ok := g.(*graph.Postgres); ok && reg != nil {
		gauge := func(name, help string, f func(graph.PoolStats) float64) prometheus.Collector {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "sluice_graph_pool_" + name, Help: help},
				func() float64 { return f(pg.PoolStats()) })
		}
		reg.MustRegister(
			gauge("conns_total", "PostgreSQL pool connections open.", func(s graph.PoolStats) float64 { return float64(s.TotalConns) }),
			gauge("conns_idle", "PostgreSQL pool connections idle.", func(s graph.PoolStats) float64 { return float64(s.IdleConns) }),
			gauge("conns_acquired", "PostgreSQL pool connections in use.", func(s graph.PoolStats) float64 { return float64(s.AcquiredConns) }),
			gauge("conns_max", "PostgreSQL pool size limit.", func(s graph.PoolStats) float64 { return float64(s.MaxConns) }),
			gauge("acquire_wait_seconds_total", "Time spent waiting for a pool connection.", func(s graph.PoolStats) float64 { return s.EmptyAcquireWaitTime.Seconds() }),
			gauge("acquires_waited_total", "Acquires that had to wait for a connection.", func(s graph.PoolStats) float64 { return float64(s.EmptyAcquireCount) }),
		)
	}
	return g, nil
}

// broker is a connection to JetStream with Sluice's streams provisioned, and the embedded
// server behind it when this process runs one.
type broker struct {
	srv     *embedded.Server
	nc      *nats.Conn
	js      jetstream.JetStream
	streams *sjs.Provisioned
	jobs    *jobs.Store
	// remote is true when the broker belongs to another process (NATS_URL, or a running
	// sluice serve on the same data directory).
	remote bool
}

// openBroker connects to NATS_URL, else to the embedded server another sluice process runs on
// the data directory, else starts one in this process (when allowEmbedded).
func openBroker(ctx context.Context, c config, log *slog.Logger, allowEmbedded bool) (*broker, error) {
	b := &broker{}
	nc := c.NATS
	if nc.URL != "" {
		b.remote = true
	} else {
		// The embedded broker admits only its credential (owner-only in the data directory):
		// whoever can read the data directory may connect, other local users may not.
		ep, err := embedded.Discover(c.DataDir)
		switch {
		case err != nil:
			return nil, fmt.Errorf("connect to the embedded broker on %s: %w", c.DataDir, err)
		case ep.URL != "":
			b.remote = true
		case allowEmbedded:
			srv, err := embedded.Start(embedded.Config{DataDir: c.DataDir, LazySync: c.LazySync, Logger: log})
			if err != nil {
				return nil, fmt.Errorf("start embedded broker: %w", err)
			}
			b.srv = srv
			ep = srv.Endpoint()
		default:
			return nil, errors.New("no broker: set NATS_URL or start sluice serve on this data directory")
		}
		nc.URL, nc.User, nc.Password = ep.URL, ep.User, ep.Password
	}
	nc.Logger = log
	conn, err := sjs.Connect(ctx, nc)
	if err != nil {
		b.close()
		return nil, err
	}
	b.nc = conn
	if b.js, err = jetstream.New(conn); err != nil {
		b.close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if b.streams, err = sjs.Provision(ctx, b.js, sjs.ProvisionConfig{}); err != nil {
		b.close()
		return nil, err
	}
	b.jobs = jobs.NewStore(b.streams.JobsKV)
	return b, nil
}

func (b *broker) close() {
	if b.nc != nil {
		_ = b.nc.Drain()
		b.nc.Close()
	}
	if b.srv != nil {
		b.srv.Shutdown()
	}
}

func (b *broker) ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	_, err := b.js.AccountInfo(ctx)
	return err
}

// docSink is the document store chunks go to and are read from.
type docSink interface {
	pipeline.DocSink
	GetDoc(ctx context.Context, collection, id string) (json.RawMessage, error)
}

// sinks is the document store this process writes to: AstraDB when an endpoint is
// configured, else the embedded SQLite store.
type sinks struct {
	docs     docSink
	name     string
	notFound error
	ping     func(context.Context) error
	close    func()
}

func openSinks(ctx context.Context, c config, log *slog.Logger) (*sinks, error) {
	if c.Astra.Endpoint != "" {
		ac := c.Astra
		ac.Logger = log
		client, err := dataapi.NewClient(ac)
		if err != nil {
			return nil, fmt.Errorf("astra: %w", err)
		}
		sink, err := astra.NewSink(astra.SinkConfig{Client: client, Vector: c.AstraVector, Logger: log})
		if err != nil {
			client.Close()
			return nil, fmt.Errorf("astra: %w", err)
		}
		log.Info("writing chunks to AstraDB", "astra", ac) // Config logs the token redacted
		return &sinks{
			docs: sink, name: "astra", notFound: dataapi.ErrNotFound, close: client.Close,
			ping: func(ctx context.Context) error { _, err := client.FindCollections(ctx); return err },
		}, nil
	}
	store, err := docstore.Open(ctx, docstore.Config{Path: filepath.Join(c.DataDir, "documents.db"), Logger: log})
	if err != nil {
		return nil, err
	}
	return &sinks{docs: store, name: "docstore", notFound: docstore.ErrNotFound, ping: store.Ping, close: func() { _ = store.Close() }}, nil
}
