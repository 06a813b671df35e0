package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// JobEventType is the "type" of a job lifecycle event.
type JobEventType string

// The job event types.
const (
	// JobTypeOpen opens a job (JobOpen).
	JobTypeOpen JobEventType = "open"
	// JobTypeSeal seals a job with its totals (JobSeal).
	JobTypeSeal JobEventType = "seal"
	// JobTypeRollback asks the workers to delete what a job wrote (JobRollback).
	JobTypeRollback JobEventType = "rollback"
)

// ItemIssue is one item of a job that the producer rejected, or that drew a warning.
type ItemIssue struct {
	// Index is the item's 0-based position in its file (its Sluice-Item).
	Index int `json:"index"`
	// ID is the item's id, when it had a usable one.
	ID string `json:"id,omitempty"`
	// Reason says what was wrong, for a person. Required.
	Reason string `json:"reason"`
}

// JobOpen is the event that opens a job. It marshals with "type":"open".
type JobOpen struct {
	// JobID is the job's id; ValidKey must accept it. Required.
	JobID string `json:"job_id"`
	// Env is Dev, Test or Prod. Required.
	Env string `json:"env"`
	// File is the name of the file the items come from. Optional.
	File string `json:"file,omitempty"`
	// Format is the chunk file format of the items. Optional.
	Format string `json:"format,omitempty"`
	// SourceJobID is the producer's own job id (the file's "job_id"). Optional.
	SourceJobID string `json:"source_job_id,omitempty"`
	// CreatedAt is when the producer opened the job. Required.
	CreatedAt time.Time `json:"created_at"`
}

// MarshalJSON encodes o with "type":"open".
func (o JobOpen) MarshalJSON() ([]byte, error) {
	type plain JobOpen
	return json.Marshal(struct {
		Type JobEventType `json:"type"`
		plain
	}{JobTypeOpen, plain(o)})
}

// JobSeal is the event that seals a job: every item was published, and these are the totals.
// It marshals with "type":"seal".
type JobSeal struct {
	// JobID is the job's id. Required.
	JobID string `json:"job_id"`
	// Env is Dev, Test or Prod. Required.
	Env string `json:"env"`
	// Total is the number of items in the file: Published + Rejected.
	Total int64 `json:"total"`
	// Published is the number of items published with this job's Sluice-Job header.
	Published int64 `json:"published"`
	// Rejected is the number of items the producer refused to publish.
	Rejected int64 `json:"rejected"`
	// Rejections lists the rejected items, at most MaxIssues.
	Rejections []ItemIssue `json:"rejections,omitempty"`
	// RejectionsTruncated is true when Rejected exceeds len(Rejections).
	RejectionsTruncated bool `json:"rejections_truncated,omitempty"`
	// Warnings lists items published with a warning (such as a repeated id), at most MaxIssues.
	Warnings []ItemIssue `json:"warnings,omitempty"`
	// SealedAt is when the producer sealed the job. Required.
	SealedAt time.Time `json:"sealed_at"`
}

// MarshalJSON encodes s with "type":"seal".
func (s JobSeal) MarshalJSON() ([]byte, error) {
	type plain JobSeal
	return json.Marshal(struct {
		Type JobEventType `json:"type"`
		plain
	}{JobTypeSeal, plain(s)})
}

// Check verifies the rules of a seal that JSON Schema cannot express: Total equals Published +
// Rejected; without RejectionsTruncated, len(Rejections) equals Rejected, with it
// len(Rejections) is below Rejected; every issue's Index is below Total. It returns every broken
// rule joined with errors.Join, or nil.
func (s JobSeal) Check() error {
	var errs []error
	if s.Total != s.Published+s.Rejected {
		errs = append(errs, fmt.Errorf("total %d != published %d + rejected %d", s.Total, s.Published, s.Rejected))
	}
	n := int64(len(s.Rejections))
	switch {
	case !s.RejectionsTruncated && n != s.Rejected:
		errs = append(errs, fmt.Errorf("rejections lists %d items but rejected is %d (set rejections_truncated when listing fewer)", n, s.Rejected))
	case s.RejectionsTruncated && n >= s.Rejected:
		errs = append(errs, fmt.Errorf("rejections_truncated is set but rejections lists %d of %d rejected items", n, s.Rejected))
	}
	if len(s.Rejections) > MaxIssues {
		errs = append(errs, fmt.Errorf("rejections lists %d items, more than %d", len(s.Rejections), MaxIssues))
	}
	if len(s.Warnings) > MaxIssues {
		errs = append(errs, fmt.Errorf("warnings lists %d items, more than %d", len(s.Warnings), MaxIssues))
	}
	for i, r := range s.Rejections {
		if r.Index < 0 || int64(r.Index) >= s.Total {
			errs = append(errs, fmt.Errorf("rejections[%d]: index %d outside 0..total-1 (total %d)", i, r.Index, s.Total))
		}
	}
	for i, w := range s.Warnings {
		if w.Index < 0 || int64(w.Index) >= s.Total {
			errs = append(errs, fmt.Errorf("warnings[%d]: index %d outside 0..total-1 (total %d)", i, w.Index, s.Total))
		}
	}
	return errors.Join(errs...)
}

