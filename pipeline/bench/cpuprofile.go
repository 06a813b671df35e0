package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"time"
)

// The CPU split: who in this process used the CPU of a run.
//
// Everything a benchmark measures here runs in one process — the broker, the Data API double,
// Sluice's loader and worker — so getrusage alone cannot say what the broker costs. Each part
// is started inside InPart, which sets a goroutine label (pprof.Do); Go copies a goroutine's
// labels to every goroutine it starts, so the nats-server's accept loop, the connections it
// serves and its JetStream API goroutines carry the broker's label (its stream and consumer
// loops replace it with labels of their own, "account", "stream", "consumer", which count as
// the broker's too), the double's HTTP
// server goroutines the double's, and the nats.go connection, loader, worker, Astra client and
// SQLite writes (pure Go) the client's. A CPU profile (StartCPUProfile, SIGPROF at 100 Hz, per
// thread) records the label of the goroutine each sample interrupted, and Stop sums the
// samples per label. What carries no label is the runtime's own work, mostly the GC's
// background mark workers (system goroutines never inherit labels) and timer callbacks started
// from the scheduler; a GC assist is charged to the goroutine that allocated. The split is a
// sample: at 100 samples per CPU-second, a part using 1 s over a run is known to ≈±10%.

// The parts of the process the CPU split tells apart.
const (
	// PartBroker is the embedded nats-server.
	PartBroker = "broker"
	// PartClient is the code under test: Sluice's loader and worker with their nats.go
	// connection and sink, or the astrapy-style loader, or a raw nats.go pipeline.
	PartClient = "client"
	// PartDouble is the Data API double, which in production is the database, elsewhere.
	PartDouble = "double"
	// PartUnlabeled is CPU no part's goroutines used: GC background marking, scheduler timers.
	PartUnlabeled = "unlabeled"
)

// partLabel is the goroutine label key InPart sets.
const partLabel = "sluice.bench.part"

// natsServerLabels are the label keys nats-server sets on its stream and consumer goroutines
// (server.setGoRoutineLabels), replacing the labels they inherited: a sample with any of them
// is the broker's.
var natsServerLabels = map[string]bool{"account": true, "stream": true, "consumer": true, "type": true}

// InPart runs f with the goroutine label of part, which every goroutine f starts (and those
// they start) keeps for its life, so that a CPU profile charges their work to part. It blocks
// until f returns and then clears the calling goroutine's labels. Safe for concurrent use.
func InPart(part string, f func()) {
	pprof.Do(context.Background(), pprof.Labels(partLabel, part), func(context.Context) { f() })
}

// CPUProfile samples this process's CPU by part until Stop. Only one runs in a process at a
// time (the Go runtime has one CPU profiler); its methods are not safe for concurrent use.
type CPUProfile struct {
	buf     bytes.Buffer
	stopped bool
}

// ErrProfiling is returned by StartCPUProfile when another CPU profile (go test -cpuprofile,
// another benchmark) is running.
var ErrProfiling = errors.New("bench: a CPU profile is already running in this process")

// StartCPUProfile starts sampling. It fails with ErrProfiling when the process's CPU profiler
// is in use; the caller then has no split to report, which is not a failure of the run.
func StartCPUProfile() (*CPUProfile, error) {
	p := &CPUProfile{}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProfiling, err)
	}
	return p, nil
}

// CPUSplit is the CPU time a profile sampled, by part.
type CPUSplit struct {
	// ByPart is the sampled CPU time per part (PartBroker, ...; PartUnlabeled for the rest).
	ByPart map[string]time.Duration
	// Samples is how many samples the profile holds: the split's precision.
	Samples int
}

// Total is the CPU time of every sample.
func (s CPUSplit) Total() time.Duration {
	var t time.Duration
	for _, d := range s.ByPart {
		t += d
	}
	return t
}

// Add adds o's samples to s.
func (s *CPUSplit) Add(o CPUSplit) {
	if s.ByPart == nil {
		s.ByPart = map[string]time.Duration{}
	}
	for k, d := range o.ByPart {
		s.ByPart[k] += d
	}
	s.Samples += o.Samples
}

// Stop stops sampling and returns the split. It blocks until the profiler has written its
// last samples (up to ≈0.2 s). Calling it again returns an error.
func (p *CPUProfile) Stop() (CPUSplit, error) {
	if p.stopped {
		return CPUSplit{}, errors.New("bench: CPU profile stopped twice")
	}
	p.stopped = true
	pprof.StopCPUProfile()
	return parseCPUSplit(&p.buf)
}

// parseCPUSplit reads a gzipped pprof CPU profile (profile.proto) and sums its "cpu" values
// by the partLabel label of each sample. It reads the few fields it needs by hand, so that
// the benchmarks need no profile library.
func parseCPUSplit(r io.Reader) (CPUSplit, error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return CPUSplit{}, fmt.Errorf("bench: read CPU profile: %w", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return CPUSplit{}, fmt.Errorf("bench: read CPU profile: %w", err)
	}
	prof, err := decodeProfile(data)
	if err != nil {
		return CPUSplit{}, fmt.Errorf("bench: parse CPU profile: %w", err)
	}
	return prof.split()
}

