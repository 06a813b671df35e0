package main

// Configuration: every flag and environment variable the commands read, here only. Packages
// get plain structs built from them; the secrets come from the environment only (a flag would
// show in ps).

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra/dataapi"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/client"
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
	// GraphDSN is the graph store: an SQLite path or a postgres:// DSN (whose password never
	// shows: a secret.DSN).
	GraphDSN secret.DSN
	// CommandKey (SLUICE_COMMAND_KEY, never a flag) or CommandKeyFile is the key the API
	// signs commands and rollbacks with and the workers verify them with; without either,
	// command.key in the data directory (created on first use).
	CommandKey     secret.String
	CommandKeyFile string
	// DrainTimeout (serve, worker, api) is how long in-flight work may take on shutdown.
	DrainTimeout time.Duration
	// OpsAddr (serve, worker, api) is the ops listener's address (/healthz, /readyz,
	// /metrics without a token); "" or "off" turns it off.
	OpsAddr string
	// Provision is --provision and the --stream-* flags (serve, worker, api, load; provision.go).
	Provision provisionFlags
}

// bindCommon registers the flags every command that opens the broker or the stores shares,
// each mirrored by its environment variable (applyEnv). The secrets are read from the
// environment only: a flag would show in ps.
func bindCommon(fs *pflag.FlagSet, c *config) {
	bindStrings(fs, []stringFlag{
		{&c.DataDir, "data-dir", "SLUICE_DATA_DIR", "./.sluice", "data directory of the embedded broker and stores"},
		{&c.NATS.URL, "nats-url", "NATS_URL", "", "external NATS server; empty runs the embedded one (password from $NATS_PASSWORD)"},
		{&c.NATS.CredsFile, "nats-creds", "NATS_CREDS", "", "NATS credentials file"},
		{&c.NATS.User, "nats-user", "NATS_USER", "", "NATS user"},
		{&c.NATS.CAFile, "nats-ca", "NATS_CA", "", "CA file for NATS TLS"},
		{&c.NATS.CertFile, "nats-cert", "NATS_CERT", "", "client certificate for NATS TLS"},
		{&c.NATS.KeyFile, "nats-key", "NATS_KEY", "", "client key for NATS TLS"},
		{&c.Astra.Endpoint, "astra-endpoint", "ASTRA_DB_API_ENDPOINT", "", "AstraDB Data API endpoint; empty uses the embedded store (token from $ASTRA_DB_APPLICATION_TOKEN)"},
		{&c.Astra.Keyspace, "astra-keyspace", "ASTRA_DB_KEYSPACE", "default_keyspace", "AstraDB keyspace"},
		{&c.Astra.APIPath, "astra-api-path", "ASTRA_DB_API_PATH", "/api/json/v1", "Data API path before the keyspace: /api/json/v1 on AstraDB, /v1 on a self-hosted Data API (HCD, DSE)"},
		{&c.CommandKeyFile, "command-key-file", "SLUICE_COMMAND_KEY_FILE", "", "key file the API signs commands and rollbacks with and workers verify them with; default command.key in the data directory (or the key itself in $SLUICE_COMMAND_KEY)"},
		{(*string)(&c.GraphDSN), "graph-dsn", "SLUICE_GRAPH_DSN", "", "graph store: SQLite path or postgres:// DSN; default graph.db in the data directory"},
	})
	fs.BoolVar(&c.LazySync, "lazy-fsync", false, "embedded broker: fsync lazily (faster; loses acknowledged messages on power loss)")
	bindEnv(fs, "lazy-fsync", "SLUICE_LAZY_FSYNC")
	fs.BoolVar(&c.AstraVector, "astra-vector", false, "AstraDB: create vector collections and store embeddings as $vector")
	bindEnv(fs, "astra-vector", "SLUICE_ASTRA_VECTOR")
	// Never flags: they would show in ps.
	c.NATS.Password = secret.String(envOr("NATS_PASSWORD", ""))
	c.Astra.Token = secret.String(envOr("ASTRA_DB_APPLICATION_TOKEN", ""))
	c.CommandKey = secret.String(envOr("SLUICE_COMMAND_KEY", ""))
}

// stringFlag is a string flag mirrored by an environment variable.
type stringFlag struct {
	p                    *string
	name, env, def, help string
}

// bindStrings registers each flag of flags and binds it to its variable (bindEnv).
func bindStrings(fs *pflag.FlagSet, flags []stringFlag) {
	for _, f := range flags {
		fs.StringVar(f.p, f.name, f.def, f.help)
		bindEnv(fs, f.name, f.env)
	}
}

