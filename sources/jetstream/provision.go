package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// Names of what Provision creates. Producers need only the subjects (schemas/README.md).
// The stream names are schemas.StreamChunks, schemas.StreamJobs and schemas.StreamDLQ.
const (
	ConsumerChunks = "sluice-chunks"
	ConsumerJobs   = "sluice-jobs"
	// ConsumerGraph delivers graph batches one at a time (MaxAckPending 1), in publish
	// order, even to several workers: a file split into several batches puts nodes before the
	// edges that need them.
	ConsumerGraph = "sluice-graph"
	// StreamGraph captures graph batches (schemas.GraphSubjects).
	StreamGraph = "SLUICE_GRAPH"

	BucketJobs = "sluice_jobs"
)

// ProvisionConfig sizes the streams and consumers.
type ProvisionConfig struct {
	// Replicas for every stream and bucket. Default 1; use 3 on a cluster.
	Replicas int
	// ChunkMaxBytes bounds the chunk stream. When full, publishers are refused (DiscardNew):
	// nothing unprocessed is ever dropped. Default 8 GiB.
	ChunkMaxBytes int64
	// ChunkMaxAge is how long an unprocessed chunk may wait. Default 7 days.
	ChunkMaxAge time.Duration
	// DLQMaxAge is how long dead letters are kept. Default 90 days.
	DLQMaxAge time.Duration
	// DuplicateWindow is how long a Nats-Msg-Id is remembered. Default 10 minutes.
	DuplicateWindow time.Duration
	// AckWait is how long a worker may hold a message before it is redelivered; workers extend
	// it with InProgress (every third of it) for long writes. Default 10 s: it is also how long
	// the messages a killed worker held, or a broker restart or network cut lost on their way,
	// wait before they are delivered again (30 s stalled recovery for 30 s, issue 11).
	AckWait time.Duration
	// MaxDeliver is how many times a message is delivered before the pipeline dead-letters it
	// (the pipeline reads it from the consumer). Default 10.
	MaxDeliver int
	// MaxAckPending bounds unacknowledged messages per consumer across all workers. Default 20000.
	MaxAckPending int
}

func (c *ProvisionConfig) setDefaults() {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.ChunkMaxBytes == 0 {
		c.ChunkMaxBytes = 8 << 30
	}
	if c.ChunkMaxAge <= 0 {
		c.ChunkMaxAge = 7 * 24 * time.Hour
	}
	if c.DLQMaxAge <= 0 {
		c.DLQMaxAge = 90 * 24 * time.Hour
	}
	if c.DuplicateWindow <= 0 {
		c.DuplicateWindow = 10 * time.Minute
	}
	if c.AckWait <= 0 {
		c.AckWait = 10 * time.Second
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 10
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = 20000
	}
}

// Provisioned holds handles to what Provision created.
type Provisioned struct {
	Chunks, Jobs, DLQ, Graph jetstream.Stream
	JobsKV                   jetstream.KeyValue
	ChunkConsumer            jetstream.Consumer
	JobConsumer              jetstream.Consumer
	GraphConsumer            jetstream.Consumer
}

// Provision creates or updates the streams, durable consumers and KV bucket Sluice uses. It is
// idempotent and safe to run from several processes at once.
//
// Streams use Limits retention, not WorkQueue: under sync-always every WorkQueue ack is its own
// synced delete (DESIGN.md, "Do not pay an fsync per ack"). Reclaim purges what is acked.
func Provision(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (*Provisioned, error) {
	cfg.setDefaults()
	var p Provisioned
	var err error
	p.Chunks, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:               schemas.StreamChunks,
		Description:        "Chunk loads: one chunk per message",
		Subjects:           []string{schemas.ChunkSubjects},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		MaxBytes:           cfg.ChunkMaxBytes,
		MaxAge:             cfg.ChunkMaxAge,
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.DuplicateWindow,
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, err
	}
	p.Jobs, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:               schemas.StreamJobs,
		Description:        "Job lifecycle: open and seal",
		Subjects:           []string{schemas.JobSubjects},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		MaxAge:             cfg.ChunkMaxAge,
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.DuplicateWindow,
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, err
	}
	p.Graph, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:               StreamGraph,
		Description:        "Graph batches: nodes and edges applied in one transaction",
		Subjects:           []string{schemas.GraphSubjects},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardNew,
		MaxAge:             cfg.ChunkMaxAge,
		Storage:            jetstream.FileStorage,
		Replicas:           cfg.Replicas,
		Duplicates:         cfg.DuplicateWindow,
		AllowAtomicPublish: true,
	})
	if err != nil {
		return nil, err
	}
	p.DLQ, err = ensureStream(ctx, js, jetstream.StreamConfig{
		Name:        schemas.StreamDLQ,
		Description: "Dead letters: original message, error and history",
		Subjects:    []string{schemas.DLQSubjects},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		MaxAge:      cfg.DLQMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		AllowDirect: true,
	})
	if err != nil {
		return nil, err
	}
	p.JobsKV, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketJobs,
		Description: "Job records and progress",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("provision bucket %s: %w", BucketJobs, err)
	}
	consumer := func(stream jetstream.Stream, name string, maxAckPending int) (jetstream.Consumer, error) {
		c, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       name,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    cfg.MaxDeliver,
			MaxAckPending: maxAckPending,
			MaxWaiting:    512,
		})
		if err != nil {
			return nil, fmt.Errorf("provision consumer %s: %w", name, err)
		}
		return c, nil
	}
	if p.ChunkConsumer, err = consumer(p.Chunks, ConsumerChunks, cfg.MaxAckPending); err != nil {
		return nil, err
	}
	if p.JobConsumer, err = consumer(p.Jobs, ConsumerJobs, cfg.MaxAckPending); err != nil {
		return nil, err
	}
	if p.GraphConsumer, err = consumer(p.Graph, ConsumerGraph, 1); err != nil {
		return nil, err
	}
	return &p, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("provision stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// Reclaim purges from stream every message below the ack floor of consumer: messages every
// worker has finished with. It is one synced write per call instead of one per ack, and returns
// how many messages it removed. Run it periodically (Reclaimer).
func Reclaim(ctx context.Context, stream jetstream.Stream, consumer string) (uint64, error) {
	c, err := stream.Consumer(ctx, consumer)
	if err != nil {
		return 0, fmt.Errorf("reclaim: look up consumer %s: %w", consumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reclaim: consumer info: %w", err)
	}
	floor := info.AckFloor.Stream
	if floor == 0 {
		return 0, nil
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("reclaim: stream info: %w", err)
	}
	if sinfo.State.FirstSeq > floor {
		return 0, nil
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(floor+1)); err != nil {
		return 0, fmt.Errorf("reclaim: purge below %d: %w", floor+1, err)
	}
	return floor + 1 - sinfo.State.FirstSeq, nil
}

// RunReclaimer calls Reclaim every interval until ctx ends. Errors are reported to onErr (which
// may be nil) and do not stop it. It returns nil when ctx ends.
func RunReclaimer(ctx context.Context, stream jetstream.Stream, consumer string, interval time.Duration, onErr func(error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := Reclaim(ctx, stream, consumer); err != nil && onErr != nil && !errors.Is(err, context.Canceled) {
				onErr(err)
			}
		}
	}
}