// JobRollback asks the workers to delete every document a job wrote. It marshals with
// "type":"rollback".
type JobRollback struct {
	// JobID is the job to roll back. Required.
	JobID string `json:"job_id"`
	// Env is the job's environment. Required.
	Env string `json:"env"`
	// RequestedBy names the API token that asked for it. Optional.
	RequestedBy string `json:"requested_by,omitempty"`
	// RequestedAt is when it was asked for. Required.
	RequestedAt time.Time `json:"requested_at"`
	// RestorePrevious asks the workers to put back the version each document replaced
	// instead of deleting it, where the document store keeps previous versions (the embedded
	// store does; AstraDB does not, and the rollback fails there with the reason). Optional.
	RestorePrevious bool `json:"restore_previous,omitempty"`
}

// MarshalJSON encodes r with "type":"rollback".
func (r JobRollback) MarshalJSON() ([]byte, error) {
	type plain JobRollback
	return json.Marshal(struct {
		Type JobEventType `json:"type"`
		plain
	}{JobTypeRollback, plain(r)})
}

// JobEventEnvelope decodes one job lifecycle message whose type is not known in advance.
// After json.Unmarshal exactly one of Open, Seal and Rollback is set, matching Type.
// Marshalling encodes whichever of them matches Type. Decoding does not validate; use Validator.Validate
// with JobEvent first.
type JobEventEnvelope struct {
	Type     JobEventType
	Open     *JobOpen
	Seal     *JobSeal
	Rollback *JobRollback
}