// bindServe registers the flags of serve, worker and api: bindCommon's, the API's address,
// tokens and abuse limits, and the drain timeout.
func bindServe(fs *pflag.FlagSet, c *config) *apiLimitFlags {
	bindCommon(fs, c)
	bindStrings(fs, []stringFlag{
		{&c.HTTPAddr, "http-addr", "SLUICE_HTTP_ADDR", "127.0.0.1:8080", "HTTP API address"},
		{&c.OpsAddr, "ops-addr", "SLUICE_OPS_ADDR", httpapi.DefaultOpsAddr, `ops listener: /healthz, /readyz and /metrics without a token; "off" turns it off`},
		{&c.TokensFile, "tokens-file", "SLUICE_API_TOKENS_FILE", "", "JSON list of API tokens; without it the API serves loopback only"},
	})
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 30*time.Second, "how long in-flight work may take to finish on shutdown")
	bindEnv(fs, "drain-timeout", "SLUICE_DRAIN_TIMEOUT")
	bindProvision(fs, &c.Provision)
	return bindAPILimits(fs)
}

// parseLogLevel reads SLUICE_LOG_LEVEL's value: empty is info; debug, info, warn and error
// (any case, with slog's offsets such as warn+2) are taken; anything else is refused — it
// silently became info, and an operator asking for debug logs during an incident got none
// without a word (issue 16).
func parseLogLevel(v string) (slog.Level, error) {
	if strings.TrimSpace(v) == "" {
		return slog.LevelInfo, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
		return slog.LevelInfo, usageError{fmt.Sprintf("SLUICE_LOG_LEVEL %q: want debug, info, warn or error", v)}
	}
	return l, nil
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && v != "" {
		return v
	}
	return def
}

// envAnnotation is the pflag annotation naming the environment variable that mirrors a flag.
const envAnnotation = "sluice_env"

// bindEnv ties flag name of fs to the environment variable env: its help text names the
// variable ("[$ENV]"), and applyEnv gives the flag the variable's value when the command line
// does not. The flag must exist.
func bindEnv(fs *pflag.FlagSet, name, env string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag --" + name) // a programming error, caught by every test run
	}
	f.Usage += " [$" + env + "]"
	_ = fs.SetAnnotation(name, envAnnotation, []string{env})
}

// applyEnv sets every flag of fs that is bound to an environment variable, not given on the
// command line, and whose variable is set and not empty, to the variable's value, parsed as
// the flag would parse it. A value the flag refuses is a usage error naming the variable.
func applyEnv(fs *pflag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		names := f.Annotations[envAnnotation]
		if f.Changed || len(names) == 0 {
			return
		}
		v := os.Getenv(names[0])
		if v == "" {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %w", names[0], v, err))
		}
	})
	if err := errors.Join(errs...); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

// apiLimitFlags are the API's abuse limits as given (flags, defaulting to their env vars);
// parse checks them. Zero values mean httpapi's defaults.
type apiLimitFlags struct {
	bodyTimeout, graphTimeout *time.Duration
	maxConns, feedsPerToken   *int
	spoolBytes                *int64
	rateLimits                *string
	trustedOrigins            *[]string
}

func bindAPILimits(fs *pflag.FlagSet) *apiLimitFlags {
	f := &apiLimitFlags{
		bodyTimeout:   fs.Duration("api-body-timeout", 0, "longest wait for a request body's next bytes, before authentication too; 0 means 1m"),
		graphTimeout:  fs.Duration("api-graph-timeout", 0, "deadline of each graph read, 503 past it; 0 means 10s"),
		maxConns:      fs.Int("api-max-conns", 0, "open client connections at most, 503 past it; 0 means 1024"),
		feedsPerToken: fs.Int("api-feeds-per-token", 0, "open change feeds per token at most, 429 past it; 0 means 16"),
		spoolBytes:    fs.Int64("api-spool-bytes", 0, "upload bytes received at once over all uploads, 503 past it; 0 means 4 GiB"),
		rateLimits:    fs.String("api-rate-limits", "", "per-token rates, class=rate[:burst] for uploads, graph, replay, feeds, or class=off; default uploads=2:10,graph=20:40,replay=1:5,feeds=5:20"),
		trustedOrigins: fs.StringSlice("api-trusted-origins", nil,
			"browser origins (scheme://host[:port], comma-separated) allowed to send state-changing requests across origins; default none"),
	}
	for flag, env := range map[string]string{
		"api-body-timeout": "SLUICE_API_BODY_TIMEOUT", "api-graph-timeout": "SLUICE_API_GRAPH_TIMEOUT",
		"api-max-conns": "SLUICE_API_MAX_CONNS", "api-feeds-per-token": "SLUICE_API_FEEDS_PER_TOKEN",
		"api-spool-bytes": "SLUICE_API_SPOOL_BYTES", "api-rate-limits": "SLUICE_API_RATE_LIMITS",
		"api-trusted-origins": "SLUICE_API_TRUSTED_ORIGINS",
	} {
		bindEnv(fs, flag, env)
	}
	return f
}

