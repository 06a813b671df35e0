package httpapi

import (
	"net/http"
	"time"

	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// BrokerReader reads the broker's statistics for GET /v1/consumers: streams and the lag of
// durable consumers. Implementations serve a cached reading (BrokerStatsReader adapts
// sources/jetstream's BrokerStats, refreshed every 10 s), so a poller costs the broker
// nothing.
type BrokerReader interface {
	// BrokerReading returns the last reading. It must not block on I/O and must be safe for
	// concurrent use. The caller owns the returned slices.
	BrokerReading() BrokerReading
}

// BrokerReading is one reading of the broker's statistics.
type BrokerReading struct {
	// ReadAt is when the reading was taken; zero before the first one (the answer's read_at
	// is then null).
	ReadAt    time.Time
	Streams   []StreamStat
	Consumers []ConsumerLag
}

// StreamStat is one stream's storage.
type StreamStat struct {
	Stream   string `json:"stream"`
	Messages uint64 `json:"messages"`
	Bytes    uint64 `json:"bytes"`
	// MaxBytes is the stream's byte limit; -1 means none.
	MaxBytes int64 `json:"max_bytes"`
}

// ConsumerLag is one durable consumer's lag.
type ConsumerLag struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Pending counts messages in the stream not yet delivered to the consumer.
	Pending uint64 `json:"pending"`
	// AckPending counts messages delivered and not yet acknowledged.
	AckPending uint64 `json:"ack_pending"`
	// Redelivered counts messages delivered more than once and not yet acknowledged.
	Redelivered uint64 `json:"redelivered"`
}

// BrokerStatsReader is stats as a BrokerReader; nil (a nil interface, so GET /v1/consumers
// answers 501) when stats is nil.
func BrokerStatsReader(stats *sjs.BrokerStats) BrokerReader {
	if stats == nil {
		return nil
	}
	return brokerStatsReader{stats}
}

type brokerStatsReader struct{ stats *sjs.BrokerStats }

func (r brokerStatsReader) BrokerReading() BrokerReading {
	snap := r.stats.Snapshot()
	rd := BrokerReading{ReadAt: snap.At,
		Streams:   make([]StreamStat, 0, len(snap.Streams)),
		Consumers: make([]ConsumerLag, 0, len(snap.Consumers))}
	for _, s := range snap.Streams {
		rd.Streams = append(rd.Streams, StreamStat{Stream: s.Stream, Messages: s.Messages, Bytes: s.Bytes, MaxBytes: s.MaxBytes})
	}
	for _, c := range snap.Consumers {
		rd.Consumers = append(rd.Consumers, ConsumerLag{Stream: c.Stream, Consumer: c.Consumer,
			Pending: c.Pending, AckPending: c.AckPending, Redelivered: c.Redelivered})
	}
	return rd
}

// consumersResponse is GET /v1/consumers's answer; its arrays are never null.
type consumersResponse struct {
	ReadAt    *time.Time    `json:"read_at"`
	Streams   []StreamStat  `json:"streams"`
	Consumers []ConsumerLag `json:"consumers"`
}

// listConsumers answers the last cached reading of the broker's streams and consumers; 501
// without a BrokerReader.
func (s *Server) listConsumers(w http.ResponseWriter, r *http.Request) {
	rd := s.cfg.Broker.BrokerReading()
	resp := consumersResponse{Streams: rd.Streams, Consumers: rd.Consumers}
	if resp.Streams == nil {
		resp.Streams = []StreamStat{}
	}
	if resp.Consumers == nil {
		resp.Consumers = []ConsumerLag{}
	}
	if !rd.ReadAt.IsZero() {
		// Milliseconds, which every JavaScript Date parses.
		at := rd.ReadAt.UTC().Truncate(time.Millisecond)
		resp.ReadAt = &at
	}
	s.writeJSON(w, r, http.StatusOK, resp)
}
