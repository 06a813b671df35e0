package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline"
	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sinks/document"
	"github.com/sluice-dev/sluice/sources/embedded"
)

// Astra is the AstraDB scenario set up for its modes: the Data API double, an astra client
// and sink, the generated chunk file and, for the sluice modes, an embedded broker with a running
// worker and a loader. Its methods are not safe for concurrent use. Call Close when done.
type Astra struct {
	cfg     AstraConfig
	work    string // working directory, removed by Close
	path    string // the chunk file
	double  *dataapitest.Server
	client  *dataapi.Client
	sink    *astra.Sink
	builder *document.Builder

	// The broker, for the sluice modes and ModeJetStream; nil unless one of them was set up.
	srv *embedded.Server
	nc  *nats.Conn
	js  jetstream.JetStream
	// The jetstream mode's stream; nil unless ModeJetStream was set up.
	floor jetstream.Stream
	// The sluice modes' parts; nil unless one of them was set up. loader publishes bundles
	// (ModeSluice), single one chunk per message (ModeSluiceSingle).
	jobs   *jobs.Store
	loader *intake.Loader
	single *intake.Loader
	// stopWorker ends the worker's Run; workerDone then receives its result. workerAlive
	// is cancelled, with the cause, when Run returns.
	stopWorker  context.CancelFunc
	workerDone  chan error
	workerAlive context.Context
	// loads counts the sluice modes' runs: runs after the first load with Force, as a
	// resubmitted file is otherwise recognised and not published again.
	loads int
	// floorRuns counts the jetstream mode's runs, for message ids unique to each run.
	floorRuns int

	closeOnce sync.Once
	closeErr  error
}

// NewAstra validates cfg and sets up every mode of cfg.Modes: it creates a working directory
// under cfg.Dir, writes cfg.Chunks synthetic chunks to a JSONL file there, starts the Data
// API double with cfg.Latency and creates the collection; for the sluice modes and
// ModeJetStream it also starts an embedded nats-server that syncs every write; for the sluice
// modes it provisions Sluice's streams and starts a worker (as `sluice load` does: default
// configuration, sink named "astra"); for ModeJetStream it creates a stream configured as
// Sluice's chunk stream. The double, the broker and the rest start in their parts (InPart:
// PartDouble, PartBroker, PartClient). The caller must call Close, which stops the worker it
// started.
func NewAstra(ctx context.Context, cfg AstraConfig) (_ *Astra, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Astra{cfg: cfg}
	defer func() {
		if err != nil {
			_ = a.Close()
		}
	}()
	if a.work, err = os.MkdirTemp(cfg.Dir, "sluice-bench-astra-"); err != nil {
		return nil, fmt.Errorf("bench astra: create working directory: %w", err)
	}
	if a.path, err = writeChunks(a.work, cfg.Chunks); err != nil {
		return nil, err
	}
	if a.builder, err = document.NewBuilder(document.Config{Env: env}); err != nil {
		return nil, err
	}
	InPart(PartDouble, func() { a.double = dataapitest.New(dataapitest.Config{}) })
	a.double.SetLatency(max(cfg.Latency, 0), 0)
	broker := slices.Contains(cfg.Modes, ModeJetStream) || slices.ContainsFunc(cfg.Modes, isSluice)
	if broker {
		InPart(PartBroker, func() { err = a.startBroker() })
		if err != nil {
			return nil, err
		}
	}
	InPart(PartClient, func() { err = a.setupClient(ctx, broker) })
	if err != nil {
		return nil, err
	}
	return a, nil
}