// rawProfile holds the fields of a profile.proto message that parseCPUSplit uses.
type rawProfile struct {
	samples     []rawSample
	sampleTypes []int64 // string table index of each value's type
	strs        []string
}

// rawSample is one sample of a rawProfile.
type rawSample struct {
	values []int64
	labels [][2]int64 // key and value, string table indexes
}

// decodeProfile reads a profile's sample types, samples and string table from data, an
// uncompressed profile.proto message.
func decodeProfile(data []byte) (rawProfile, error) {
	var p rawProfile
	err := eachField(data, func(num int, wire int, v uint64, b []byte) error {
		switch {
		case num == 1 && wire == 2: // sample_type
			return eachField(b, func(num, wire int, v uint64, _ []byte) error {
				if num == 1 && wire == 0 {
					p.sampleTypes = append(p.sampleTypes, int64(v))
				}
				return nil
			})
		case num == 2 && wire == 2: // sample
			s, err := decodeSample(b)
			p.samples = append(p.samples, s)
			return err
		case num == 6 && wire == 2: // string_table
			p.strs = append(p.strs, string(b))
		}
		return nil
	})
	return p, err
}

// decodeSample reads a Sample message: its values (packed or not) and its labels' keys and
// string values.
func decodeSample(b []byte) (rawSample, error) {
	var s rawSample
	err := eachField(b, func(num, wire int, v uint64, b []byte) error {
		switch {
		case num == 2 && wire == 0:
			s.values = append(s.values, int64(v))
		case num == 2 && wire == 2: // packed values
			for len(b) > 0 {
				x, n := binary.Uvarint(b)
				if n <= 0 {
					return errors.New("bad packed value")
				}
				s.values, b = append(s.values, int64(x)), b[n:]
			}
		case num == 3 && wire == 2: // label
			var l [2]int64
			err := eachField(b, func(num, wire int, v uint64, _ []byte) error {
				if wire == 0 && (num == 1 || num == 2) {
					l[num-1] = int64(v)
				}
				return nil
			})
			s.labels = append(s.labels, l)
			return err
		}
		return nil
	})
	return s, err
}

// str returns string table entry i, "" when i is out of range.
func (p rawProfile) str(i int64) string {
	if i < 0 || int(i) >= len(p.strs) {
		return ""
	}
	return p.strs[i]
}

// split sums the profile's "cpu" values by part: a sample's partLabel, else PartBroker when
// nats-server labelled it, else PartUnlabeled.
func (p rawProfile) split() (CPUSplit, error) {
	cpu := -1
	for i, t := range p.sampleTypes {
		if p.str(t) == "cpu" {
			cpu = i
		}
	}
	split := CPUSplit{ByPart: map[string]time.Duration{}}
	if len(p.samples) == 0 {
		return split, nil
	}
	if cpu < 0 {
		return CPUSplit{}, errors.New("bench: parse CPU profile: no cpu sample type")
	}
	for _, s := range p.samples {
		if cpu >= len(s.values) {
			return CPUSplit{}, errors.New("bench: parse CPU profile: a sample without its cpu value")
		}
		part := PartUnlabeled
		for _, l := range s.labels {
			switch key := p.str(l[0]); {
			case key == partLabel:
				part = p.str(l[1])
			case natsServerLabels[key] && part == PartUnlabeled:
				part = PartBroker
			}
		}
		split.ByPart[part] += time.Duration(s.values[cpu])
		split.Samples += int(s.values[0])
	}
	return split, nil
}

// eachField calls f for each field of the protobuf message b: its number, wire type, and its
// value (varint, fixed) or bytes (length-delimited). Groups (wire types 3, 4) are refused.
func eachField(b []byte, f func(num, wire int, v uint64, data []byte) error) error {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return errors.New("bad field key")
		}
		b = b[n:]
		num, wire := int(key>>3), int(key&7)
		var v uint64
		var data []byte
		switch wire {
		case 0:
			v, n = binary.Uvarint(b)
			if n <= 0 {
				return errors.New("bad varint")
			}
			b = b[n:]
		case 1:
			if len(b) < 8 {
				return errors.New("short fixed64")
			}
			v, b = binary.LittleEndian.Uint64(b), b[8:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return errors.New("bad length")
			}
			data, b = b[n:n+int(l)], b[n+int(l):]
		case 5:
			if len(b) < 4 {
				return errors.New("short fixed32")
			}
			v, b = uint64(binary.LittleEndian.Uint32(b)), b[4:]
		default:
			return fmt.Errorf("wire type %d not supported", wire)
		}
		if err := f(num, wire, v, data); err != nil {
			return err
		}
	}
	return nil
}
