package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/sourcegraph/conc/pool"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/pipeline/requirements"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sources/httpapi"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// requirementsParts is the requirements side of serve, worker and api: the SQLite requirements
// store in the data directory, the command streams, the command worker (workers) and the API
// services (api).
type requirementsParts struct {
	store   reqStore
	streams *sjs.CommandStreams
	js      jetstream.JetStream
	jobsKV  jetstream.KeyValue
	log     *slog.Logger
	// worker is nil unless workers run in this process.
	worker *commands.Worker
	// client and events are nil unless the API runs in this process.
	client *commands.Client
	events *jobs.EventFeed
}

// requirementsOptions says what startRequirements builds.
type requirementsOptions struct {
	// JS is the broker connection; JobsKV the jobs bucket (job progress goes to the change feed).
	JS     jetstream.JetStream
	JobsKV jetstream.KeyValue
	// Graph receives the projection of applied commands and imports. Optional.
	Graph commands.GraphApplier
	// Workers builds the command worker; API builds the API services.
	Workers, API bool
	// Key signs commands (API) and verifies them (workers). Required.
	Key    *sign.Key
	Drain  time.Duration
	Logger *slog.Logger
	// Startup reports start-up waits (log, /readyz). Optional: the zero value reports nothing.
	Startup startup
}

// startRequirements opens the requirements store (requirements.db in the data directory),
// provisions the command streams, and builds the command worker and the API services. Nothing
// runs until run; the caller must call close after the pool it ran in has returned.
func startRequirements(ctx context.Context, c config, o requirementsOptions) (*requirementsParts, error) {
	streams, err := sjs.ProvisionCommands(ctx, o.JS, sjs.ProvisionConfig{})
	if err != nil {
		return nil, err
	}
	v, err := requirements.NewValidator()
	if err != nil {
		return nil, err
	}
	var store reqStore
	if c.Astra.Endpoint != "" {
		// With AstraDB configured, requirement versions, feature requests, the audit trail and
		// the apply markers are documents of one collection (the database allows 5 to 10).
		ac := c.Astra
		ac.Logger = o.Logger
		client, cerr := dataapi.NewClient(ac)
		if cerr != nil {
			return nil, fmt.Errorf("astra: %w", cerr)
		}
		var as *reqstore.AstraStore
		cerr = o.Startup.retry(ctx, "AstraDB (requirements store)", func(ctx context.Context) error {
			var err error
			as, err = reqstore.OpenAstra(ctx, reqstore.AstraConfig{Client: client, Validator: v})
			return err
		})
		if cerr != nil {
			client.Close()
			return nil, fmt.Errorf("open requirements store: %w", cerr)
		}
		store = closeBoth{as, client.Close}
	} else {
		sq, cerr := reqstore.OpenSQLite(ctx, reqstore.SQLiteConfig{Path: filepath.Join(c.DataDir, "requirements.db"), Validator: v})
		if cerr != nil {
			return nil, fmt.Errorf("open requirements store: %w", cerr)
		}
		store = sq
	}
	rp := &requirementsParts{store: store, streams: streams, js: o.JS, jobsKV: o.JobsKV, log: o.Logger}
	if o.Workers {
		rp.worker, err = commands.NewWorker(commands.WorkerConfig{
			JS: o.JS, Streams: streams, Store: store, Key: o.Key, Graph: o.Graph, Validator: v, DrainTimeout: o.Drain, Logger: o.Logger,
		})
		if err != nil {
			rp.close()
			return nil, err
		}
	}
	if o.API {
		rp.client, err = commands.NewClient(commands.ClientConfig{JS: o.JS, Streams: streams, Store: store, Key: o.Key, Graph: o.Graph, Validator: v})
		if err != nil {
			rp.close()
			return nil, err
		}
		rp.events = jobs.NewEventFeed(o.JS)
	}
	return rp, nil
}

// requirementsService is the API's requirements service, nil (no routes) without the API.
func (rp *requirementsParts) requirementsService() httpapi.RequirementsService {
	if rp.client == nil {
		return nil
	}
	return rp.client
}

// eventSource is the API's change feed, nil (no routes) without the API.
func (rp *requirementsParts) eventSource() httpapi.EventSource {
	if rp.events == nil {
		return nil
	}
	return rp.events
}

// run starts the command worker and the job-progress forwarder in p (workers only).
func (rp *requirementsParts) run(p *pool.ContextPool) {
	if rp.worker == nil {
		return
	}
	p.Go(func(ctx context.Context) error { return rp.worker.Run(ctx) })
	p.Go(func(ctx context.Context) error {
		err := jobs.ForwardJobEvents(ctx, rp.js, rp.jobsKV, func(err error) { rp.log.Warn("job progress to the change feed", "err", err) })
		if err != nil && !errors.Is(err, context.Canceled) {
			rp.log.Warn("job progress is not forwarded to the change feed", "err", err)
		}
		return nil // the change feed is best effort; it never stops the workers
	})
}

// close releases the API client and the store.
func (rp *requirementsParts) close() {
	if rp.client != nil {
		_ = rp.client.Close()
	}
	_ = rp.store.Close()
}

// reqStore is a requirements store this process owns and closes.
type reqStore interface {
	requirements.Store
	Close() error
}

// closeBoth closes the store, then the client it does not own.
type closeBoth struct {
	*reqstore.AstraStore
	closeClient func()
}

func (c closeBoth) Close() error {
	err := c.AstraStore.Close()
	c.closeClient()
	return err
}
