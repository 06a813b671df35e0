// Package deployments_test checks what deployments/ and docker-compose.yml ship, offline: the
// compose file is loaded by the Compose Specification's own loader and schema
// (compose-spec/compose-go), its NATS configuration by nats-server's, and every setting a
// Sluice service is given is checked against the flags and variables of the binary itself.
// No Docker engine runs on the CI machines, so nothing here starts a container.
package deployments_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/dotenv"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
)

const (
	composeFile = "../docker-compose.yml"
	envExample  = "compose.env.example"
)

// exampleEnv returns the variables of compose.env.example, the file users copy to .env, read
// by compose's own .env parser.
func exampleEnv(t *testing.T) map[string]string {
	t.Helper()
	env, err := dotenv.Read(envExample)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// loadCompose loads docker-compose.yml as `docker compose` would with env as its .env and the
// given profiles: interpolated, validated against the Compose Specification schema,
// normalized, and checked for consistency (services, volumes and dependencies that exist).
func loadCompose(t *testing.T, env map[string]string, profiles ...string) (*types.Project, error) {
	t.Helper()
	var list []string
	for k, v := range env {
		list = append(list, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{composeFile},
		cli.WithWorkingDirectory(".."), cli.WithEnv(list),
		cli.WithDiscardEnvFile, cli.WithProfiles(profiles))
	if err != nil {
		t.Fatal(err)
	}
	return cli.ProjectFromOptions(context.Background(), opts)
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	return s
}

// replicas returns how many containers compose runs for s: deploy.replicas, else 1.
func replicas(s types.ServiceConfig) int {
	if s.Deploy == nil || s.Deploy.Replicas == nil {
		return 1
	}
	return *s.Deploy.Replicas
}

func env(s types.ServiceConfig, k string) string {
	if v := s.Environment[k]; v != nil {
		return *v
	}
	return ""
}

// TestComposeStack checks the shape issue 15 asked for: three JetStream servers that publish
// no port, PostgreSQL for the graph, a provisioning step, one API and two workers with health
// checks and restart policies, tokens from the file the user creates.
func TestComposeStack(t *testing.T) {
	p, err := loadCompose(t, exampleEnv(t))
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	if p.Name != "sluice" {
		t.Errorf("project %q: docs/operations.md names its network sluice_default", p.Name)
	}
	names := p.ServiceNames()
	slices.Sort(names)
	want := []string{"api", "nats-1", "nats-2", "nats-3", "postgres", "provision", "worker"}
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v (the dataapi profile's only with --profile dataapi)", names, want)
	}
	for _, s := range p.Services {
		if len(s.Ports) > 0 && s.Name != "api" {
			t.Errorf("%s publishes %v: only the API's port may be open to the host", s.Name, s.Ports)
		}
		if s.Name != "provision" && (s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0) {
			t.Errorf("%s has no health check", s.Name)
		}
		if s.Restart == "" || s.Restart == "no" {
			t.Errorf("%s has no restart policy", s.Name)
		}
	}
	for _, n := range []string{"nats-1", "nats-2", "nats-3"} {
		s := service(t, p, n)
		if s.Image != "nats:2.15.3-alpine" {
			t.Errorf("%s runs %s: Sluice is tested on nats-server 2.15.3", n, s.Image)
		}
		if env(s, "SERVER_NAME") != n || !slices.Equal(s.Command, types.ShellCommand{"-c", "/etc/nats/cluster.conf"}) {
			t.Errorf("%s: SERVER_NAME %q, command %v", n, env(s, "SERVER_NAME"), s.Command)
		}
	}
	api, worker, prov := service(t, p, "api"), service(t, p, "worker"), service(t, p, "provision")
	if len(api.Ports) != 1 || api.Ports[0].Target != 8080 || api.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("api publishes %+v, want 8080 on host loopback by default", api.Ports)
	}
	if n := replicas(api); n != 1 {
		t.Errorf("api replicas %d, want 1", n)
	}
	if n := replicas(worker); n != 2 {
		t.Errorf("worker replicas %d, want 2", n)
	}
	var tokens bool
	for _, v := range api.Volumes {
		if v.Target == env(api, "SLUICE_API_TOKENS_FILE") {
			tokens = filepath.Base(v.Source) == "tokens.json" && v.ReadOnly
		}
	}
	if !tokens {
		t.Errorf("api mounts %+v: want deployments/tokens.json (not the example) read-only at SLUICE_API_TOKENS_FILE", api.Volumes)
	}
	for role, s := range map[string]types.ServiceConfig{"sluice-api": api, "sluice-worker": worker, "sluice-operator": prov} {
		if env(s, "NATS_USER") != role || env(s, "NATS_PASSWORD") == "" {
			t.Errorf("%s connects as %q: want the %s user with its password", s.Name, env(s, "NATS_USER"), role)
		}
		if n := strings.Count(env(s, "NATS_URL"), "nats://nats-"); n != 3 {
			t.Errorf("%s knows %d of the 3 servers: %q", s.Name, n, env(s, "NATS_URL"))
		}
	}
	for _, s := range []types.ServiceConfig{api, worker} {
		if env(s, "SLUICE_PROVISION") != "off" {
			t.Errorf("%s: SLUICE_PROVISION %q, want off (the provision service owns the streams)", s.Name, env(s, "SLUICE_PROVISION"))
		}
		if d, ok := s.DependsOn["provision"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s starts before the streams are provisioned: %+v", s.Name, s.DependsOn)
		}
		if !strings.HasPrefix(env(s, "SLUICE_GRAPH_DSN"), "postgres://") || env(s, "ASTRA_DB_API_ENDPOINT") == "" {
			t.Errorf("%s: graph %q, Data API %q: several processes need shared stores", s.Name, env(s, "SLUICE_GRAPH_DSN"), env(s, "ASTRA_DB_API_ENDPOINT"))
		}
		if !slices.Equal(s.HealthCheck.Test, types.HealthCheckTest{"CMD", "/usr/local/bin/sluice", "health"}) {
			t.Errorf("%s health check %v", s.Name, s.HealthCheck.Test)
		}
	}
	if !slices.Contains(prov.Command, "--stream-replicas") || prov.Command[slices.Index(prov.Command, "--stream-replicas")+1] != "3" {
		t.Errorf("provision runs %v, want --stream-replicas 3", prov.Command)
	}
}

// TestComposeDataAPIProfile: --profile dataapi adds the local Data API, and the workers wait
// for its keyspace; without the profile that dependency is optional, so the stack still starts.
func TestComposeDataAPIProfile(t *testing.T) {
	e := exampleEnv(t)
	e["ASTRA_DB_API_ENDPOINT"], e["ASTRA_DB_API_PATH"] = "http://data-api:8181", "/v1"
	p, err := loadCompose(t, e, "dataapi")
	if err != nil {
		t.Fatalf("load with --profile dataapi: %v", err)
	}
	for _, n := range []string{"hcd", "data-api", "data-api-keyspace"} {
		service(t, p, n)
	}
	w := service(t, p, "worker")
	if d, ok := w.DependsOn["data-api-keyspace"]; !ok || d.Required || d.Condition != types.ServiceConditionCompletedSuccessfully {
		t.Errorf("worker depends on %+v, want the keyspace step, optional", w.DependsOn)
	}
	if env(w, "ASTRA_DB_API_PATH") != "/v1" {
		t.Errorf("worker Data API path %q, want /v1 for a self-hosted Data API", env(w, "ASTRA_DB_API_PATH"))
	}
}

// Every secret must come from .env: a missing one stops compose with a message naming it, and
// the example's values are placeholders Sluice refuses (cmd/sluice
// TestExamplePlaceholdersRefused, httpapi TestExampleTokensRefused).
func TestComposeSecretsRequired(t *testing.T) {
	full := exampleEnv(t)
	for k, v := range full {
		if !strings.HasPrefix(v, "change-me") && !strings.HasPrefix(k, "ASTRA_DB_API_ENDPOINT") {
			t.Errorf("%s: %s=%q is not a change-me placeholder", envExample, k, v)
		}
	}
	for k := range full {
		e := exampleEnv(t)
		delete(e, k)
		if _, err := loadCompose(t, e); err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("without %s: err = %v, want it named", k, err)
		}
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// sluiceBin builds the sluice binary once for the package's tests.
func sluiceBin(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-deployments-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/sluice").CombinedOutput()
		if err != nil {
			buildErr = &buildError{out: string(out), err: err}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build ./cmd/sluice: " + e.err.Error() + "\n" + e.out }

// envOnly are the variables the binary reads that no flag mirrors: secrets, kept out of ps,
// and the logger's settings, read before the command line is.
var envOnly = []string{"NATS_PASSWORD", "ASTRA_DB_APPLICATION_TOKEN", "SLUICE_COMMAND_KEY", "SLUICE_LOG_LEVEL", "SLUICE_LOG_FORMAT"}

var envRE = regexp.MustCompile(`\[\$([A-Z0-9_]+)\]`)

// TestComposeSettingsAreSluices runs each Sluice service's command line through the binary
// (with --help, so nothing starts) and checks that every variable the service sets is one the
// command reads: a renamed flag or a typo would otherwise be ignored silently in production.
func TestComposeSettingsAreSluices(t *testing.T) {
	bin := sluiceBin(t)
	p, err := loadCompose(t, exampleEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"api", "worker", "provision"} {
		s := service(t, p, n)
		out, err := exec.Command(bin, append(slices.Clone(s.Command), "--help")...).CombinedOutput()
		if err != nil {
			t.Errorf("%s: sluice %v --help: %v\n%s", n, s.Command, err, out)
			continue
		}
		known := slices.Clone(envOnly)
		for _, m := range envRE.FindAllStringSubmatch(string(out), -1) {
			known = append(known, m[1])
		}
		for k := range s.Environment {
			if !slices.Contains(known, k) {
				t.Errorf("%s sets %s, which `sluice %s` does not read", n, k, s.Command[0])
			}
		}
	}
}

// TestNATSClusterConfig loads deployments/nats/cluster.conf with nats-server's own parser,
// checks the cluster, fsync and accounts, and then runs it (alone, on loopback, its routes
// dropped) to check that the Sluice users share one JetStream and that a wrong
// password is refused.
func TestNATSClusterConfig(t *testing.T) {
	t.Setenv("SERVER_NAME", "nats-1")
	pw := map[string]string{}
	for _, role := range []string{"API", "WORKER", "LOADER", "OPERATOR", "SYS"} {
		pw[role] = "pw-" + strings.ToLower(role) + "-0123456789abcdef"
		t.Setenv("SLUICE_NATS_"+role+"_PASSWORD", pw[role])
	}
	opts, err := server.ProcessConfigFile("nats/cluster.conf")
	if err != nil {
		t.Fatalf("load nats/cluster.conf: %v", err)
	}
	if !opts.JetStream || !opts.SyncAlways || opts.MaxPayload != 1<<20 {
		t.Errorf("jetstream %v, sync always %v, max payload %d", opts.JetStream, opts.SyncAlways, opts.MaxPayload)
	}
	if opts.Cluster.Name != "sluice" || len(opts.Routes) != 3 || opts.ServerName != "nats-1" {
		t.Errorf("cluster %q with %d routes, server %q", opts.Cluster.Name, len(opts.Routes), opts.ServerName)
	}
	if opts.SystemAccount != "SYS" {
		t.Errorf("system account %q, want SYS", opts.SystemAccount)
	}
	users := map[string]string{}
	for _, u := range opts.Users {
		if u.Account != nil {
			users[u.Username] = u.Account.Name
		}
	}
	// The roles are permissions.conf's, as tested in sources/jetstream, in the global
	// account (which KEDA's scaler names); the administrator alone is in SYS.
	roles, err := server.ProcessConfigFile("nats/permissions.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(roles.Users) != 4 {
		t.Fatalf("permissions.conf has %d users, want 4", len(roles.Users))
	}
	for _, r := range roles.Users {
		var u *server.User
		for _, c := range opts.Users {
			if c.Username == r.Username {
				u = c
			}
		}
		if u == nil || !reflect.DeepEqual(u.Permissions, r.Permissions) {
			t.Errorf("user %s: not in cluster.conf with permissions.conf's permissions", r.Username)
		}
	}
	if users["sys"] != "SYS" {
		t.Errorf("user sys in account %q, want SYS", users["sys"])
	}

	ns := embeddedtest.StartConfigured(t, "nats/cluster.conf", func(o *server.Options) {
		o.Routes, o.Cluster.Port, o.Cluster.Name, o.HTTPPort = nil, 0, "", 0
	})
	connect := func(user, pass string) (*nats.Conn, error) {
		return nats.Connect(ns.ClientURL(), nats.UserInfo(user, pass), nats.MaxReconnects(0))
	}
	if nc, err := connect("sluice-api", "wrong-password"); err == nil {
		nc.Close()
		t.Fatal("a wrong password was accepted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	op, err := connect("sluice-operator", pw["OPERATOR"])
	if err != nil {
		t.Fatal(err)
	}
	defer op.Close()
	js, _ := jetstream.New(op)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SLUICE_CHUNKS", Subjects: []string{"sluice.v1.chunks.*"}}); err != nil {
		t.Fatalf("the operator cannot create a stream: %v", err)
	}
	api, err := connect("sluice-api", pw["API"])
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()
	ajs, _ := jetstream.New(api)
	if _, err := ajs.Stream(ctx, "SLUICE_CHUNKS"); err != nil {
		t.Fatalf("the API user does not see the operator's stream (another account?): %v", err)
	}
	sys, err := connect("sys", pw["SYS"])
	if err != nil {
		t.Fatalf("the system user: %v", err)
	}
	sys.Close()
}
