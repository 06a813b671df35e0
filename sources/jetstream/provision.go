package jetstream

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

	// StreamAdvisories keeps the max-deliveries and terminated advisories of the streams Sluice
	// consumes until pipeline/dlq has captured each as a dead letter (a work queue: a captured
	// advisory is deleted). Reclaim does not purge a message whose advisory still waits here.
	StreamAdvisories = "SLUICE_ADVISORIES"
	// AdvisoryMaxDeliveriesPrefix and AdvisoryTerminatedPrefix begin the subjects of those
	// advisories; stream and consumer names follow.
	AdvisoryMaxDeliveriesPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
	AdvisoryTerminatedPrefix    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED."
)

// ProvisionConfig says what Provision, ProvisionCommands and ProvisionAdvisories may do (Mode)
// and with which settings: the operator's (Settings), over Sluice's defaults for what they create.
type ProvisionConfig struct {
	// Mode says what may be created or changed. Optional; the zero value is ModeMissing.
	Mode Mode
	// Settings are the operator's: used for what is created and, in ModeProvision, set on
	// what exists. Optional. They win over the defaults below.
	Settings Settings

	// The defaults below size what is created; they never change what exists.

	// Replicas for every stream and bucket created. Default 1.
	Replicas int
	// ChunkMaxBytes bounds the chunk stream. When full, publishers are refused (DiscardNew):
	// nothing unprocessed is ever dropped. Default 8 GiB.
	ChunkMaxBytes int64
	// ChunkMaxAge is how long an unprocessed chunk may wait. Default 7 days.
	ChunkMaxAge time.Duration
	// DLQMaxAge is how long dead letters are kept, and the originals they store by reference
	// (schemas.BucketDLQPayloads). Default 90 days.
	DLQMaxAge time.Duration
	// DuplicateWindow is how long a Nats-Msg-Id is remembered on the job, graph, DLQ and
	// command streams. Default 10 minutes; it is also the shortest window Sluice works with
	// on them (a shorter one existing is a Conflict).
	DuplicateWindow time.Duration
	// ChunkDuplicateWindow is the chunk stream's: default 2 minutes (and the shortest). An id must be remembered
	// as long as a publisher may send the same message again — PublishAtomic's retries (up to
	// 15 s) and a lost commit answer, published again at once. A job resumed after that
	// publishes what the stream holds already: the stream keeps those twice, the worker
	// writes the same documents again, and the job counts items by index, so nothing is
	// wrong, only done twice. Every id costs the broker ≈175 B for the window: a backlog of
	// 1,000,000 single-chunk messages held ≈66% of the worker's heap in it with 10 minutes
	// (issue 12); with bundles one id covers up to 100 chunks.
	ChunkDuplicateWindow time.Duration
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
	if c.Mode == "" {
		c.Mode = ModeMissing
	}
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
	if c.ChunkDuplicateWindow <= 0 {
		c.ChunkDuplicateWindow = 2 * time.Minute
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

// Validate reports every problem in c at once.
func (c ProvisionConfig) Validate() error {
	var errs []error
	switch c.Mode {
	case "", ModeMissing, ModeOff, ModeProvision:
	default:
		errs = append(errs, fmt.Errorf("mode %q: want missing, off or provision", c.Mode))
	}
	if err := c.Settings.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Provisioned holds handles to what Provision created or found.
type Provisioned struct {
	Chunks, Jobs, DLQ, Graph jetstream.Stream
	JobsKV                   jetstream.KeyValue
	// DLQPayloads holds the originals of dead letters too large to embed them
	// (schemas.BucketDLQPayloads).
	DLQPayloads   jetstream.ObjectStore
	ChunkConsumer jetstream.Consumer
	JobConsumer   jetstream.Consumer
	GraphConsumer jetstream.Consumer
	// Report says what Provision created, updated and kept, and the conflicts it found.
	Report Report
}

// streamSpec is one stream Provision ensures and, when consumer is set, its durable consumer.
type streamSpec struct {
	// cfg holds what this stream sets apart; Provision adds what all share (Limits
	// retention, DiscardNew, file storage, the replicas).
	cfg    jetstream.StreamConfig
	needs  streamNeeds
	stream *jetstream.Stream // where Provision puts the stream's handle
	// consumer is the durable consumer's name, "" for none; maxAckPending bounds its
	// unacknowledged messages; into receives its handle.
	consumer      string
	maxAckPending int
	// ordered: the consumer delivers one at a time (its MaxAckPending is a need).
	ordered bool
	into    *jetstream.Consumer
}

// streamSpecs lists the streams Provision ensures, in the order it creates them, with their
// handles in p.
func streamSpecs(cfg ProvisionConfig, p *Provisioned) []streamSpec {
	work := func(subject string, dup time.Duration) streamNeeds {
		return streamNeeds{subjects: []string{subject}, retention: jetstream.LimitsPolicy, discardNew: true, minDuplicates: dup, atomic: true}
	}
	return []streamSpec{{
		cfg: jetstream.StreamConfig{Name: schemas.StreamChunks, Description: "Chunk loads: one chunk per message",
			Subjects: []string{schemas.ChunkSubjects}, MaxBytes: cfg.ChunkMaxBytes, MaxAge: cfg.ChunkMaxAge,
			Duplicates: cfg.ChunkDuplicateWindow, AllowAtomicPublish: true},
		needs:  work(schemas.ChunkSubjects, cfg.ChunkDuplicateWindow),
		stream: &p.Chunks, consumer: ConsumerChunks, maxAckPending: cfg.MaxAckPending, into: &p.ChunkConsumer,
	}, {
		cfg: jetstream.StreamConfig{Name: schemas.StreamJobs, Description: "Job lifecycle: open and seal",
			Subjects: []string{schemas.JobSubjects}, MaxAge: cfg.ChunkMaxAge,
			Duplicates: cfg.DuplicateWindow, AllowAtomicPublish: true},
		needs:  work(schemas.JobSubjects, cfg.DuplicateWindow),
		stream: &p.Jobs, consumer: ConsumerJobs, maxAckPending: cfg.MaxAckPending, into: &p.JobConsumer,
	}, {
		cfg: jetstream.StreamConfig{Name: StreamGraph, Description: "Graph batches: nodes and edges applied in one transaction",
			Subjects: []string{schemas.GraphSubjects}, MaxAge: cfg.ChunkMaxAge,
			Duplicates: cfg.DuplicateWindow, AllowAtomicPublish: true},
		needs: work(schemas.GraphSubjects, cfg.DuplicateWindow),
		// One at a time, in publish order (ConsumerGraph).
		stream: &p.Graph, consumer: ConsumerGraph, maxAckPending: 1, ordered: true, into: &p.GraphConsumer,
	}, {
		cfg: jetstream.StreamConfig{Name: schemas.StreamDLQ, Description: "Dead letters: original message, error and history",
			Subjects: []string{schemas.DLQSubjects}, MaxAge: cfg.DLQMaxAge,
			Duplicates: cfg.DuplicateWindow, AllowDirect: true},
		needs: streamNeeds{subjects: []string{schemas.DLQSubjects}, retention: jetstream.LimitsPolicy, discardNew: true,
			minDuplicates: cfg.DuplicateWindow, direct: true},
		stream: &p.DLQ,
	}}
}

// Provision makes sure the streams, durable consumers and buckets Sluice's chunk, job, graph
// and dead-letter paths use exist, as cfg.Mode allows (ModeMissing by default: create what is
// missing, change nothing that exists), and returns their handles with a Report of what it did
// and the conflicts it found; the caller logs the conflicts. It fails with a *MissingError
// (ModeOff) naming everything missing, a *ConflictError for existing settings Sluice cannot
// work with, or the broker's error. It is safe to run from several processes at once and
// blocks on JetStream requests.
//
// Streams use Limits retention, not WorkQueue: under sync-always every WorkQueue ack is its own
// synced delete (DESIGN.md, "Do not pay an fsync per ack"). Reclaim purges what is acked.
func Provision(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (*Provisioned, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	cfg.setDefaults()
	return retryTransient(ctx, js, func(ctx context.Context) (*Provisioned, error) {
		pr := newProvisioner(js, cfg)
		p := provision(ctx, pr, cfg)
		if err := pr.err(); err != nil {
			return nil, err
		}
		p.Report = pr.rep
		return p, nil
	})
}

func provision(ctx context.Context, pr *provisioner, cfg ProvisionConfig) *Provisioned {
	js := pr.js
	var p Provisioned
	specs := streamSpecs(cfg, &p)
	for _, sp := range specs {
		sc := sp.cfg
		sc.Retention, sc.Discard, sc.Storage, sc.Replicas = jetstream.LimitsPolicy, jetstream.DiscardNew, jetstream.FileStorage, cfg.Replicas
		*sp.stream = pr.stream(ctx, sc, &sp.needs)
	}
	// Like the DLQ stream: file storage, its replicas, its max age (an object whose dead letter
	// was never published — the publish failed after the put — expires with it). Unbounded in
	// bytes like the DLQ stream: a dead letter is never refused for space Sluice chose.
	objStream := "OBJ_" + schemas.BucketDLQPayloads
	if pr.bucket(ctx, "bucket "+schemas.BucketDLQPayloads, objStream, func(ctx context.Context) error {
		ss := pr.settings.stream(objStream)
		_, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      schemas.BucketDLQPayloads,
			Description: "Originals of dead letters too large to embed them",
			Storage:     jetstream.FileStorage,
			Replicas:    cmp.Or(ss.Replicas, cfg.Replicas),
			Placement:   ss.Placement,
			TTL:         ptrOr(ss.MaxAge, cfg.DLQMaxAge),
			MaxBytes:    ptrOr(ss.MaxBytes, 0),
		})
		return err
	}) {
		var err error
		if p.DLQPayloads, err = js.ObjectStore(ctx, schemas.BucketDLQPayloads); err != nil {
			pr.errs = append(pr.errs, fmt.Errorf("open bucket %s: %w", schemas.BucketDLQPayloads, err))
		}
	}
	kvStream := "KV_" + BucketJobs
	if pr.bucket(ctx, "bucket "+BucketJobs, kvStream, func(ctx context.Context) error {
		ss := pr.settings.stream(kvStream)
		_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      BucketJobs,
			Description: "Job records and progress",
			History:     1,
			Storage:     jetstream.FileStorage,
			Replicas:    cmp.Or(ss.Replicas, cfg.Replicas),
			Placement:   ss.Placement,
			TTL:         ptrOr(ss.MaxAge, 0),
			MaxBytes:    ptrOr(ss.MaxBytes, 0),
		})
		return err
	}) {
		var err error
		if p.JobsKV, err = js.KeyValue(ctx, BucketJobs); err != nil {
			pr.errs = append(pr.errs, fmt.Errorf("open bucket %s: %w", BucketJobs, err))
		}
	}
	for _, sp := range specs {
		if sp.consumer == "" || *sp.stream == nil {
			continue
		}
		needs := consumerNeeds{}
		if sp.ordered {
			needs.maxAckPending = sp.maxAckPending
		}
		*sp.into = pr.consumer(ctx, *sp.stream, jetstream.ConsumerConfig{
			Durable:       sp.consumer,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxDeliver:    cfg.MaxDeliver,
			MaxAckPending: sp.maxAckPending,
			MaxWaiting:    512,
		}, needs)
	}
	return &p
}

