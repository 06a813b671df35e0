package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/schemas"
)

// Bounds that keep every dead letter under the broker's max payload (DESIGN.md invariant 8).
const (
	// MaxErrorMessage bounds the bytes of a dead letter's error.message; a longer one is cut at
	// a UTF-8 boundary and ends with "…". An error that quotes a whole batch must not be what
	// makes a dead letter too large.
	MaxErrorMessage = 8 << 10
	// maxInlineHeaders bounds the bytes of the headers kept inline when the headers themselves
	// go by reference: enough for Sluice's own headers, small beside any max payload.
	maxInlineHeaders = 16 << 10
	// maxJobHeader bounds the Sluice-Job value copied onto the DLQ message's headers (used to
	// filter by job); a longer one is not a job id Sluice issued and is left out.
	maxJobHeader = 1 << 10
	// headerSlack covers what the client adds around the headers ("NATS/1.0\r\n", line ends)
	// beyond the bytes headerBytes counts.
	headerSlack = 256
)

// ErrTooLarge is wrapped by Writer.Write when a dead letter cannot be made to fit the broker's
// max payload even with its payload and headers stored by reference (a subject or id of
// hundreds of kilobytes).
var ErrTooLarge = errors.New("dead letter does not fit the broker's max payload")

// Writer publishes dead letters to the DLQ stream so that each fits the connection's max
// payload: an envelope that would not fit has its original payload — and, if still needed, its
// original headers — put into the BucketDLQPayloads object store under its id, and carries a
// reference (schemas.DeadLetterRef) instead. Safe for concurrent use.
type Writer struct {
	js jetstream.JetStream
	// expect, when set, is the stream every publish must land in.
	expect string

	// payloads is the payload bucket, opened on first use.
	payloads payloadBucket
}

// NewWriter returns a Writer publishing with js. expectStream, when not "", makes each publish
// fail unless the DLQ stream of that name stores it. It does no I/O; the payload bucket
// (provisioned by sources/jetstream.Provision) is looked up the first time it is needed.
func NewWriter(js jetstream.JetStream, expectStream string) *Writer {
	return &Writer{js: js, expect: expectStream}
}

// Written is what Writer.Write stored.
type Written struct {
	// Envelope is the dead letter as published: its error message bounded, and PayloadRef and
	// HeadersRef set when the original went by reference.
	Envelope schemas.DeadLetterEnvelope
	// Duplicate is true when the DLQ stream already held a dead letter with this id within its
	// duplicate window (nothing new was stored).
	Duplicate bool
}

// Write publishes env on schemas.DLQSubject(env.Subject) with Nats-Msg-Id "dlq/"+env.ID and
// returns once JetStream stored it. It blocks on JetStream requests and honours ctx. Errors:
// the object store or the publish failed, or ErrTooLarge (wrapped).
func (w *Writer) Write(ctx context.Context, env schemas.DeadLetterEnvelope) (Written, error) {
	env.Error.Message = truncateUTF8(env.Error.Message, MaxErrorMessage)
	out := dlqMsg(env)
	limit := inlineLimit(out.Header, w.js.Conn().MaxPayload())

	body, err := json.Marshal(env)
	if err != nil {
		return Written{}, fmt.Errorf("encode dead letter %s: %w", env.ID, err)
	}
	if len(body) > limit && len(env.Payload) > 0 {
		ref, err := w.put(ctx, env.ID, env.Payload)
		if err != nil {
			return Written{}, fmt.Errorf("store payload of dead letter %s: %w", env.ID, err)
		}
		env.Payload, env.PayloadRef = nil, &ref
		if body, err = json.Marshal(env); err != nil {
			return Written{}, fmt.Errorf("encode dead letter %s: %w", env.ID, err)
		}
	}
	if len(body) > limit && len(env.Headers) > 0 {
		hb, err := json.Marshal(env.Headers)
		if err != nil {
			return Written{}, fmt.Errorf("encode headers of dead letter %s: %w", env.ID, err)
		}
		ref, err := w.put(ctx, env.ID+"/headers", hb)
		if err != nil {
			return Written{}, fmt.Errorf("store headers of dead letter %s: %w", env.ID, err)
		}
		env.Headers, env.HeadersRef = fitHeaders(env.Headers, maxInlineHeaders), &ref
		if body, err = json.Marshal(env); err != nil {
			return Written{}, fmt.Errorf("encode dead letter %s: %w", env.ID, err)
		}
	}
	if len(body) > limit {
		return Written{}, fmt.Errorf("dead letter %s is %d bytes with its original stored by reference, over %d: %w", env.ID, len(body), limit, ErrTooLarge)
	}
	out.Data = body
	var opts []jetstream.PublishOpt
	if w.expect != "" {
		opts = append(opts, jetstream.WithExpectStream(w.expect))
	}
	ack, err := w.js.PublishMsg(ctx, out, opts...)
	if err != nil {
		return Written{}, fmt.Errorf("publish dead letter %s: %w", env.ID, err)
	}
	return Written{Envelope: env, Duplicate: ack.Duplicate}, nil
}

