package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// permissionsConf is the per-role permissions file shipped for external brokers and
// documented in docs/operations.md: the test runs it as it is.
const permissionsConf = "../../deployments/nats/permissions.conf"

// startExternal runs a nats-server configured from permissionsConf plus JetStream, as an
// external broker would be, and returns its URL.
func startExternal(t *testing.T) string {
	t.Helper()
	for _, role := range []string{"API", "WORKER", "LOADER", "OPERATOR"} {
		t.Setenv("SLUICE_NATS_"+role+"_PASSWORD", "pw-"+role+"-0123456789abcdef")
	}
	opts, err := server.ProcessConfigFile(permissionsConf)
	if err != nil {
		t.Fatalf("load %s: %v", permissionsConf, err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return ns.ClientURL()
}

// connectAs connects as role and returns the connection's JetStream context and a channel of
// the permission violations the server reported to it.
func connectAs(t *testing.T, url, role string) (jetstream.JetStream, <-chan error) {
	t.Helper()
	violations := make(chan error, 16)
	pw := map[string]string{"api": "API", "worker": "WORKER", "loader": "LOADER", "operator": "OPERATOR"}[role]
	nc, err := nats.Connect(url, nats.UserInfo("sluice-"+role, "pw-"+pw+"-0123456789abcdef"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case violations <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js, violations
}

// publishDenied publishes m as a JetStream publish and expects it refused: no ack, and the
// server reporting a permissions violation.
func publishDenied(t *testing.T, js jetstream.JetStream, violations <-chan error, m *nats.Msg) {
	t.Helper()
	// A refused publish is never acknowledged; the ack wait only needs to outlast the
	// server's violation report, which comes at once.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := js.PublishMsg(ctx, m); err == nil {
		t.Fatalf("publish on %s was acknowledged", m.Subject)
	}
	select {
	case err := <-violations:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("publish on %s: %v, want a permissions violation", m.Subject, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("publish on %s: no permissions violation reported", m.Subject)
	}
}

// The permissions documented per role hold on a real server: Sluice's API and worker roles
// can provision and do their work; a loader can publish chunks but cannot purge the dead
// letters, delete a stream, read a stream or publish commands; a worker cannot purge the
// dead letters or publish commands.
func TestRolePermissions(t *testing.T) {
	url := startExternal(t)
	ctx := context.Background()
	api, _ := connectAs(t, url, "api")
	p, err := sjs.Provision(ctx, api, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatalf("provision as sluice-api: %v", err)
	}
	cs, err := sjs.ProvisionCommands(ctx, api, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatalf("provision commands as sluice-api: %v", err)
	}
	worker, workerViolations := connectAs(t, url, "worker")
	if _, err := sjs.Provision(ctx, worker, sjs.ProvisionConfig{}); err != nil {
		t.Fatalf("provision as sluice-worker: %v", err)
	}
	if _, err := sjs.ProvisionCommands(ctx, worker, sjs.ProvisionConfig{}); err != nil {
		t.Fatalf("provision commands as sluice-worker: %v", err)
	}
	// One dead letter the loader must not be able to remove (written as a worker would).
	if _, err := worker.Publish(ctx, schemas.DLQSubject(schemas.ChunkSubject("dev")), []byte(`{}`)); err != nil {
		t.Fatalf("dead letter as sluice-worker: %v", err)
	}
	// The API publishes commands.
	if _, err := api.Publish(ctx, schemas.FeatureSubject("FR-1"), []byte(`{}`)); err != nil {
		t.Fatalf("command as sluice-api: %v", err)
	}

	loader, violations := connectAs(t, url, "loader")
	for _, subj := range []string{schemas.ChunkSubject("dev"), schemas.JobSubject("dev"), schemas.GraphSubject("dev")} {
		if _, err := loader.Publish(ctx, subj, []byte(`{}`)); err != nil {
			t.Fatalf("publish on %s as sluice-loader: %v", subj, err)
		}
	}
	if n := msgs(t, p.Chunks); n != 1 {
		t.Fatalf("%d chunk messages, want the loader's 1", n)
	}
	for _, tc := range []struct{ name, subject string }{
		{"purge the dead letters", "$JS.API.STREAM.PURGE." + schemas.StreamDLQ},
		{"delete a dead letter", "$JS.API.STREAM.MSG.DELETE." + schemas.StreamDLQ},
		{"delete a stream", "$JS.API.STREAM.DELETE." + schemas.StreamDLQ},
		{"read a stream", "$JS.API.STREAM.MSG.GET." + schemas.StreamDLQ},
		{"publish a command", schemas.FeatureSubject("FR-2")},
		{"publish a requirements command", schemas.RequirementSubject("requirements")},
		{"publish a dead letter", schemas.DLQSubject(schemas.ChunkSubject("dev"))},
		{"write a job record", "$KV." + sjs.BucketJobs + ".jforged"},
	} {
		t.Run("loader cannot "+tc.name, func(t *testing.T) {
			m := nats.NewMsg(tc.subject)
			m.Data = []byte(`{"seq":1}`)
			publishDenied(t, loader, violations, m)
		})
	}
	for _, tc := range []struct{ name, subject string }{
		{"purge the dead letters", "$JS.API.STREAM.PURGE." + schemas.StreamDLQ},
		{"publish a command", schemas.FeatureSubject("FR-3")},
		{"load chunks", schemas.ChunkSubject("dev")},
	} {
		t.Run("worker cannot "+tc.name, func(t *testing.T) {
			m := nats.NewMsg(tc.subject)
			m.Data = []byte(`{}`)
			publishDenied(t, worker, workerViolations, m)
		})
	}
	checkRoleOutcome(t, url, p, cs)
}

// checkRoleOutcome checks what TestRolePermissions left: the dead letter, the API's one
// command and the loader's one chunk alone; then that the operator may purge the dead letters.
func checkRoleOutcome(t *testing.T, url string, p *sjs.Provisioned, cs *sjs.CommandStreams) {
	ctx := context.Background()
	// The real outcome: the dead letter is still there, the only command is the API's, and
	// the loader's one chunk is the only chunk.
	if n := msgs(t, p.DLQ); n != 1 {
		t.Errorf("%d dead letters, want 1", n)
	}
	if n := msgs(t, cs.Commands); n != 1 {
		t.Errorf("%d commands, want the API's 1", n)
	}
	if n := msgs(t, p.Chunks); n != 1 {
		t.Errorf("%d chunks, want 1", n)
	}
	// The operator may do anything, purging the dead letters included.
	op, _ := connectAs(t, url, "operator")
	dlq, err := op.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if err := dlq.Purge(ctx); err != nil {
		t.Fatalf("purge as sluice-operator: %v", err)
	}
	if n := msgs(t, p.DLQ); n != 0 {
		t.Errorf("%d dead letters after the operator's purge", n)
	}
}

func msgs(t *testing.T, s jetstream.Stream) uint64 {
	t.Helper()
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(fmt.Errorf("stream info: %w", err))
	}
	return info.State.Msgs
}
