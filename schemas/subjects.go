package schemas

import (
	"strconv"
	"strings"
)

// Environments. A chunk, job or graph subject ends in one of them; each has its own collections.
const (
	Dev  = "dev"
	Test = "test"
	Prod = "prod"
)

// ValidEnv reports whether env is one of Dev, Test, Prod.
func ValidEnv(env string) bool {
	return env == Dev || env == Test || env == Prod
}

// MaxKeyLen is the longest subject token ValidKey accepts.
const MaxKeyLen = 128

// ValidKey reports whether s can be one subject token chosen by a producer: a requirement or
// feature-request key, or a job id. It must be 1 to MaxKeyLen characters from A-Z, a-z, 0-9,
// '_' and '-' (so it never contains a subject separator or wildcard).
func ValidKey(s string) bool {
	if len(s) == 0 || len(s) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Streams provisioned by Sluice. Producers never create them; they only publish to subjects the
// streams capture.
const (
	// StreamChunks captures ChunkSubjects.
	StreamChunks = "SLUICE_CHUNKS"
	// StreamJobs captures JobSubjects.
	StreamJobs = "SLUICE_JOBS"
	// StreamDLQ captures DLQSubjects.
	StreamDLQ = "SLUICE_DLQ"
	// BucketDLQPayloads is the JetStream object store bucket holding the originals of dead
	// letters too large to embed them (DeadLetterEnvelope.PayloadRef and HeadersRef).
	BucketDLQPayloads = "sluice_dlq_payloads"
)

// Subject prefixes and wildcards.
const (
	chunkPrefix       = "sluice.v1.chunks."
	jobPrefix         = "sluice.v1.jobs."
	graphPrefix       = "sluice.v1.graph."
	requirementPrefix = "sluice.v1.requirements."
	featurePrefix     = "sluice.v1.features."
	dlqPrefix         = "sluice.dlq."

	// ChunkSubjects matches every chunk subject.
	ChunkSubjects = chunkPrefix + "*"
	// JobSubjects matches every job lifecycle subject.
	JobSubjects = jobPrefix + "*"
	// GraphSubjects matches every graph batch subject.
	GraphSubjects = graphPrefix + "*"
	// RequirementSubjects matches every requirement command subject.
	RequirementSubjects = requirementPrefix + "*"
	// FeatureSubjects matches every feature-request command subject.
	FeatureSubjects = featurePrefix + "*"
	// DLQSubjects matches every dead-letter subject.
	DLQSubjects = dlqPrefix + ">"
)

// ChunkSubject returns the subject for one chunk of environment env: "sluice.v1.chunks."+env.
// env is not checked; see ValidEnv.
func ChunkSubject(env string) string { return chunkPrefix + env }

// JobSubject returns the subject for job lifecycle events of env: "sluice.v1.jobs."+env.
// env is not checked; see ValidEnv.
func JobSubject(env string) string { return jobPrefix + env }

// GraphSubject returns the subject for graph batches of env: "sluice.v1.graph."+env.
// env is not checked; see ValidEnv.
func GraphSubject(env string) string { return graphPrefix + env }

// RequirementSubject returns the subject for mutations of requirement key:
// "sluice.v1.requirements."+key. Carrying the key in the subject keeps per-key order. key is
// not checked; see ValidKey.
func RequirementSubject(key string) string { return requirementPrefix + key }

// FeatureSubject returns the subject for mutations of feature request key:
// "sluice.v1.features."+key. key is not checked; see ValidKey.
func FeatureSubject(key string) string { return featurePrefix + key }

// DLQSubject returns the dead-letter subject for a message first published on original:
// "sluice.dlq." followed by original without its leading "sluice.", so
// "sluice.v1.chunks.dev" gives "sluice.dlq.v1.chunks.dev". A subject outside "sluice." is
// appended whole.
func DLQSubject(original string) string {
	return dlqPrefix + strings.TrimPrefix(original, "sluice.")
}

// OriginalSubject is the inverse of DLQSubject for Sluice's versioned subjects: it returns the
// subject a dead letter on dlq came from ("sluice.dlq.v1.chunks.dev" gives
// "sluice.v1.chunks.dev"), and false when dlq is not the dead-letter subject of a
// "sluice.v1." subject.
func OriginalSubject(dlq string) (string, bool) {
	rest, ok := strings.CutPrefix(dlq, dlqPrefix)
	if !ok || !strings.HasPrefix(rest, "v1.") || len(rest) == len("v1.") {
		return "", false
	}
	return "sluice." + rest, true
}

// EnvFromSubject returns the environment of a chunk, job or graph subject
// ("sluice.v1.chunks.dev" gives "dev"), or of the dead-letter subject of one, and false for any
// other subject or an env that is not valid.
func EnvFromSubject(subject string) (string, bool) {
	if rest, ok := strings.CutPrefix(subject, dlqPrefix); ok {
		subject = "sluice." + rest
	}
	for _, p := range [...]string{chunkPrefix, jobPrefix, graphPrefix} {
		if env, ok := strings.CutPrefix(subject, p); ok {
			return env, ValidEnv(env)
		}
	}
	return "", false
}

// SchemaForSubject returns the schema of messages on subject: Chunk on a chunk subject,
// JobEvent on a job subject, DeadLetter on any dead-letter subject; false otherwise (graph and
// command payloads have no schema in contract v1 yet). The env is not checked.
func SchemaForSubject(subject string) (Name, bool) {
	switch {
	case strings.HasPrefix(subject, dlqPrefix):
		return DeadLetter, true
	case strings.HasPrefix(subject, chunkPrefix):
		return Chunk, true
	case strings.HasPrefix(subject, jobPrefix):
		return JobEvent, true
	}
	return "", false
}

// Header names.
const (
	// HeaderMsgID is JetStream's deduplication id. Chunks carry ChunkMsgID (or ChunkMsgIDDup).
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderJob ties a chunk to a job: the job's job_id. Optional; a chunk without it is
	// still written but counts towards no job.
	HeaderJob = "Sluice-Job"
	// HeaderItem is the chunk's 0-based index in its job's file, as decimal digits. Required
	// when HeaderJob is set.
	HeaderItem = "Sluice-Item"
	// HeaderSchema names the payload's schema (a Name). Optional; when set it must be the
	// schema of the subject.
	HeaderSchema = "Sluice-Schema"
	// HeaderTraceparent is the W3C trace context header, propagated into logs and dead letters.
	HeaderTraceparent = "traceparent"
	// HeaderRequeues counts how often the graph worker put a graph batch back at the end of
	// its stream because an edge's endpoint was not stored yet. Set by Sluice only.
	HeaderRequeues = "Sluice-Requeues"
	// HeaderSignature authenticates a command or a job rollback: the Sluice API signs what it
	// publishes with a key it shares with the workers ("v1:<key id>:<mac>", see pipeline/sign),
	// and the workers dead-letter a command or rollback without a valid one. Producers other
	// than the API cannot set it; they submit commands and rollbacks through the API.
	HeaderSignature = "Sluice-Signature"
	// HeaderItems is how many chunks a chunk bundle holds, as decimal digits. Optional; the
	// worker weighs a message by it when it gathers a batch (a bundle without it is weighed
	// by its size), so a batch holds about as many chunks as it is meant to, whatever their
	// packing. The loader sets it.
	HeaderItems = "Sluice-Items"
)

// DefaultMaxMessageBytes is the default limit on one message's payload (1 MiB), the same as
// nats-server's default max_payload. Larger chunks must be split by the producer.
const DefaultMaxMessageBytes = 1 << 20

// MaxIssues is the most entries a seal's rejections or warnings list may hold.
const MaxIssues = 1000

// ChunkMsgID returns the Nats-Msg-Id of a chunk: jobID+"/"+chunkID. A chunk resent within the
// stream's duplicate window is then stored once.
func ChunkMsgID(jobID, chunkID string) string { return jobID + "/" + chunkID }

// ChunkMsgIDDup returns the Nats-Msg-Id of the second or later item with the same chunk id in
// one job: jobID+"/"+chunkID+"#"+index, index being the item's Sluice-Item. Without it
// JetStream would drop the later item as a duplicate, while the later item is the one that
// must win.
func ChunkMsgIDDup(jobID, chunkID string, index int) string {
	return jobID + "/" + chunkID + "#" + strconv.Itoa(index)
}

// MaxBundleItems is the most items one chunk bundle (ChunkBundle) may hold, as its schema
// says: Sluice orders the documents of a bundle's items by their position in it (a document's
// version is its message's stream sequence × MaxBundleItems + position), so the position must
// fit in those bits.
const MaxBundleItems = 1024

// ChunkBundleMsgID returns the Nats-Msg-Id of a chunk bundle holding a job's items first to
// last (their indexes): jobID+"/items/"+first+"-"+last. A bundle published again after a
// crash is then stored once, provided the file is cut into the same bundles — which the same
// file and the same bundle limits always do. Sluice's loader appends "/" and a digest chained
// over the job's earlier messages, so that a file cut differently is stored again from the
// first difference on instead of being partly deduplicated.
func ChunkBundleMsgID(jobID string, first, last int) string {
	return jobID + "/items/" + strconv.Itoa(first) + "-" + strconv.Itoa(last)
}

// FormatItem renders a Sluice-Item header value.
func FormatItem(index int) string { return strconv.Itoa(index) }

// ParseItem parses a Sluice-Item header value: decimal digits only (no sign, no spaces), at
// most 15 digits. It returns false for anything else.
func ParseItem(v string) (int, bool) {
	if len(v) == 0 || len(v) > 15 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// TraceIDFromTraceparent returns the trace id of a W3C traceparent header value
// ("00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"), and false when tp is malformed or
// the trace id is all zeros.
func TraceIDFromTraceparent(tp string) (string, bool) {
	parts := strings.Split(strings.TrimSpace(tp), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || parts[0] == "ff" || len(parts[1]) != 32 ||
		len(parts[2]) != 16 || len(parts[3]) != 2 {
		return "", false
	}
	if parts[0] == "00" && len(parts) != 4 {
		return "", false
	}
	for _, p := range parts[:4] {
		if !lowerHex(p) {
			return "", false
		}
	}
	if strings.Trim(parts[1], "0") == "" || strings.Trim(parts[2], "0") == "" {
		return "", false
	}
	return parts[1], true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
