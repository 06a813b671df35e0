package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
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
	return embeddedtest.StartConfigured(t, permissionsConf, nil).ClientURL()
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

// The permissions documented per role hold on a real server (issue 15: every client needed
// stream-admin permission). The operator provisions; the API and a worker, with --provision
// off, look everything up and do their work: publish a job's chunk, pull and ack it, write job
// progress and watch it, dead-letter with a stored original, read the dead letters and the
// change feed, reclaim the chunk stream. No role but the operator may create, update or delete
// a stream or a durable consumer; a loader can publish chunks but cannot purge the dead
// letters, delete a stream, read a stream or publish commands; a worker cannot purge the dead
// letters or publish commands.
func TestRolePermissions(t *testing.T) {
	url := startExternal(t)
	ctx := context.Background()
	op, _ := connectAs(t, url, "operator")
	if _, err := sjs.ProvisionAll(ctx, op, sjs.ProvisionConfig{Mode: sjs.ModeProvision}); err != nil {
		t.Fatalf("provision as sluice-operator: %v", err)
	}
	api, apiViolations := connectAs(t, url, "api")
	p, cs := lookUpAs(t, api, "sluice-api")
	worker, workerViolations := connectAs(t, url, "worker")
	wp, _ := lookUpAs(t, worker, "sluice-worker")
	drainAs(t, api, worker, p, wp)
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
		t.Fatalf("%d chunk messages, want the loader's 1 (the drained one reclaimed)", n)
	}
	for _, tc := range []struct{ name, subject string }{
		{"purge the dead letters", "$JS.API.STREAM.PURGE." + schemas.StreamDLQ},
		{"delete a dead letter", "$JS.API.STREAM.MSG.DELETE." + schemas.StreamDLQ},
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
		{"purge the job stream", "$JS.API.STREAM.PURGE." + schemas.StreamJobs},
		{"publish a command", schemas.FeatureSubject("FR-3")},
		{"load chunks", schemas.ChunkSubject("dev")},
	} {
		t.Run("worker cannot "+tc.name, func(t *testing.T) {
			m := nats.NewMsg(tc.subject)
			m.Data = []byte(`{}`)
			publishDenied(t, worker, workerViolations, m)
		})
	}
	roles := []struct {
		name       string
		js         jetstream.JetStream
		violations <-chan error
	}{{"api", api, apiViolations}, {"worker", worker, workerViolations}, {"loader", loader, violations}}
	for _, role := range roles {
		for _, tc := range streamAdmin() {
			t.Run(role.name+" cannot "+tc.name, func(t *testing.T) {
				m := nats.NewMsg(tc.subject)
				m.Data = []byte(tc.body)
				publishDenied(t, role.js, role.violations, m)
			})
		}
	}
	checkRoleOutcome(t, url, p, cs)
}

// streamAdmin lists the stream and durable-consumer administration no role but the
// operator may do, as JetStream API requests.
func streamAdmin() []struct{ name, subject, body string } {
	chunks := `{"name":"SLUICE_CHUNKS","subjects":["sluice.v1.chunks.*"],"max_bytes":1}`
	durable := `{"stream_name":"SLUICE_CHUNKS","config":{"durable_name":"mine","ack_policy":"explicit"}}`
	var out []struct{ name, subject, body string }
	for _, s := range []string{schemas.StreamChunks, schemas.StreamDLQ, sjs.StreamCommands, "KV_" + sjs.BucketJobs} {
		out = append(out,
			struct{ name, subject, body string }{"create stream " + s, "$JS.API.STREAM.CREATE." + s, chunks},
			struct{ name, subject, body string }{"update stream " + s, "$JS.API.STREAM.UPDATE." + s, chunks},
			struct{ name, subject, body string }{"delete stream " + s, "$JS.API.STREAM.DELETE." + s, `{}`})
	}
	return append(out,
		struct{ name, subject, body string }{"create a durable consumer", "$JS.API.CONSUMER.CREATE.SLUICE_CHUNKS.mine", durable},
		struct{ name, subject, body string }{"create a durable consumer (legacy)", "$JS.API.CONSUMER.DURABLE.CREATE.SLUICE_CHUNKS.mine", durable},
		struct{ name, subject, body string }{"update the chunk consumer", "$JS.API.CONSUMER.CREATE.SLUICE_CHUNKS.sluice-chunks", `{"stream_name":"SLUICE_CHUNKS","config":{"durable_name":"sluice-chunks","ack_policy":"explicit","max_ack_pending":1}}`},
		struct{ name, subject, body string }{"delete the chunk consumer", "$JS.API.CONSUMER.DELETE.SLUICE_CHUNKS.sluice-chunks", `{}`},
		struct{ name, subject, body string }{"delete a command consumer", "$JS.API.CONSUMER.DELETE.SLUICE_COMMANDS." + sjs.CommandConsumerName(0), `{}`},
		struct{ name, subject, body string }{"create a stream of its own", "$JS.API.STREAM.CREATE.MINE", `{"name":"MINE","subjects":["mine.>"]}`},
	)
}

