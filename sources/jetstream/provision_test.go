package jetstream_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// emptyBroker is an embedded JetStream server with nothing provisioned.
func emptyBroker(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, _, js := embeddedtest.Start(t, embedded.Config{DataDir: t.TempDir(), LazySync: true})
	return js
}

func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return s.CachedInfo().Config
}

func ptr[T any](v T) *T { return &v }

// Issue 15: every start re-provisioned the streams, so the operator's 20 GiB and no max age on
// SLUICE_CHUNKS went back to 8 GiB and 168 h at the next `sluice load`. Now only provisioning
// changes what exists, and only the settings it is given.
func TestOperatorSettingsSurviveStarts(t *testing.T) {
	js := emptyBroker(t)
	ctx := context.Background()
	op := sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: sjs.Settings{Streams: map[string]sjs.StreamSettings{
		schemas.StreamChunks: {MaxBytes: ptr[int64](20 << 30), MaxAge: ptr(time.Duration(0))},
	}}}
	rep, err := sjs.ProvisionAll(ctx, js, op)
	if err != nil {
		t.Fatal(err)
	}
	if n := countVerb(rep, sjs.Created); n != 4+2+3+2+sjs.CommandPartitions+2 {
		t.Errorf("created %d objects on an empty broker: %+v", n, rep.Actions)
	}
	// A later provision with only the replicas given keeps the sizes.
	if _, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: sjs.Settings{Replicas: 1}}); err != nil {
		t.Fatal(err)
	}
	// Every other command: the default mode, with Sluice's own defaults.
	for range 2 {
		p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if n := countVerb(p.Report, sjs.Kept); n != len(p.Report.Actions) || len(p.Report.Conflicts) != 0 {
			t.Fatalf("default mode on provisioned streams: %+v", p.Report)
		}
	}
	c := streamConfig(t, js, schemas.StreamChunks)
	if c.MaxBytes != 20<<30 || c.MaxAge != 0 {
		t.Fatalf("SLUICE_CHUNKS max bytes %d, max age %s after the starts; want 20 GiB and none", c.MaxBytes, c.MaxAge)
	}
	// The operator's settings are used for what is created, too: a consumer removed is made
	// again with the ack wait given.
	cs, err := js.Stream(ctx, schemas.StreamChunks)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.DeleteConsumer(ctx, sjs.ConsumerChunks); err != nil {
		t.Fatal(err)
	}
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Settings: sjs.Settings{Consumers: map[string]sjs.ConsumerSettings{
		sjs.ConsumerChunks: {AckWait: ptr(45 * time.Second)}, sjs.ConsumerJobs: {AckWait: ptr(45 * time.Second)}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.ChunkConsumer.CachedInfo().Config.AckWait; got != 45*time.Second {
		t.Errorf("re-created consumer's ack wait %s, want 45s", got)
	}
	if got := p.JobConsumer.CachedInfo().Config.AckWait; got != 10*time.Second {
		t.Errorf("existing consumer's ack wait changed to %s by the default mode", got)
	}
}

func countVerb(r sjs.Report, v sjs.Verb) int {
	n := 0
	for _, a := range r.Actions {
		if a.Verb == v {
			n++
		}
	}
	return n
}

// An existing stream whose settings conflict with what Sluice needs is reported; the default
// mode changes nothing and fails only on what Sluice cannot work with (atomic publish off);
// provisioning fixes what NATS allows, and refuses retention with an error saying what to do.
func TestConflictingStreamSettings(t *testing.T) {
	js := emptyBroker(t)
	ctx := context.Background()
	bad := jetstream.StreamConfig{Name: schemas.StreamChunks, Subjects: []string{schemas.ChunkSubjects},
		Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld, Duplicates: 5 * time.Second, Storage: jetstream.FileStorage}
	if _, err := js.CreateStream(ctx, bad); err != nil {
		t.Fatal(err)
	}
	// Off: the conflict, and the missing named.
	_, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeOff})
	var me *sjs.MissingError
	var ce *sjs.ConflictError
	if !errors.As(err, &me) || !errors.As(err, &ce) {
		t.Fatalf("off mode: %v, want the missing objects and the conflict", err)
	}
	_, err = sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].Setting != "allow_atomic" {
		t.Fatalf("default mode: %v, want one fatal allow_atomic conflict", err)
	}
	if !strings.Contains(err.Error(), "sluice provision") {
		t.Errorf("the error does not say to run sluice provision: %v", err)
	}
	if got := streamConfig(t, js, schemas.StreamChunks); got.Duplicates != bad.Duplicates || got.AllowAtomicPublish {
		t.Fatalf("the default mode changed the stream: %+v", got)
	}
	// Provision fixes the duplicate window, the discard policy and atomic publish.
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision})
	if err != nil {
		t.Fatal(err)
	}
	var fixed []string
	for _, c := range p.Report.Conflicts {
		if c.Fixed {
			fixed = append(fixed, c.Setting)
		}
	}
	if want := []string{"discard", "duplicate_window", "allow_atomic"}; !slices.Equal(fixed, want) {
		t.Errorf("fixed %q, want %q", fixed, want)
	}
	got := streamConfig(t, js, schemas.StreamChunks)
	if got.Discard != jetstream.DiscardNew || got.Duplicates != 2*time.Minute || !got.AllowAtomicPublish {
		t.Fatalf("after provision: %+v", got)
	}
	if _, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatalf("default mode after provision: %v", err)
	}
}