func (f *apiLimitFlags) parse() (httpapi.Config, error) {
	var errs []error
	for name, d := range map[string]time.Duration{"--api-body-timeout": *f.bodyTimeout, "--api-graph-timeout": *f.graphTimeout} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", name, d))
		}
	}
	for name, n := range map[string]int64{"--api-max-conns": int64(*f.maxConns), "--api-feeds-per-token": int64(*f.feedsPerToken), "--api-spool-bytes": *f.spoolBytes} {
		if n < 0 {
			errs = append(errs, fmt.Errorf("%s %d is negative", name, n))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return httpapi.Config{}, err
	}
	rl, err := httpapi.ParseRateLimits(*f.rateLimits)
	if err != nil {
		return httpapi.Config{}, err
	}
	var origins []string
	for _, o := range *f.trustedOrigins {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if err := http.NewCrossOriginProtection().AddTrustedOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("--api-trusted-origins: %w", err))
		}
		origins = append(origins, o)
	}
	if err := errors.Join(errs...); err != nil {
		return httpapi.Config{}, err
	}
	return httpapi.Config{
		BodyIdleTimeout: *f.bodyTimeout, GraphTimeout: *f.graphTimeout, MaxConns: *f.maxConns,
		MaxFeedsPerToken: *f.feedsPerToken, MaxSpoolBytes: *f.spoolBytes, RateLimits: rl,
		TrustedOrigins: origins,
	}, nil
}

// apiFlags are the flags every command that talks to the API shares (persistent on jobs and
// dlq, so they may come anywhere on the line).
type apiFlags struct {
	url    string
	asJSON bool
}

func bindAPIFlags(fs *pflag.FlagSet, f *apiFlags) {
	fs.StringVar(&f.url, "api-url", client.DefaultURL, "URL of the sluice API (the token comes from $SLUICE_TOKEN)")
	bindEnv(fs, "api-url", "SLUICE_API_URL")
	fs.BoolVar(&f.asJSON, "json", false, "print JSON")
}

// apiEnvHelp ends the help of the commands that talk to the API.
const apiEnvHelp = `

Talks to a running sluice API: --api-url or SLUICE_API_URL (default ` + client.DefaultURL + `),
the bearer token from SLUICE_TOKEN. An answer 429 or 503 is waited out (Retry-After) and the
request sent again, up to 8 times.`

// client is a client of the API the flags name, for c's command (waiting messages on its
// stderr).
func (f *apiFlags) client(c *cli) (*client.Client, error) { return newAPIClient(f.url, c.stderr) }

// bindPaging registers --limit (def per page) and --cursor of a listing of noun.
func bindPaging(cmd *cobra.Command, limit *int, cursor *string, def int, noun string) {
	cmd.Flags().IntVar(limit, "limit", def, noun+" per page (1 to 1000)")
	cmd.Flags().StringVar(cursor, "cursor", "", "page cursor from a previous listing")
	_ = cmd.RegisterFlagCompletionFunc("limit", cobra.NoFileCompletions)
	_ = cmd.RegisterFlagCompletionFunc("cursor", cobra.NoFileCompletions)
}

// get GETs path with q from the API the flags name into out and, with --json, prints out;
// printed reports that it did, so the caller prints nothing more.
func (f *apiFlags) get(c *cli, path string, q url.Values, out any) (printed bool, err error) {
	api, err := f.client(c)
	if err != nil {
		return false, err
	}
	if err := api.Do(c.ctx, "GET", path, q, nil, out); err != nil {
		return false, err
	}
	if f.asJSON {
		return true, printJSON(c.stdout, out)
	}
	return false, nil
}

// newAPIClient is a client of the API at base for the operator commands, with the token from
// SLUICE_TOKEN (never printed); waiting messages go to waits.
func newAPIClient(base string, waits io.Writer) (*client.Client, error) {
	return client.New(client.Config{URL: base, Token: secret.String(envOr("SLUICE_TOKEN", "")), Waits: waits})
}