// UnmarshalJSON decodes an open, seal or rollback event. It fails on any other "type".
func (e *JobEventEnvelope) UnmarshalJSON(b []byte) error {
	var head struct {
		Type JobEventType `json:"type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("decode job event type: %w", err)
	}
	*e = JobEventEnvelope{Type: head.Type}
	switch head.Type {
	case JobTypeOpen:
		e.Open = new(JobOpen)
		if err := json.Unmarshal(b, e.Open); err != nil {
			return fmt.Errorf("decode job open event: %w", err)
		}
	case JobTypeSeal:
		e.Seal = new(JobSeal)
		if err := json.Unmarshal(b, e.Seal); err != nil {
			return fmt.Errorf("decode job seal event: %w", err)
		}
	case JobTypeRollback:
		e.Rollback = new(JobRollback)
		if err := json.Unmarshal(b, e.Rollback); err != nil {
			return fmt.Errorf("decode job rollback event: %w", err)
		}
	default:
		return fmt.Errorf("decode job event: unknown type %q", head.Type)
	}
	return nil
}

// MarshalJSON encodes the event Type names. It fails when that event is nil.
func (e JobEventEnvelope) MarshalJSON() ([]byte, error) {
	switch {
	case e.Type == JobTypeOpen && e.Open != nil:
		return json.Marshal(*e.Open)
	case e.Type == JobTypeSeal && e.Seal != nil:
		return json.Marshal(*e.Seal)
	case e.Type == JobTypeRollback && e.Rollback != nil:
		return json.Marshal(*e.Rollback)
	}
	return nil, fmt.Errorf("encode job event: type %q without its event", e.Type)
}

// DeadLetterError says why a message was dead-lettered.
type DeadLetterError struct {
	// Class is one of the pipeline/fault classes: validation, limit, rejected, auth,
	// transient, exhausted. Required.
	Class string `json:"class"`
	// Message is the last error, for a person; it never contains credentials. Required.
	Message string `json:"message"`
	// Sink names the sink that failed, when one did. Optional.
	Sink string `json:"sink,omitempty"`
}

// DeadLetterRef locates bytes of an original message that were too large to travel inside its
// dead letter: an object in a JetStream object store bucket (BucketDLQPayloads), with the size
// and SHA-256 a reader checks them against.
type DeadLetterRef struct {
	// Bucket is the object store bucket. Required.
	Bucket string `json:"bucket"`
	// Object is the object's name in Bucket (the dead letter's ID for a payload). Required.
	Object string `json:"object"`
	// Size is the number of bytes stored. Required.
	Size int64 `json:"size"`
	// SHA256 is the lower-case hex SHA-256 of those bytes. Required.
	SHA256 string `json:"sha256"`
}

// DeadLetterEnvelope is the message Sluice publishes on DLQSubject(Subject), schema DeadLetter:
// the original message whole, plus why and when it failed. It marshals Payload as standard
// base64. A dead letter never exceeds the broker's max payload: an original too large to embed
// is stored in BucketDLQPayloads and referenced by PayloadRef (and, when its headers alone are
// too large, HeadersRef). (It is not named DeadLetter because that is the schema Name.)
type DeadLetterEnvelope struct {
	// ID identifies the dead letter. Required.
	ID string `json:"id"`
	// Subject is the original message's subject. Required.
	Subject string `json:"subject"`
	// Headers are the original message's headers (same shape as nats.Header). A nil map is
	// encoded as {}.
	Headers map[string][]string `json:"headers"`
	// Payload is the original message's bytes. Nil is encoded as "". It is empty when
	// PayloadRef is set.
	Payload []byte `json:"payload"`
	// PayloadRef, when set, locates the original payload, which was too large to embed.
	// Optional.
	PayloadRef *DeadLetterRef `json:"payload_ref,omitempty"`
	// HeadersRef, when set, locates the original headers (their JSON, in the shape of Headers),
	// which were too large to embed; Headers then holds only those of them that fit.
	// Optional.
	HeadersRef *DeadLetterRef `json:"headers_ref,omitempty"`
	// Error says why it failed. Required.
	Error DeadLetterError `json:"error"`
	// Attempts is the number of deliveries so far, at least 1.
	Attempts int `json:"attempts"`
	// FirstFailure and LastFailure bracket the failed attempts. Required.
	FirstFailure time.Time `json:"first_failure"`
	LastFailure  time.Time `json:"last_failure"`
	// Stream and StreamSeq locate the original message. Required; StreamSeq is at least 1.
	Stream    string `json:"stream"`
	StreamSeq uint64 `json:"stream_seq"`
	// Consumer is the durable consumer that delivered it. Optional.
	Consumer string `json:"consumer,omitempty"`
	// TraceID is the 32-hex W3C trace id of the original traceparent. Optional.
	TraceID string `json:"trace_id,omitempty"`
	// JobID is the original Sluice-Job header. Optional.
	JobID string `json:"job_id,omitempty"`
	// Item is the original Sluice-Item header. Optional (nil: none; 0 is a valid index).
	Item *int `json:"item,omitempty"`
	// DeadLetteredAt is when the dead letter was written. Required.
	DeadLetteredAt time.Time `json:"dead_lettered_at"`
	// Replays counts replays of this dead letter. Optional; 0 is omitted.
	Replays int `json:"replays,omitempty"`
}

// MarshalJSON encodes d, writing a nil Headers map (or nil header value list) as empty and a nil
// Payload as "" so that the result matches dead-letter.v1.json.
func (d DeadLetterEnvelope) MarshalJSON() ([]byte, error) {
	type plain DeadLetterEnvelope
	p := plain(d)
	if p.Payload == nil {
		p.Payload = []byte{}
	}
	if p.Headers == nil {
		p.Headers = map[string][]string{}
	} else {
		for _, v := range p.Headers {
			if v == nil {
				p.Headers = cloneHeaders(p.Headers)
				break
			}
		}
	}
	return json.Marshal(p)
}

func cloneHeaders(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, v := range h {
		if v == nil {
			v = []string{}
		}
		out[k] = v
	}
	return out
}

// ChunkBundlePayload is the payload of a chunk bundle message (chunk-bundle.v1.json): many items of
// one job's file, in file order.
type ChunkBundlePayload struct {
	// Items are the bundle's items, 1 to MaxBundleItems, indexes strictly increasing. Required.
	Items []BundleItem `json:"items"`
}

// BundleItem is one item of a chunk bundle.
type BundleItem struct {
	// Index is the item's 0-based position in its job's file (what Sluice-Item carries for a
	// single chunk). Required.
	Index int `json:"index"`
	// Chunk is the chunk record as the producer has it (chunk.v1.json), kept as raw JSON.
	// Required.
	Chunk json.RawMessage `json:"chunk"`
}