// dlqMsg returns the DLQ message of env, headers set, without its data.
func dlqMsg(env schemas.DeadLetterEnvelope) *nats.Msg {
	out := nats.NewMsg(schemas.DLQSubject(env.Subject))
	out.Header.Set(nats.MsgIdHdr, "dlq/"+env.ID)
	out.Header.Set(schemas.HeaderSchema, string(schemas.DeadLetter))
	if env.JobID != "" && len(env.JobID) <= maxJobHeader {
		out.Header.Set(schemas.HeaderJob, env.JobID)
	}
	out.Header.Set(HeaderErrorClass, env.Error.Class)
	return out
}

// inlineLimit is the largest envelope that fits a message with headers h under maxPayload.
func inlineLimit(h nats.Header, maxPayload int64) int {
	return int(maxPayload) - headerBytes(h) - headerSlack
}

// Fits reports whether env, embedded whole (its error message bounded as Write bounds it), fits
// a DLQ message under maxPayload; Write stores its original by reference when it does not. It
// does no I/O.
func Fits(env schemas.DeadLetterEnvelope, maxPayload int64) bool {
	env.Error.Message = truncateUTF8(env.Error.Message, MaxErrorMessage)
	body, err := json.Marshal(env)
	return err == nil && len(body) <= inlineLimit(dlqMsg(env).Header, maxPayload)
}

// put stores data as object name in the payload bucket. A dead letter written again (a
// redelivery within or after the duplicate window) replaces the object with the same bytes.
func (w *Writer) put(ctx context.Context, name string, data []byte) (schemas.DeadLetterRef, error) {
	obs, err := w.bucket(ctx)
	if err != nil {
		return schemas.DeadLetterRef{}, err
	}
	if _, err := obs.PutBytes(ctx, name, data); err != nil {
		return schemas.DeadLetterRef{}, fmt.Errorf("put object %s into %s: %w", name, schemas.BucketDLQPayloads, err)
	}
	sum := sha256.Sum256(data)
	return schemas.DeadLetterRef{Bucket: schemas.BucketDLQPayloads, Object: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}, nil
}

func (w *Writer) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	return w.payloads.open(ctx, w.js)
}

// headerBytes counts the bytes h takes on the wire, bar the framing headerSlack covers.
func headerBytes(h nats.Header) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4 // ": " and "\r\n"
		}
	}
	return n
}

// fitHeaders keeps, in name order, the headers whose JSON fits in budget bytes: a readable
// summary of headers stored by reference.
func fitHeaders(h map[string][]string, budget int) map[string][]string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := map[string][]string{}
	used := 2
	for _, k := range keys {
		b, err := json.Marshal(map[string][]string{k: h[k]})
		if err != nil || used+len(b) > budget {
			continue
		}
		used += len(b)
		out[k] = h[k]
	}
	return out
}

// truncateUTF8 cuts s to at most n bytes at a rune boundary, ending with "…" when cut.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := n - len(ell)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}
