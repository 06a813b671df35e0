package jetstream

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// The advisory stream's consumer and bounds (StreamAdvisories).
const (
	// ConsumerAdvisories is the durable consumer every dead-letter capture shares.
	ConsumerAdvisories = "sluice-advisories"
	// AdvisoryMaxMsgs and AdvisoryMaxAge bound the advisories kept uncaptured: thousands
	// waiting mean the capture is down, and the oldest go first (DiscardOld).
	AdvisoryMaxMsgs = 100_000
	AdvisoryMaxAge  = 30 * 24 * time.Hour
)

// DefaultAdvisoryStreams returns the streams Sluice's workers consume — chunks, jobs, graph
// batches and commands — whose advisories are kept by default.
func DefaultAdvisoryStreams() []string {
	return []string{schemas.StreamChunks, schemas.StreamJobs, StreamGraph, StreamCommands}
}

// AdvisorySubjects returns the advisory subjects StreamAdvisories must hold for streams.
func AdvisorySubjects(streams []string) []string {
	var subjects []string
	for _, stream := range streams {
		subjects = append(subjects, AdvisoryMaxDeliveriesPrefix+stream+".*", AdvisoryTerminatedPrefix+stream+".*")
	}
	return subjects
}

// Advisories holds what ProvisionAdvisories created or found.
type Advisories struct {
	Stream   jetstream.Stream
	Consumer jetstream.Consumer
	Report   Report
}

// ProvisionAdvisories makes sure StreamAdvisories keeps the max-deliveries and terminated
// advisories of streams (DefaultAdvisoryStreams when nil), with the durable consumer
// ConsumerAdvisories, as cfg.Mode allows, like Provision, whose errors and Report it shares.
// A stream that exists without the subjects of one of streams is a fatal conflict outside
// ModeProvision: those advisories would be lost, and with them the dead letters of messages
// that exhausted their deliveries. It blocks on JetStream requests.
func ProvisionAdvisories(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig, streams []string) (*Advisories, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	cfg.setDefaults()
	return retryTransient(ctx, js, func(ctx context.Context) (*Advisories, error) {
		pr := newProvisioner(js, cfg)
		a := provisionAdvisories(ctx, pr, cfg, streams)
		if err := pr.err(); err != nil {
			return nil, err
		}
		a.Report = pr.rep
		return a, nil
	})
}

func provisionAdvisories(ctx context.Context, pr *provisioner, cfg ProvisionConfig, streams []string) *Advisories {
	if streams == nil {
		streams = DefaultAdvisoryStreams()
	}
	subjects := AdvisorySubjects(streams)
	var a Advisories
	a.Stream = pr.stream(ctx, jetstream.StreamConfig{
		Name:        StreamAdvisories,
		Description: "Sluice: max-deliveries and terminated advisories, kept until captured as dead letters",
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     AdvisoryMaxMsgs,
		MaxAge:      AdvisoryMaxAge,
		Replicas:    cfg.Replicas,
	}, &streamNeeds{subjects: subjects, retention: jetstream.WorkQueuePolicy})
	if a.Stream != nil {
		a.Consumer = pr.consumer(ctx, a.Stream, jetstream.ConsumerConfig{
			Durable:       ConsumerAdvisories,
			Description:   "Sluice: captures advisories as dead letters",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       30 * time.Second,
			MaxDeliver:    -1,
			MaxAckPending: 64,
		}, consumerNeeds{})
	}
	return &a
}

// ProvisionAll runs Provision, ProvisionCommands and ProvisionAdvisories (of
// DefaultAdvisoryStreams) with cfg and returns their reports merged: what `sluice provision`
// does, and how a process started with ModeOff names everything missing at once (one
// *MissingError). It blocks on JetStream requests.
func ProvisionAll(ctx context.Context, js jetstream.JetStream, cfg ProvisionConfig) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, fmt.Errorf("provision: %w", err)
	}
	cfg.setDefaults()
	return retryTransient(ctx, js, func(ctx context.Context) (Report, error) {
		pr := newProvisioner(js, cfg)
		provision(ctx, pr, cfg)
		if _, err := provisionCommands(ctx, pr, cfg); err != nil {
			pr.errs = append(pr.errs, err)
		}
		provisionAdvisories(ctx, pr, cfg, nil)
		return pr.rep, pr.err()
	})
}
