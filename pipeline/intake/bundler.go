package intake

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// chunkBundler cuts a job's chunks, in file order, into bundles of at most items chunks and
// bytes of payload and adds them to a BatchWriter, which stores them in order. A chunk too
// large to fit a bundle under bytes, and every chunk when single is set, is published as a
// single-chunk message, after the bundle before it. Not safe for concurrent use.
//
// A bundle's Nats-Msg-Id is schemas.ChunkBundleMsgID (job, first and last index) followed by
// "/" and a digest chained over every message before it and its own payload (a chunk sent
// alone between bundles likewise: schemas.ChunkMsgID, "/", the digest). The same file cut
// the same way gets the same ids, so a bundle published again after a crash is deduplicated by
// the broker. Were the file cut differently on the resubmission (other limits, other items
// rejected), every bundle from the first difference on gets a new id and is stored again, in
// file order, after everything stored before: a bundle that matched by first and last index
// alone could otherwise be deduplicated behind a re-cut earlier one, and an earlier item with a
// repeated id would then win over a later one.
type chunkBundler struct {
	w       *sjs.BatchWriter
	job     string
	msgJob  string // the job id in Nats-Msg-Id: job, or its generation's (generationID)
	subject string
	items   int
	bytes   int
	single  bool

	buf         []byte // the open bundle's payload, without its closing "]}"
	n           int    // items in it
	first, last int    // their indexes
	chain       []byte // digest of the bundles published so far
	// trace is the job's W3C trace context (traceparent, tracestate), set on every message;
	// nil when the load is not traced.
	trace nats.Header
}

// traced sets the job's trace context on m.
func (b *chunkBundler) traced(m *nats.Msg) {
	for k, v := range b.trace {
		m.Header[k] = v
	}
}

// bundleHead and bundleTail enclose a bundle's items.
const (
	bundleHead = `{"items":[`
	bundleTail = `]}`
)

// add publishes (or bundles) item index with chunk id and record, a valid JSON object. dup
// says an earlier item of the job had the same id. It returns the BatchWriter's error.
func (b *chunkBundler) add(index int, id string, record []byte, dup bool) error {
	entry := len(`,{"index":,"chunk":}`) + len(strconv.Itoa(index)) + len(record)
	if b.single || len(bundleHead)+entry+len(bundleTail) > b.bytes {
		if err := b.flush(); err != nil {
			return err
		}
		msgID := schemas.ChunkMsgID(b.idJob(), id)
		if dup {
			msgID = schemas.ChunkMsgIDDup(b.idJob(), id, index)
		}
		if !b.single {
			// Between bundles, it joins their chain (see chunkBundler).
			msgID += "/" + b.link(record)
		}
		m := nats.NewMsg(b.subject)
		m.Data = record
		m.Header.Set(nats.MsgIdHdr, msgID)
		m.Header.Set(schemas.HeaderJob, b.job)
		m.Header.Set(schemas.HeaderItem, schemas.FormatItem(index))
		m.Header.Set(schemas.HeaderSchema, string(schemas.Chunk))
		b.traced(m)
		return b.w.Add(m)
	}
	if b.n > 0 && (b.n >= b.items || len(b.buf)+entry+len(bundleTail) > b.bytes) {
		if err := b.flush(); err != nil {
			return err
		}
	}
	if b.n == 0 {
		b.buf = append(make([]byte, 0, min(b.bytes, 64<<10)), bundleHead...)
		b.first = index
	} else {
		b.buf = append(b.buf, ',')
	}
	b.buf = append(b.buf, `{"index":`...)
	b.buf = strconv.AppendInt(b.buf, int64(index), 10)
	b.buf = append(b.buf, `,"chunk":`...)
	b.buf = append(b.buf, record...)
	b.buf = append(b.buf, '}')
	b.n++
	b.last = index
	return nil
}

// idJob returns the job id for message ids.
func (b *chunkBundler) idJob() string { return cmp.Or(b.msgJob, b.job) }

// link extends the chain with the payload of the next message and returns the new digest's
// first 8 bytes in hex, for its Nats-Msg-Id.
func (b *chunkBundler) link(payload []byte) string {
	h := sha256.New()
	h.Write(b.chain)
	h.Write(payload)
	b.chain = h.Sum(b.chain[:0])
	return hex.EncodeToString(b.chain[:8])
}

// flush publishes the open bundle, if any.
func (b *chunkBundler) flush() error {
	if b.n == 0 {
		return nil
	}
	m := nats.NewMsg(b.subject)
	m.Data = append(b.buf, bundleTail...)
	m.Header.Set(nats.MsgIdHdr, schemas.ChunkBundleMsgID(b.idJob(), b.first, b.last)+"/"+b.link(m.Data))
	m.Header.Set(schemas.HeaderJob, b.job)
	m.Header.Set(schemas.HeaderSchema, string(schemas.ChunkBundle))
	m.Header.Set(schemas.HeaderItems, strconv.Itoa(b.n))
	b.traced(m)
	b.buf, b.n = nil, 0
	return b.w.Add(m)
}
