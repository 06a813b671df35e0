package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// ErrPayloadMissing is wrapped by Payload, Original and Replay when a dead letter's original
// stored by reference cannot be read back as written: the object is gone from its bucket
// (deleted, expired) or its size or SHA-256 differs from the reference.
var ErrPayloadMissing = errors.New("dead letter's original is missing or altered in its bucket")

// Payload returns the original payload of the dead letter with envelope id, byte for byte:
// the inline payload, or the one stored by reference (checked against its size and SHA-256).
// Errors wrap ErrNotFound (no such dead letter) or ErrPayloadMissing. It blocks on JetStream
// requests and honours ctx; the caller owns the returned slice.
func (s *Store) Payload(ctx context.Context, id string) ([]byte, error) {
	e, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	p, _, err := s.Original(ctx, e.Envelope)
	return p, err
}

// Original returns the original payload and headers of env, fetching what was stored by
// reference (PayloadRef, HeadersRef) and checking it. Errors wrap ErrPayloadMissing when a
// referenced object is gone or altered. It blocks on JetStream requests and honours ctx.
func (s *Store) Original(ctx context.Context, env schemas.DeadLetterEnvelope) ([]byte, map[string][]string, error) {
	payload, headers := env.Payload, env.Headers
	if env.PayloadRef != nil {
		b, err := s.fetch(ctx, *env.PayloadRef)
		if err != nil {
			return nil, nil, fmt.Errorf("payload of dead letter %s: %w", env.ID, err)
		}
		payload = b
	}
	if env.HeadersRef != nil {
		b, err := s.fetch(ctx, *env.HeadersRef)
		if err != nil {
			return nil, nil, fmt.Errorf("headers of dead letter %s: %w", env.ID, err)
		}
		headers = nil
		if err := json.Unmarshal(b, &headers); err != nil {
			return nil, nil, fmt.Errorf("headers of dead letter %s: decode %s: %v: %w", env.ID, env.HeadersRef.Object, err, ErrPayloadMissing)
		}
	}
	if payload == nil {
		payload = []byte{}
	}
	return payload, headers, nil
}

// fetch reads a referenced object and checks it against ref. Only the payload bucket is read:
// a reference naming another bucket (a forged DLQ message) is refused.
func (s *Store) fetch(ctx context.Context, ref schemas.DeadLetterRef) ([]byte, error) {
	if ref.Bucket != schemas.BucketDLQPayloads {
		return nil, fmt.Errorf("reference to bucket %q, not %s: %w", ref.Bucket, schemas.BucketDLQPayloads, ErrPayloadMissing)
	}
	obs, err := s.bucket(ctx)
	if err != nil {
		return nil, err
	}
	b, err := obs.GetBytes(ctx, ref.Object)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return nil, fmt.Errorf("object %s not in %s: %w", ref.Object, ref.Bucket, ErrPayloadMissing)
	case errors.Is(err, jetstream.ErrDigestMismatch):
		return nil, fmt.Errorf("object %s in %s: %v: %w", ref.Object, ref.Bucket, err, ErrPayloadMissing)
	case err != nil:
		return nil, fmt.Errorf("get object %s from %s: %w", ref.Object, ref.Bucket, err)
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != ref.Size || hex.EncodeToString(sum[:]) != ref.SHA256 {
		return nil, fmt.Errorf("object %s in %s is %d bytes with SHA-256 %x, the dead letter expects %d bytes with %s: %w",
			ref.Object, ref.Bucket, len(b), sum, ref.Size, ref.SHA256, ErrPayloadMissing)
	}
	return b, nil
}

func (s *Store) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	return s.payloads.open(ctx, s.js)
}

// payloadBucket opens the dead-letter payload bucket (BucketDLQPayloads, created by
// provisioning) on first use and keeps it. The zero value is ready; safe for concurrent use.
type payloadBucket struct {
	mu  sync.Mutex // guards obs
	obs jetstream.ObjectStore
}

func (b *payloadBucket) open(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.obs != nil {
		return b.obs, nil
	}
	obs, err := js.ObjectStore(ctx, schemas.BucketDLQPayloads)
	if err != nil {
		return nil, fmt.Errorf("open dead-letter payload bucket %s (created by provisioning): %w", schemas.BucketDLQPayloads, err)
	}
	b.obs = obs
	return obs, nil
}

// dropObjects deletes the objects env references, once no copy of the dead letter is left in
// the DLQ stream. An object already gone is fine; one that could not be deleted is logged
// (it expires with the bucket's max age, the DLQ's).
func (s *Store) dropObjects(ctx context.Context, env schemas.DeadLetterEnvelope) {
	if env.PayloadRef == nil && env.HeadersRef == nil {
		return
	}
	if left, err := s.locate(ctx, env.ID); err != nil || len(left) > 0 {
		if err != nil {
			s.log.Warn("could not check for other copies of a dead letter; its stored original is kept", "dead_letter_id", env.ID, "err", err)
		}
		return
	}
	obs, err := s.bucket(ctx)
	if err != nil {
		s.log.Warn("could not delete a dead letter's stored original", "dead_letter_id", env.ID, "err", err)
		return
	}
	for _, ref := range []*schemas.DeadLetterRef{env.PayloadRef, env.HeadersRef} {
		if ref == nil || ref.Bucket != schemas.BucketDLQPayloads {
			continue
		}
		if err := obs.Delete(ctx, ref.Object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			s.log.Warn("could not delete a dead letter's stored original", "dead_letter_id", env.ID, "object", ref.Object, "err", err)
		}
	}
}
