// Package jetstream connects Sluice to NATS JetStream: the connection, idempotent provisioning
// of streams, consumers and the job KV bucket, an atomic-batch publisher, and a Watermill
// subscriber over a durable pull consumer that pulls only for free processing slots.
package jetstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// ConnConfig configures a NATS connection. Secrets in it are never logged: Password is a
// secret.String.
type ConnConfig struct {
	// URL of the NATS server(s), comma-separated. Required.
	URL string
	// Name is the client name the server shows. Default "sluice".
	Name string
	// CredsFile is a NATS credentials file (JWT + NKey seed). Optional.
	CredsFile string
	// NKeyFile is an NKey seed file. Optional.
	NKeyFile string
	// User and Password for user/password authentication. Optional.
	User     string
	Password secret.String
	// CAFile, CertFile and KeyFile configure TLS: a CA to trust, and a client certificate.
	// Optional; CertFile and KeyFile go together.
	CAFile, CertFile, KeyFile string
	// ConnectTimeout bounds the first connection, retried with backoff until it passes.
	// Default 30 s.
	ConnectTimeout time.Duration
	// Logger receives disconnect and reconnect events. nil discards them.
	Logger *slog.Logger
}

// Validate reports every problem with the configuration.
func (c ConnConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("nats: URL is required"))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("nats: CertFile and KeyFile must be set together"))
	}
	if c.CredsFile != "" && c.NKeyFile != "" {
		errs = append(errs, errors.New("nats: set CredsFile or NKeyFile, not both"))
	}
	return errors.Join(errs...)
}

// Connect opens a connection that reconnects forever with backoff and jitter, so a broker
// restart never ends a worker. The first connection is retried until ConnectTimeout or ctx
// ends. The caller owns the connection and must Close (or Drain) it.
func Connect(ctx context.Context, cfg ConnConfig) (*nats.Conn, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "sluice"
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return backoff(attempts, 100*time.Millisecond, 5*time.Second)
		}),
		nats.ReconnectBufSize(8 << 20),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats: read nkey seed: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, string(cfg.Password)))
	}
	if cfg.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.CAFile))
	}
	if cfg.CertFile != "" {
		opts = append(opts, nats.ClientCert(cfg.CertFile, cfg.KeyFile))
	}
	deadline := time.Now().Add(cfg.ConnectTimeout)
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.URL, opts...)
		if err == nil {
			return nc, nil
		}
		// Authentication and TLS setup errors will not pass on a retry.
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to nats: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect to nats: %w", ctx.Err())
		case <-time.After(backoff(attempt, 100*time.Millisecond, 2*time.Second)):
		}
	}
}

// backoff is exponential from base, capped at max, with full jitter on the upper half.
func backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(jitter(int64(d/2)+1))
}
