package jetstream

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// Names and sizes of what ProvisionCommands creates.
const (
	// StreamCommands captures requirement and feature-request commands
	// (schemas.RequirementSubjects, schemas.FeatureSubjects).
	StreamCommands = "SLUICE_COMMANDS"
	// StreamEvents is the change feed: applied mutations and job progress (EventSubjects).
	StreamEvents = "SLUICE_EVENTS"
	// CommandPartitions is how many partitions a new command stream splits keys into. Each has
	// one durable consumer, pinned to one worker process at a time, which holds up to
	// CommandBatch of its commands. With one command in flight per partition, 64 partitions
	// were what let commands of different keys share writes; with batches, 16 partitions of 32
	// serve more commands under 1,000 clients than 64 (fewer consumers to keep state for, fewer
	// and larger chains per write; docs/benchmarks.md, issue 12) and 8 fewer. A stream that
	// exists keeps the count it was created with (CommandStreams.Partitions): changing it
	// moves keys to other partitions, which would break per-key order for commands still
	// queued (see docs/architecture.md to change it on a drained stream).
	CommandPartitions = 16
	// ConsumerCommandsPrefix + partition number names a partition's durable consumer.
	ConsumerCommandsPrefix = "sluice-commands-p"
	// CommandBatch is how many commands of one partition a worker holds and applies at once
	// (the partition consumer's MaxAckPending). Per-key order is kept by the worker, which
	// applies a partition's commands in stream order and only while it holds every command
	// the partition has pending (see pipeline/commands.Worker).
	CommandBatch = 32
	// CommandPriorityGroup is the priority group of the partition consumers, which pin each
	// partition to one pulling client at a time (PriorityPolicyPinned): one worker process
	// holds a partition's pending commands, and another takes over once it stops pulling for
	// CommandPinnedTTL.
	CommandPriorityGroup = "sluice"
	// CommandPinnedTTL is how long a partition stays pinned to a worker that stopped pulling.
	CommandPinnedTTL = 10 * time.Second

	// EventSubjects matches every change-feed subject.
	EventSubjects = "sluice.events.>"
	// MutationEventSubjects matches the change-feed events of settled commands, what the API
	// waits on for a command's outcome.
	MutationEventSubjects = mutationEventPrefix + ">"
	// EventsMaxAge is how long the change feed keeps events.
	EventsMaxAge = 7 * 24 * time.Hour

	mutationEventPrefix = "sluice.events.mutations."
	jobEventPrefix      = "sluice.events.jobs."
)

// CommandStreams holds handles to what ProvisionCommands created or found.
type CommandStreams struct {
	Commands jetstream.Stream
	Events   jetstream.Stream
	// Consumers[p] is partition p's durable consumer (CommandConsumerName(p)); there are
	// Partitions of them.
	Consumers []jetstream.Consumer
	// Partitions is the stream's partition count: CommandPartitions for a stream created now,
	// the count it was created with for one that existed.
	Partitions int
	// Report says what ProvisionCommands created, updated and kept, and the conflicts it found.
	Report Report
}

// CommandConsumerName returns the durable consumer name of partition p.
func CommandConsumerName(p int) string { return ConsumerCommandsPrefix + strconv.Itoa(p) }

// CommandPartitionFilter returns the filter subject of partition p's consumer: the stored
// (transformed) subjects "sluice.v1.<kind>.<p>.<key>".
func CommandPartitionFilter(p int) string { return "sluice.v1.*." + strconv.Itoa(p) + ".*" }

// OriginalCommandSubject returns the subject a command was published on, given the subject
// the stream stored it under: the stream inserts a partition token
// ("sluice.v1.features.7.FR-1" gives "sluice.v1.features.FR-1"). Other subjects come back
// unchanged.
func OriginalCommandSubject(stored string) string {
	parts := strings.Split(stored, ".")
	if len(parts) != 5 || parts[0] != "sluice" || parts[1] != "v1" {
		return stored
	}
	if _, err := strconv.Atoi(parts[3]); err != nil {
		return stored
	}
	return strings.Join([]string{parts[0], parts[1], parts[2], parts[4]}, ".")
}

// MutationEventSubject returns the change-feed subject of an applied (or refused) command of
// aggregate key key: "sluice.events.mutations."+key.
func MutationEventSubject(key string) string { return mutationEventPrefix + key }

// JobEventSubject returns the change-feed subject of a job's progress: "sluice.events.jobs."+id.
func JobEventSubject(id string) string { return jobEventPrefix + id }

// commandTransform inserts a partition token computed from the key (the last token) into
// every command subject. The partition is a hash of the key, so every command of one key
// lands in the same partition, whatever its kind.
func commandTransform(partitions int) *jetstream.SubjectTransformConfig {
	return &jetstream.SubjectTransformConfig{
		Source:      "sluice.v1.*.*",
		Destination: "sluice.v1.{{wildcard(1)}}.{{partition(" + strconv.Itoa(partitions) + ",2)}}.{{wildcard(2)}}",
	}
}

// partitionsRE finds the partition count in a command stream's transform.
var partitionsRE = regexp.MustCompile(`\{\{\s*partition\(\s*(\d+)\s*,`)

