package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
)

// startupRetryMax is the longest wait between two tries of a dependency at start-up.
const startupRetryMax = 30 * time.Second

// retryStartup calls open until it succeeds, fails permanently (pipeline/fault: bad
// credentials, a refused configuration), or ctx ends, waiting 1 s doubling to 30 s between
// tries and logging each failure as what it waits for. A store that answers 503 a few times
// while it starts must not end the process: `serve` exited at start-up when AstraDB answered
// 503 three times (issue 11).
func retryStartup(ctx context.Context, log *slog.Logger, what string, open func(context.Context) error) error {
	delay := time.Second
	for {
		err := open(ctx)
		if err == nil || fault.IsPermanent(err) {
			return err
		}
		if ctx.Err() != nil {
			return err
		}
		log.Warn("waiting for "+what, "retry_in", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return err
		}
		delay = min(2*delay, startupRetryMax)
	}
}