// setupClient sets up everything but the double and the broker: the Astra client and sink,
// the collection, the broker connection and each mode's parts. The goroutines it starts (the
// HTTP and nats.go connections' loops, the worker) belong to the caller's part.
func (a *Astra) setupClient(ctx context.Context, broker bool) error {
	cfg := a.cfg
	var err error
	// Configured as cmd/sluice configures the sink for an ASTRA_DB_API_ENDPOINT.
	if a.client, err = dataapi.NewClient(dataapi.Config{Endpoint: a.double.URL(), Token: secret.String(a.double.Token()), Logger: cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.sink, err = astra.NewSink(astra.SinkConfig{Client: a.client, Logger: cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if err := a.sink.EnsureCollection(ctx, collection); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if broker {
		if err := a.connectBroker(ctx); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(cfg.Modes, isSluice) {
		if err := a.startSluice(ctx); err != nil {
			return err
		}
	}
	if slices.Contains(cfg.Modes, ModeJetStream) {
		if err := a.createFloor(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startBroker starts the embedded broker, syncing every write, as `sluice load` does on the
// embedded default.
func (a *Astra) startBroker() error {
	var err error
	if a.srv, err = embedded.Start(embedded.Config{DataDir: filepath.Join(a.work, "data"), Logger: a.cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: start embedded broker: %w", err)
	}
	return nil
}

// connectBroker connects to the broker startBroker started.
func (a *Astra) connectBroker(ctx context.Context) error {
	var err error
	if a.nc, err = sjs.Connect(ctx, sjs.ConnConfig{URL: a.srv.ClientURL(), User: embedded.User, Password: a.srv.Endpoint().Password, Logger: a.cfg.Logger}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.js, err = jetstream.New(a.nc); err != nil {
		return fmt.Errorf("bench astra: jetstream: %w", err)
	}
	return nil
}

// createFloor creates the jetstream mode's stream with the chunk stream's configuration
// (sources/jetstream.Provision) on its own subject.
func (a *Astra) createFloor(ctx context.Context) error {
	var err error
	a.floor, err = a.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: floorStream, Subjects: []string{floorSubject},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew, Storage: jetstream.FileStorage,
		Duplicates: 10 * time.Minute, AllowAtomicPublish: true, // Provision's default window
	})
	if err != nil {
		return fmt.Errorf("bench astra: create stream %s: %w", floorStream, err)
	}
	return nil
}

// startSluice provisions Sluice's streams, starts the worker and builds the loader, as
// `sluice load` does on the embedded default.
func (a *Astra) startSluice(ctx context.Context) error {
	dataDir := filepath.Join(a.work, "data")
	js := a.js
	streams, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	a.jobs = jobs.NewStore(streams.JobsKV)
	w, err := pipeline.NewWorker(pipeline.WorkerConfig{JS: js, Streams: streams, Sink: a.sink, SinkName: "astra", Logger: a.cfg.Logger})
	if err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.loader, err = intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: a.jobs, SpoolDir: filepath.Join(dataDir, "spool")}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	if a.single, err = intake.NewLoader(intake.LoaderConfig{JS: js, Jobs: a.jobs, SpoolDir: filepath.Join(dataDir, "spool"), SingleChunkMessages: true}); err != nil {
		return fmt.Errorf("bench astra: %w", err)
	}
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	alive, died := context.WithCancelCause(context.Background())
	a.stopWorker, a.workerDone, a.workerAlive = stop, make(chan error, 1), alive
	go func() {
		err := w.Run(runCtx)
		if err != nil {
			died(fmt.Errorf("worker stopped: %w", err))
		} else {
			died(errors.New("worker stopped"))
		}
		a.workerDone <- err
	}()
	return nil
}

// Close stops the worker (draining it), closes the broker connection, shuts the broker and
// the double down and removes the working directory. It returns the worker's Run error. It
// is idempotent.
func (a *Astra) Close() error {
	a.closeOnce.Do(func() {
		if a.stopWorker != nil {
			a.stopWorker()
			a.closeErr = <-a.workerDone
		}
		if a.nc != nil {
			a.nc.Close()
		}
		if a.srv != nil {
			a.srv.Shutdown()
		}
		if a.client != nil {
			a.client.Close()
		}
		if a.double != nil {
			a.double.Close()
		}
		if a.work != "" {
			if err := os.RemoveAll(a.work); err != nil {
				a.closeErr = errors.Join(a.closeErr, fmt.Errorf("bench astra: remove working directory: %w", err))
			}
		}
	})
	return a.closeErr
}