// WorkQueue retention is reported but not fatal (the default mode runs, slower); provisioning
// cannot change it and says so.
func TestWorkQueueRetentionRefusedByProvision(t *testing.T) {
	js := emptyBroker(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: schemas.StreamJobs, Subjects: []string{schemas.JobSubjects},
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew, Duplicates: 10 * time.Minute, AllowAtomicPublish: true}); err != nil {
		t.Fatal(err)
	}
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatalf("default mode on a WorkQueue stream: %v", err)
	}
	if len(p.Report.Conflicts) != 1 || p.Report.Conflicts[0].Setting != "retention" || p.Report.Conflicts[0].Fatal {
		t.Fatalf("conflicts %+v, want one non-fatal retention conflict", p.Report.Conflicts)
	}
	_, err = sjs.Provision(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision})
	if err == nil || !strings.Contains(err.Error(), "NATS cannot change retention WorkQueue to Limits") || !strings.Contains(err.Error(), "nats stream rm SLUICE_JOBS") {
		t.Fatalf("provision on a WorkQueue stream: %v, want NATS's refusal explained", err)
	}
	if got := streamConfig(t, js, schemas.StreamJobs); got.Retention != jetstream.WorkQueuePolicy {
		t.Fatalf("retention changed to %s", got.Retention)
	}
}

// Off creates nothing: on an empty broker it names everything missing, once, and says to run
// sluice provision.
func TestOffModeOnEmptyBroker(t *testing.T) {
	js := emptyBroker(t)
	ctx := context.Background()
	_, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeOff})
	var me *sjs.MissingError
	if !errors.As(err, &me) {
		t.Fatalf("off on an empty broker: %v", err)
	}
	// Consumers of missing streams are not looked up; each stream and bucket is named.
	for _, want := range []string{"stream SLUICE_CHUNKS", "stream SLUICE_JOBS", "stream SLUICE_GRAPH", "stream SLUICE_DLQ",
		"stream SLUICE_COMMANDS", "stream SLUICE_EVENTS", "stream SLUICE_ADVISORIES", "bucket sluice_jobs", "bucket sluice_dlq_payloads"} {
		if !slices.Contains(me.Missing, want) {
			t.Errorf("missing %q not named in %q", want, me.Missing)
		}
	}
	if !strings.Contains(err.Error(), "run `sluice provision`") {
		t.Errorf("error does not say to run sluice provision: %v", err)
	}
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		t.Errorf("off mode created stream %s", n)
	}
	// Provisioned, off finds everything; a consumer removed is named.
	if _, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision}); err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeOff}); err != nil {
		t.Fatalf("off on a provisioned broker: %v", err)
	}
	if err := js.DeleteConsumer(ctx, sjs.StreamGraph, sjs.ConsumerGraph); err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeOff}); !errors.As(err, &me) || !slices.Equal(me.Missing, []string{"consumer SLUICE_GRAPH/sluice-graph"}) {
		t.Fatalf("off without the graph consumer: %v", err)
	}
}

