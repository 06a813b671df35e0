// Package embedded runs an in-process nats-server with JetStream file storage under Sluice's
// data directory. It is the broker of the embedded default (DESIGN.md, "Embedded default") and
// of the tests.
//
// The server syncs every write to disk before acknowledging it (SyncAlways): Jepsen showed that
// JetStream's default lazy fsync loses acknowledged messages on power loss (DESIGN.md,
// "Durable means synced"). Config.LazySync is the explicit opt-out.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// URLFile is the file, inside the data directory, that holds the client URL of the running
// embedded server, so that other sluice commands on the same data directory can find it. It
// holds no secret; it is written owner-only all the same (mode 0600).
const URLFile = "nats.url"

// CredentialFile is the file, inside the data directory, that holds the password of User: one
// line, generated on first start, mode 0600. It outlives restarts, so an operator's nats CLI
// context keeps working; delete it (with the server stopped) to rotate it.
const CredentialFile = "nats.password"

// User is the user name clients of the embedded server authenticate as.
const User = "sluice"

// lockFile guards the data directory: two servers on one JetStream store would corrupt it.
const lockFile = "nats.lock"

// ErrLocked is returned by Start when another process runs an embedded server on the same data
// directory. Its URL is in URLFile.
var ErrLocked = errors.New("data directory is in use by another sluice process")

// ErrInsecureCredential is returned by Start and Discover when CredentialFile can be read by
// other users, is not a regular file, or belongs to another user: its password must be
// presumed known, so it is refused rather than silently fixed. The error says how to fix it.
var ErrInsecureCredential = secret.ErrInsecure

// Endpoint is how a client reaches a running embedded server: its URL and credential. It
// formats (%v, %s) as the URL alone, so printing it never shows the password.
type Endpoint struct {
	URL      string
	User     string
	Password secret.String
}

// String returns the URL, without the credential.
func (e Endpoint) String() string { return e.URL }

// LogValue logs the URL, without the credential.
func (e Endpoint) LogValue() slog.Value { return slog.StringValue(e.URL) }

// Config configures the embedded server.
type Config struct {
	// DataDir is the Sluice data directory. JetStream stores under DataDir/jetstream. Required.
	DataDir string
	// Host is the address to listen on. Default 127.0.0.1; the embedded server never listens
	// beyond loopback unless told to.
	Host string
	// Port to listen on. 0 picks a free port (the default); the URL is in URLFile.
	Port int
	// LazySync turns off fsync on every write (JetStream's default of syncing every two
	// minutes). Faster, and loses acknowledged messages on power loss. Optional, default false.
	LazySync bool
	// MaxPayload is the largest message in bytes. Default 1 MiB (nats-server's default).
	MaxPayload int32
	// MaxStore bounds JetStream file storage in bytes. 0 lets the server decide.
	MaxStore int64
	// StartTimeout bounds how long Start waits for the server to accept clients. Default 10 s.
	StartTimeout time.Duration
	// Logger receives the server's warnings and errors. nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = server.RANDOM_PORT
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 1 << 20
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("embedded: DataDir is required"))
	}
	if c.MaxPayload < 0 {
		errs = append(errs, errors.New("embedded: MaxPayload must not be negative"))
	}
	return errors.Join(errs...)
}

// Server is a running embedded nats-server. Stop it with Shutdown.
type Server struct {
	ns       *server.Server
	dataDir  string
	lock     *os.File
	password string
}

