package jetstream_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// The command stream stores every command of one key under the same partition token, and
// only that partition's consumer receives it.
func TestProvisionCommandsPartitionsByKey(t *testing.T) {
	js, _ := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{}); err != nil {
		t.Fatalf("second provision: %v", err)
	}
	if len(cs.Consumers) != sjs.CommandPartitions {
		t.Fatalf("%d consumers", len(cs.Consumers))
	}
	publishCommandsByKey(t, js, cs)
	checkCommandPartitions(t, cs)
	// One holder per partition: a pull without the priority group is refused; the first
	// client that pulls with it is pinned and gets the partition's commands; another gets
	// none while it is.
	checkOnePinnedHolder(t, js, cs)
}

// publishCommandsByKey publishes two commands for each of 64 keys and checks that both
// are stored under the key's one partition, that the keys spread over the partitions, and
// publishes one requirement command: 129 commands in all.
func publishCommandsByKey(t *testing.T, js jetstream.JetStream, cs *sjs.CommandStreams) {
	ctx := context.Background()
	partitionOf := map[string]string{}
	seen := map[string]bool{}
	for i := range 64 {
		key := fmt.Sprintf("FR-%03d", i)
		for _, subj := range []string{schemas.FeatureSubject(key), schemas.FeatureSubject(key)} {
			ack, err := js.Publish(ctx, subj, []byte(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			m, err := cs.Commands.GetMsg(ctx, ack.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			if got := sjs.OriginalCommandSubject(m.Subject); got != subj {
				t.Fatalf("stored %q, original %q, want %q", m.Subject, got, subj)
			}
			if p, ok := partitionOf[key]; ok && p != m.Subject {
				t.Fatalf("key %s stored as %s and %s", key, p, m.Subject)
			}
			partitionOf[key] = m.Subject
			seen[m.Subject[len("sluice.v1.features."):len(m.Subject)-len(key)-1]] = true
		}
	}
	if len(seen) < sjs.CommandPartitions/2 {
		t.Fatalf("64 keys spread over only %d partitions: %v", len(seen), seen)
	}
	if _, err := js.Publish(ctx, schemas.RequirementSubject("requirements"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
}

// checkCommandPartitions checks each partition consumer's configuration and that together
// they hold the 129 commands published.
func checkCommandPartitions(t *testing.T, cs *sjs.CommandStreams) {
	ctx := context.Background()
	total := 0
	for p, c := range cs.Consumers {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.MaxAckPending != sjs.CommandBatch || info.Config.FilterSubject != sjs.CommandPartitionFilter(p) ||
			info.Config.PriorityPolicy != jetstream.PriorityPolicyPinned || info.Config.PinnedTTL != sjs.CommandPinnedTTL ||
			len(info.Config.PriorityGroups) != 1 || info.Config.PriorityGroups[0] != sjs.CommandPriorityGroup {
			t.Fatalf("consumer %d config %+v", p, info.Config)
		}
		total += int(info.NumPending)
	}
	if total != 129 {
		t.Fatalf("partitions hold %d messages, want 129", total)
	}
}

// checkOnePinnedHolder takes a partition holding at least 3 commands and checks that a
// pull without the priority group is refused, the first client pulling with it is pinned,
// and a second client gets nothing.
func checkOnePinnedHolder(t *testing.T, js jetstream.JetStream, cs *sjs.CommandStreams) {
	ctx := context.Background()
	var c jetstream.Consumer
	var name string
	for p, cc := range cs.Consumers {
		if info, _ := cc.Info(ctx); info.NumPending >= 3 {
			c, name = cc, sjs.CommandConsumerName(p)
			break
		}
	}
	if c == nil {
		t.Fatal("no partition holds 3 commands")
	}
	nb, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
	if err == nil {
		for range nb.Messages() {
			t.Fatal("a pull without the priority group got a command")
		}
		err = nb.Error()
	}
	if err == nil {
		t.Fatal("a pull without the priority group was not refused")
	}
	b, err := c.Fetch(2, jetstream.FetchPriorityGroup(sjs.CommandPriorityGroup), jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range b.Messages() {
		if m.Headers().Get("Nats-Pin-Id") == "" {
			t.Fatal("a command delivered without a pin id")
		}
		got = append(got, m)
	}
	if len(got) != 2 {
		t.Fatalf("the pinned client fetched %d commands, want 2", len(got))
	}
	other, err := js.Consumer(ctx, sjs.StreamCommands, name)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := other.Fetch(1, jetstream.FetchPriorityGroup(sjs.CommandPriorityGroup), jetstream.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range ob.Messages() {
		t.Fatal("a second client got a command of a pinned partition")
	}
	for _, m := range got {
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOriginalCommandSubject(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"feature", "sluice.v1.features.7.FR-1", "sluice.v1.features.FR-1"},
		{"requirements", "sluice.v1.requirements.15.requirements", "sluice.v1.requirements.requirements"},
		{"untransformed", "sluice.v1.features.FR-1", "sluice.v1.features.FR-1"},
		{"non-numeric partition", "sluice.v1.features.x.FR-1", "sluice.v1.features.x.FR-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := sjs.OriginalCommandSubject(tc.in); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// A command stream created with another partition count (64, before partition batches) keeps it:
// re-partitioning would move queued commands' keys to other partitions and break their order.
// Created before atomic batches, it cannot take the API's publishes: every command but
// `sluice provision` refuses to start on it (issue 15: they no longer rewrite what exists),
// and `sluice provision` enables atomic publish.
func TestProvisionCommandsKeepsAnExistingPartitionCount(t *testing.T) {
	js, _ := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     sjs.StreamCommands,
		Subjects: []string{schemas.RequirementSubjects, schemas.FeatureSubjects},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: "sluice.v1.*.*",
			Destination: "sluice.v1.{{wildcard(1)}}.{{partition(64,2)}}.{{wildcard(2)}}"},
	}); err != nil {
		t.Fatal(err)
	}
	var ce *sjs.ConflictError
	if _, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{}); !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].Setting != "allow_atomic" {
		t.Fatalf("missing mode on a stream without atomic publish: %v, want one fatal allow_atomic conflict", err)
	}
	cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeProvision})
	if err != nil {
		t.Fatal(err)
	}
	if cs.Partitions != 64 || len(cs.Consumers) != 64 {
		t.Fatalf("partitions %d, consumers %d; want the stream's 64", cs.Partitions, len(cs.Consumers))
	}
	info, err := cs.Commands.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := info.Config.SubjectTransform.Destination; d != "sluice.v1.{{wildcard(1)}}.{{partition(64,2)}}.{{wildcard(2)}}" {
		t.Fatalf("transform changed to %q", d)
	}
	if !info.Config.AllowAtomicPublish {
		t.Fatal("atomic publish not enabled on the command stream")
	}
}

// A partition consumer of an earlier version (one command in flight, no priority group) is
// updated in place, in the default mode too (its workers could not keep per-key order with
// it): it gets the batch and the pinned priority group. With --provision off it is refused.
func TestProvisionCommandsUpdatesOlderConsumers(t *testing.T) {
	js, _ := setup(t, sjs.ProvisionConfig{})
	ctx := context.Background()
	cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	old := cs.Consumers[0].CachedInfo().Config
	old.MaxAckPending, old.PriorityGroups, old.PriorityPolicy, old.PinnedTTL = 1, nil, jetstream.PriorityPolicyNone, 0
	if _, err := cs.Commands.UpdateConsumer(ctx, old); err != nil {
		t.Fatalf("make an older consumer: %v", err)
	}
	var ce *sjs.ConflictError
	if _, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{Mode: sjs.ModeOff}); !errors.As(err, &ce) || len(ce.Conflicts) != 2 {
		t.Fatalf("off mode on an older consumer: %v, want its two conflicts", err)
	}
	cs, err = sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cs.Consumers[0].Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.MaxAckPending != sjs.CommandBatch || c.PriorityPolicy != jetstream.PriorityPolicyPinned || len(c.PriorityGroups) != 1 {
		t.Fatalf("consumer after provisioning: %+v", c)
	}
	if a := cs.Report.Actions; !slices.ContainsFunc(a, func(a sjs.Action) bool {
		return a.Verb == sjs.Updated && strings.HasSuffix(a.Object, "/"+sjs.CommandConsumerName(0))
	}) {
		t.Fatalf("report %+v does not say the consumer was updated", a)
	}
}
