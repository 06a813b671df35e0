package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// startupRetryMax is the longest wait between two tries of a dependency at start-up.
const startupRetryMax = 30 * time.Second

// startup says what start-up is doing: in the log, in GET /readyz of the ops listener and,
// when this process serves the API, of the starting server that holds the API's port
// meanwhile. The zero value logs nowhere and reports nothing.
type startup struct {
	log *slog.Logger
	// api is the starting API server; nil without the API.
	api *httpapi.Starting
	// ops is the ops listener; nil when it is off.
	ops *httpapi.Ops
}

// step reports that start-up now does what ("opening the graph store").
func (s startup) step(what string) {
	if s.api != nil {
		s.api.Report(what)
	}
	if s.ops != nil {
		s.ops.Report(what)
	}
}

// retry calls open until it succeeds, fails permanently (pipeline/fault: bad credentials, a
// refused configuration), or ctx ends, waiting 1 s doubling to 30 s between tries and
// reporting each failure as what it waits for (log and /readyz). A store that answers 503 a
// few times while it starts must not end the process: `serve` exited at start-up when AstraDB
// answered 503 three times (issue 11). The errors reported must hold no secret: /readyz shows
// them to anyone (the store clients' errors name the endpoint and status, never the token).
func (s startup) retry(ctx context.Context, what string, open func(context.Context) error) error {
	s.step("opening " + what)
	delay := time.Second
	for {
		err := open(ctx)
		if err == nil || fault.IsPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		if s.log != nil {
			s.log.Warn("waiting for "+what, "retry_in", delay, "err", err)
		}
		s.step(fmt.Sprintf("waiting for %s (next try in %s): %v", what, delay, err))
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return err
		}
		delay = min(2*delay, startupRetryMax)
	}
}
