// Command sluice is the Sluice ingestion pipeline: one binary for the API, the workers, the
// loader and the operator tools. Run "sluice help" for the commands.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	setMemoryLimit(log)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, log))
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("SLUICE_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