// existingPartitions returns the partition count of the command stream if it exists, else
// CommandPartitions.
func existingPartitions(ctx context.Context, js jetstream.JetStream) (int, error) {
	st, err := js.Stream(ctx, StreamCommands)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return CommandPartitions, nil
	}
	if err != nil {
		return 0, fmt.Errorf("provision stream %s: %w", StreamCommands, err)
	}
	t := st.CachedInfo().Config.SubjectTransform
	if t == nil {
		return 0, fmt.Errorf("provision stream %s: it has no partition transform, so no command consumer reads its commands: "+
			"drain it, delete it with the nats CLI (`nats stream rm %s`) and run `sluice provision`", StreamCommands, StreamCommands)
	}
	m := partitionsRE.FindStringSubmatch(t.Destination)
	n, err := 0, error(nil)
	if m != nil {
		n, err = strconv.Atoi(m[1])
	}
	if m == nil || err != nil || n < 1 {
		return 0, fmt.Errorf("provision stream %s: no partition count in its transform %q", StreamCommands, t.Destination)
	}
	return n, nil
}

// ProvisionCommands makes sure the command stream with its partition consumers and the
// change-feed stream (whose mutation events are also how the API learns a command's outcome;
// the outcomes bucket of earlier versions is no longer written, see docs/operations.md) exist,
// as cfg.Mode allows, like Provision, whose errors and Report it shares. It is safe to run from
// several processes at once and blocks on JetStream requests. cfg supplies the defaults of what
// it creates (Replicas, DuplicateWindow, AckWait, MaxDeliver, ChunkMaxAge for the command
// stream's max age); every partition consumer holds up to CommandBatch commands pending and
// pins the partition to one pulling worker at a time (CommandPriorityGroup): the worker that
// holds a partition applies its commands in stream order, which keeps the commands of one key
// in publish order across all worker processes while partitions run in parallel. A consumer of
// an earlier version (MaxAckPending 1, no priority group) is upgraded in place in ModeMissing
// too: its workers could not keep per-key order with it (ModeOff fails on it instead).
//
// The command stream uses Limits retention like the chunk stream, and keeps commands for
// cfg.ChunkMaxAge (default 7 days): a command's apply marker, not its deletion, makes it
// idempotent.
func ProvisionCommands(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (*CommandStreams, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	cfg.setDefaults()
	return retryTransient(ctx, js, func(ctx context.Context) (*CommandStreams, error) {
		pr := newProvisioner(js, cfg)
		cs, err := provisionCommands(ctx, pr, cfg)
		if err != nil {
			return nil, err
		}
		if err := pr.err(); err != nil {
			return nil, err
		}
		cs.Report = pr.rep
		return cs, nil
	})
}

func provisionCommands(ctx context.Context, pr *provisioner, cfg ProvisionConfig) (*CommandStreams, error) {
	var cs CommandStreams
	var err error
	if cs.Partitions, err = existingPartitions(ctx, pr.js); err != nil {
		return nil, err
	}
	transform := commandTransform(cs.Partitions)
	subjects := []string{schemas.RequirementSubjects, schemas.FeatureSubjects}
	cs.Commands = pr.stream(ctx, jetstream.StreamConfig{
		Name:             StreamCommands,
		Description:      "Requirement and feature-request commands, partitioned by key",
		Subjects:         subjects,
		SubjectTransform: transform,
		Retention:        jetstream.LimitsPolicy,
		Discard:          jetstream.DiscardNew,
		MaxAge:           cfg.ChunkMaxAge,
		Storage:          jetstream.FileStorage,
		Replicas:         cfg.Replicas,
		Duplicates:       cfg.DuplicateWindow,
		// The API publishes the commands submitted together as one atomic batch.
		AllowAtomicPublish: true,
	}, &streamNeeds{subjects: subjects, transform: transform, retention: jetstream.LimitsPolicy, discardNew: true,
		minDuplicates: cfg.DuplicateWindow, atomic: true})
	cs.Events = pr.stream(ctx, jetstream.StreamConfig{
		Name:        StreamEvents,
		Description: "Change feed: applied mutations and job progress",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      EventsMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		// The command worker publishes the events of commands applied together as one
		// atomic batch: one synced write instead of one each.
		AllowAtomicPublish: true,
	}, &streamNeeds{subjects: []string{EventSubjects}, retention: jetstream.LimitsPolicy, minDuplicates: cfg.DuplicateWindow, atomic: true})
	if cs.Commands != nil {
		cs.Consumers = make([]jetstream.Consumer, cs.Partitions)
		for p := range cs.Partitions {
			cs.Consumers[p] = pr.consumer(ctx, cs.Commands, jetstream.ConsumerConfig{
				Durable:        CommandConsumerName(p),
				AckPolicy:      jetstream.AckExplicitPolicy,
				AckWait:        cfg.AckWait,
				MaxDeliver:     cfg.MaxDeliver,
				MaxAckPending:  CommandBatch,
				FilterSubject:  CommandPartitionFilter(p),
				MaxWaiting:     512,
				PriorityGroups: []string{CommandPriorityGroup},
				PriorityPolicy: jetstream.PriorityPolicyPinned,
				PinnedTTL:      CommandPinnedTTL,
			}, consumerNeeds{filter: CommandPartitionFilter(p), maxAckPending: CommandBatch, pinned: true})
		}
	}
	return &cs, nil
}