// ptrOr returns *p, or def when p is nil.
func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// maxHeldScan bounds the pending advisories Reclaim reads for one stream. Past it, Reclaim
// purges nothing rather than guess (thousands of uncaptured advisories mean the capture is down;
// keeping messages is then the safe side).
const maxHeldScan = 10_000

// Reclaim purges from stream every message below the ack floor of consumer — messages every
// worker has finished with — except that it stops below the lowest message whose
// max-deliveries or terminated advisory is still waiting in StreamAdvisories: such a message
// left the consumer's pending set (so the ack floor moved past it) without a dead letter yet,
// and the capture reads it back from stream. It is one synced write per call instead of one
// per ack, and returns how many messages it removed. It blocks on JetStream requests.
//
// An advisory the server has queued but not yet stored in StreamAdvisories when Reclaim reads
// it cannot hold the purge; RunReclaimer closes that window by purging only below the floor it
// saw one interval earlier.
func Reclaim(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, consumer string) (uint64, error) {
	n, _, err := reclaim(ctx, js, stream, consumer, math.MaxUint64)
	return n, err
}

// reclaim purges below min(ack floor, upTo+1, lowest held message) and returns how many it
// removed and the ack floor it read.
func reclaim(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, consumer string, upTo uint64) (uint64, uint64, error) {
	c, err := stream.Consumer(ctx, consumer)
	if err != nil {
		return 0, 0, fmt.Errorf("reclaim: look up consumer %s: %w", consumer, err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("reclaim: consumer info: %w", err)
	}
	floor := info.AckFloor.Stream
	limit := min(floor, upTo)
	if limit == 0 {
		return 0, floor, nil
	}
	name := stream.CachedInfo().Config.Name
	held, err := lowestHeld(ctx, js, name)
	if err != nil {
		return 0, floor, fmt.Errorf("reclaim: %w", err)
	}
	if held > 0 {
		limit = min(limit, held-1)
	}
	if limit == 0 {
		return 0, floor, nil
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		return 0, floor, fmt.Errorf("reclaim: stream info: %w", err)
	}
	if sinfo.State.FirstSeq > limit {
		return 0, floor, nil
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(limit+1)); err != nil {
		return 0, floor, fmt.Errorf("reclaim: purge below %d: %w", limit+1, err)
	}
	return limit + 1 - sinfo.State.FirstSeq, floor, nil
}

// lowestHeld returns the lowest stream sequence of stream named by an advisory still waiting
// in StreamAdvisories, or 0 when none (or when there is no such stream: nothing captures).
func lowestHeld(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	adv, err := js.Stream(ctx, StreamAdvisories)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look up %s: %w", StreamAdvisories, err)
	}
	// "$JS.EVENT.ADVISORY.CONSUMER.<type>.<stream>.<consumer>"
	filter := "$JS.EVENT.ADVISORY.CONSUMER.*." + stream + ".*"
	var lowest uint64
	seq := uint64(1)
	for range maxHeldScan {
		m, err := adv.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return lowest, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read %s from %d: %w", StreamAdvisories, seq, err)
		}
		var a struct {
			StreamSeq uint64 `json:"stream_seq"`
		}
		if json.Unmarshal(m.Data, &a) == nil && a.StreamSeq > 0 && (lowest == 0 || a.StreamSeq < lowest) {
			lowest = a.StreamSeq
		}
		seq = m.Sequence + 1
	}
	return 0, fmt.Errorf("more than %d advisories of %s wait in %s: not purging", maxHeldScan, stream, StreamAdvisories)
}

// RunReclaimer reclaims stream every interval until ctx ends (see Reclaim), purging only below
// the ack floor it read one interval earlier, so that an advisory the server was about to store
// when the floor moved is in StreamAdvisories, holding its message, by the time it purges. Errors
// are reported to onErr (which may be nil) and do not stop it. It returns nil when ctx ends.
func RunReclaimer(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, consumer string, interval time.Duration, onErr func(error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var prev uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			_, floor, err := reclaim(ctx, js, stream, consumer, prev)
			if err != nil {
				if onErr != nil && !errors.Is(err, context.Canceled) {
					onErr(err)
				}
				continue
			}
			prev = floor
		}
	}
}
