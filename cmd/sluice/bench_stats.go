package main

// Statistics of the bench scenarios: latency percentiles, Prometheus duration histograms and
// the Go scheduler's latency histogram.

import (
	"cmp"
	"fmt"
	"math"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// schedLatencies reads this process's Go scheduler latency histogram as cumulative buckets.
func schedLatencies() histogram {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return histogram{}
	}
	h := s[0].Value.Float64Histogram()
	var out histogram
	var cum float64
	for i, c := range h.Counts {
		cum += float64(c)
		out.le = append(out.le, h.Buckets[i+1])
		out.count = append(out.count, cum)
	}
	return out
}

// since returns the observations h has beyond before, a reading of the same histogram taken
// earlier.
func (h histogram) since(before histogram) histogram {
	if len(before.count) != len(h.count) {
		return h
	}
	out := histogram{le: h.le, count: make([]float64, len(h.count))}
	for i := range h.count {
		out.count[i] = h.count[i] - before.count[i]
	}
	return out
}

// histogram is one route's cumulative buckets of sluice_http_request_duration_seconds.
type histogram struct {
	le    []float64 // upper bounds in seconds, ascending; +Inf last
	count []float64 // cumulative
}

// at returns the upper bound, in milliseconds, of the bucket holding quantile q; -1 past the
// last finite bucket, 0 without observations.
func (h histogram) at(q float64) float64 {
	if len(h.count) == 0 || h.count[len(h.count)-1] == 0 {
		return 0
	}
	total := h.count[len(h.count)-1]
	for i, c := range h.count {
		if c >= q*total {
			if math.IsInf(h.le[i], 1) {
				return -1
			}
			return h.le[i] * 1000
		}
	}
	return -1
}

// parseDurationBuckets reads the sluice_http_request_duration_seconds_bucket lines of a
// Prometheus text exposition.
func parseDurationBuckets(text []byte) (map[string]histogram, error) {
	const prefix = "sluice_http_request_duration_seconds_bucket{"
	type bucket struct{ le, count float64 }
	byRoute := map[string][]bucket{}
	for line := range strings.SplitSeq(string(text), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return nil, fmt.Errorf("metrics: malformed line %q", line)
		}
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			l[k] = strings.Trim(v, `"`)
		}
		le, err := strconv.ParseFloat(l["le"], 64) // "+Inf" parses as +Inf
		if err != nil {
			return nil, fmt.Errorf("metrics: bucket bound in %q: %w", line, err)
		}
		n, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: bucket count in %q: %w", line, err)
		}
		key := l["method"] + " " + l["route"]
		byRoute[key] = append(byRoute[key], bucket{le, n})
	}
	out := map[string]histogram{}
	for key, bs := range byRoute {
		slices.SortFunc(bs, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
		var h histogram
		for _, b := range bs {
			h.le, h.count = append(h.le, b.le), append(h.count, b.count)
		}
		out[key] = h
	}
	return out, nil
}

// percentile returns the q-quantile (0..1) of sorted durations, in milliseconds.
func percentile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(q*float64(len(sorted))))
	return float64(sorted[i]) / float64(time.Millisecond)
}