// lookUpAs runs every provisioning of a Sluice process with --provision off as role: only
// look-ups, which the role may make.
func lookUpAs(t *testing.T, js jetstream.JetStream, role string) (*sjs.Provisioned, *sjs.CommandStreams) {
	t.Helper()
	ctx := context.Background()
	off := sjs.ProvisionConfig{Mode: sjs.ModeOff}
	if _, err := sjs.ProvisionAll(ctx, js, off); err != nil {
		t.Fatalf("look up everything as %s: %v", role, err)
	}
	p, err := sjs.Provision(ctx, js, off)
	if err != nil {
		t.Fatalf("look up as %s: %v", role, err)
	}
	cs, err := sjs.ProvisionCommands(ctx, js, off)
	if err != nil {
		t.Fatalf("look up commands as %s: %v", role, err)
	}
	if _, err := sjs.ProvisionAdvisories(ctx, js, off, nil); err != nil {
		t.Fatalf("look up advisories as %s: %v", role, err)
	}
	// The default mode, on what exists, only looks up too.
	if _, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatalf("default mode on provisioned streams as %s: %v", role, err)
	}
	return p, cs
}

// drainAs does a job's work as the API (ap, on api) and a worker (wp, on worker): the API
// publishes a chunk and watches the job record; the worker pulls and acks it, writes the
// progress, stores a large original and reclaims the chunk stream; the API reads the stored
// original and the change feed.
func drainAs(t *testing.T, api, worker jetstream.JetStream, ap, wp *sjs.Provisioned) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := ap.JobsKV.Put(ctx, "jperm", []byte(`{"state":"open"}`)); err != nil {
		t.Fatalf("job record as sluice-api: %v", err)
	}
	w, err := ap.JobsKV.Watch(ctx, "jperm")
	if err != nil {
		t.Fatalf("watch the job as sluice-api: %v", err)
	}
	defer w.Stop()
	if _, err := api.Publish(ctx, schemas.ChunkSubject("dev"), []byte(`{"chunk_id":"c1"}`)); err != nil {
		t.Fatalf("publish a chunk as sluice-api: %v", err)
	}
	batch, err := wp.ChunkConsumer.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("pull as sluice-worker: %v", err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("ack as sluice-worker: %v", err)
		}
	}
	if n != 1 {
		t.Fatalf("pulled %d chunks, want 1 (%v)", n, batch.Error())
	}
	if _, err := wp.JobsKV.Put(ctx, "jperm", []byte(`{"state":"done"}`)); err != nil {
		t.Fatalf("job progress as sluice-worker: %v", err)
	}
	for e := range w.Updates() {
		if e != nil && string(e.Value()) == `{"state":"done"}` {
			break
		}
	}
	if _, err := wp.DLQPayloads.PutBytes(ctx, "SLUICE_CHUNKS-1", []byte("a large original")); err != nil {
		t.Fatalf("store an original as sluice-worker: %v", err)
	}
	if b, err := ap.DLQPayloads.GetBytes(ctx, "SLUICE_CHUNKS-1"); err != nil || string(b) != "a large original" {
		t.Fatalf("read the original as sluice-api: %q, %v", b, err)
	}
	if removed, err := sjs.Reclaim(ctx, worker, wp.Chunks, sjs.ConsumerChunks); err != nil || removed != 1 {
		t.Fatalf("reclaim as sluice-worker: removed %d, %v", removed, err)
	}
	if _, err := worker.Publish(ctx, sjs.JobEventSubject("jperm"), []byte(`{}`)); err != nil {
		t.Fatalf("change feed as sluice-worker: %v", err)
	}
	feed, err := api.OrderedConsumer(ctx, sjs.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{sjs.EventSubjects}})
	if err != nil {
		t.Fatalf("change feed as sluice-api: %v", err)
	}
	if _, err := feed.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
		t.Fatalf("read the change feed as sluice-api: %v", err)
	}
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
	// The API may read the dead letters (direct gets) and delete one.
	api, _ := connectAs(t, url, "api")
	dl, err := api.Stream(ctx, schemas.StreamDLQ)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dl.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(schemas.DLQSubjects)); err != nil {
		t.Errorf("read a dead letter as sluice-api: %v", err)
	}
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