// sluice-graph's one-at-a-time delivery keeps graph batches in order: a consumer an operator
// widened is fatal in the default mode and fixed by provisioning.
func TestGraphConsumerOrderIsSluices(t *testing.T) {
	js, p := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	cfg := p.GraphConsumer.CachedInfo().Config
	cfg.MaxAckPending = 100
	if _, err := p.Graph.UpdateConsumer(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var ce *sjs.ConflictError
	if _, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{}); !errors.As(err, &ce) || ce.Conflicts[0].Setting != "max_ack_pending" {
		t.Fatalf("default mode with a widened graph consumer: %v", err)
	}
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.GraphConsumer.CachedInfo().Config.MaxAckPending; got != 1 {
		t.Fatalf("graph consumer max ack pending %d after provision", got)
	}
}

func TestSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    sjs.Settings
		want string // "" for valid
	}{
		{"empty", sjs.Settings{}, ""},
		{"operator's chunks", sjs.Settings{Replicas: 3, Streams: map[string]sjs.StreamSettings{schemas.StreamChunks: {MaxBytes: ptr[int64](-1), MaxAge: ptr(time.Duration(0))}}}, ""},
		{"negative replicas", sjs.Settings{Replicas: -1}, "replicas -1"},
		{"six replicas", sjs.Settings{Replicas: 6}, "replicas 6"},
		{"zero max bytes", sjs.Settings{Streams: map[string]sjs.StreamSettings{schemas.StreamChunks: {MaxBytes: ptr[int64](0)}}}, "max bytes 0"},
		{"negative max age", sjs.Settings{Streams: map[string]sjs.StreamSettings{schemas.StreamChunks: {MaxAge: ptr(-time.Second)}}}, "max age -1s"},
		{"unknown stream", sjs.Settings{Streams: map[string]sjs.StreamSettings{"ORDERS": {}}}, `stream "ORDERS": not one of Sluice's`},
		{"empty placement", sjs.Settings{Placement: &jetstream.Placement{}}, "placement names neither"},
		{"graph order", sjs.Settings{Consumers: map[string]sjs.ConsumerSettings{sjs.ConsumerGraph: {MaxAckPending: ptr(10)}}}, "max ack pending is Sluice's"},
		{"short ack wait", sjs.Settings{Consumers: map[string]sjs.ConsumerSettings{sjs.ConsumerChunks: {AckWait: ptr(time.Millisecond)}}}, "ack wait 1ms"},
		{"unknown consumer", sjs.Settings{Consumers: map[string]sjs.ConsumerSettings{"mine": {}}}, `consumer "mine"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.s.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// More replicas than the broker has servers: NATS's refusal, wrapped to say why.
func TestReplicasBeyondTheCluster(t *testing.T) {
	js := emptyBroker(t)
	_, err := sjs.Provision(context.Background(), js, sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: sjs.Settings{Replicas: 3}})
	if err == nil || !strings.Contains(err.Error(), "create stream SLUICE_CHUNKS") || !strings.Contains(err.Error(), "needs at least 3 servers") {
		t.Fatalf("3 replicas on one server: %v", err)
	}
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("NATS's error is not wrapped: %v", err)
	}
}

// startCluster runs three clustered JetStream servers on loopback and returns a JetStream
// context on the first once the cluster has a meta leader.
func startCluster(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := embeddedtest.StartCluster(t, 3).Connect()
	return js
}

// `sluice provision --stream-replicas 3` scales streams and buckets created at R1 (by an
// earlier start) up to R3 on a 3-node cluster; the default mode leaves them at R3.
func TestProvisionScalesUpReplicas(t *testing.T) {
	js := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	if r := streamConfig(t, js, schemas.StreamChunks).Replicas; r != 1 {
		t.Fatalf("created with %d replicas, want 1", r)
	}
	rep, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision, Settings: sjs.Settings{Replicas: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if n := countVerb(rep, sjs.Updated); n != len(sjs.KnownStreams()) {
		t.Errorf("updated %d objects, want every stream and bucket (%d): %+v", n, len(sjs.KnownStreams()), rep.Actions)
	}
	if _, err := sjs.ProvisionAll(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range sjs.KnownStreams() {
		if r := streamConfig(t, js, name).Replicas; r != 3 {
			t.Errorf("%s has %d replicas, want 3", name, r)
		}
	}
}