// Start starts the server, waits until it accepts clients, and writes its URL to
// DataDir/URLFile. A data directory it creates is mode 0700. Clients must authenticate as User
// with the password in DataDir/CredentialFile, which Start generates if it is missing. It
// returns ErrLocked when another process holds the data directory, and ErrInsecureCredential
// when the credential file is open to other users. The caller must call Shutdown.
func Start(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	lock, err := lockDir(filepath.Join(cfg.DataDir, lockFile))
	if err != nil {
		return nil, err
	}
	password, err := secret.ReadOrCreate(filepath.Join(cfg.DataDir, CredentialFile))
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	// The server keeps only a bcrypt hash. The password is 256 random bits, so the hash's
	// cost adds nothing against guessing: the minimum keeps each connect fast.
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("hash broker credential: %w", err)
	}
	opts := &server.Options{
		// One user, every permission: only Sluice's own processes and its operator hold the
		// credential. HTTPPort stays 0: no monitoring endpoint, which would need no credential.
		Users:                 []*server.User{{Username: User, Password: string(hash)}},
		ServerName:            "sluice-embedded",
		Host:                  cfg.Host,
		Port:                  cfg.Port,
		JetStream:             true,
		StoreDir:              filepath.Join(cfg.DataDir, "jetstream"),
		JetStreamMaxStore:     cfg.MaxStore,
		SyncAlways:            !cfg.LazySync,
		MaxPayload:            cfg.MaxPayload,
		NoSigs:                true,
		DisableShortFirstPing: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("create nats-server: %w", err)
	}
	ns.SetLoggerV2(&slogAdapter{l: cfg.Logger}, false, false, false)
	ns.Start()
	if !ns.ReadyForConnections(cfg.StartTimeout) {
		ns.Shutdown()
		_ = lock.Close()
		return nil, fmt.Errorf("embedded nats-server not ready after %s", cfg.StartTimeout)
	}
	s := &Server{ns: ns, dataDir: cfg.DataDir, lock: lock, password: password}
	if err := writeFileAtomic(filepath.Join(cfg.DataDir, URLFile), []byte(ns.ClientURL()+"\n")); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("record server URL: %w", err)
	}
	return s, nil
}

// ClientURL is the URL clients connect to; they must authenticate (Endpoint).
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Endpoint is the URL and the credential clients connect with.
func (s *Server) Endpoint() Endpoint {
	return Endpoint{URL: s.ns.ClientURL(), User: User, Password: secret.String(s.password)}
}

// NATS returns the underlying server, for tests that need its internals.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server, waits for it to finish, removes the URL file and releases the data
// directory. It is safe to call more than once.
func (s *Server) Shutdown() {
	if s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	_ = os.Remove(filepath.Join(s.dataDir, URLFile))
	_ = s.lock.Close()
	s.ns = nil
}

// Discover returns the endpoint of an embedded server running on dataDir, if one is running:
// the URL file exists and its data directory lock is held. It returns a zero Endpoint (URL "")
// and nil when none runs, and an error (ErrInsecureCredential among them) when one runs but
// its credential cannot be read safely.
func Discover(dataDir string) (Endpoint, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, URLFile))
	if err != nil {
		return Endpoint{}, nil
	}
	// A stale file (a process killed with SIGKILL) leaves the lock free.
	lock, err := lockDir(filepath.Join(dataDir, lockFile))
	if err == nil {
		_ = lock.Close()
		return Endpoint{}, nil
	}
	password, err := secret.Read(filepath.Join(dataDir, CredentialFile))
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{URL: strings.TrimSpace(string(b)), User: User, Password: secret.String(password)}, nil
}

// lockDir takes an exclusive, non-blocking flock on path. The kernel releases it when the
// process dies, so a crashed server never leaves the directory locked.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}

// writeFileAtomic replaces path with data, mode 0600.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*") // mode 0600
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// slogAdapter routes nats-server logs to slog: warnings and errors only.
type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) {}
func (a *slogAdapter) Warnf(format string, v ...any) {
	a.l.Warn("nats-server: " + fmt.Sprintf(format, v...))
}
func (a *slogAdapter) Fatalf(format string, v ...any) {
	a.l.Error("nats-server: " + fmt.Sprintf(format, v...))
}
func (a *slogAdapter) Errorf(format string, v ...any) {
	a.l.Error("nats-server: " + fmt.Sprintf(format, v...))
}
func (a *slogAdapter) Debugf(format string, v ...any) {}
func (a *slogAdapter) Tracef(format string, v ...any) {}
