package observability_test

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/promql/parser"
)

// synthetic names series that Prometheus itself makes for every scrape target, so that they
// exist without being in metrics.txt. Only "up" is used (the process-down alert).
var synthetic = map[string]bool{"up": true}

// conditional names metric families that Sluice exports only in some deployments, and that
// metrics.txt (written from test processes) therefore lacks, each with the reason.
var conditional = map[string]string{
	"sluice_jetstream_storage_limit_bytes": "exported only when the broker account has a JetStream storage limit; the test brokers have none",
}

// loadMetrics reads metrics.txt: one "name type" line per live sluice_* metric family, sorted,
// the file the metrics test of the binary writes (deployments/observability/metrics.txt).
func loadMetrics(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("metrics.txt")
	if err != nil {
		t.Fatalf("open metrics.txt: %v", err)
	}
	defer f.Close()
	types := map[string]string{}
	var names []string
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			t.Fatalf("metrics.txt:%d: want \"name type\", got %q", n, line)
		}
		switch fields[1] {
		case "counter", "gauge", "histogram", "summary", "untyped":
		default:
			t.Fatalf("metrics.txt:%d: unknown type %q", n, fields[1])
		}
		if _, dup := types[fields[0]]; dup {
			t.Fatalf("metrics.txt:%d: %s listed twice", n, fields[0])
		}
		types[fields[0]] = fields[1]
		names = append(names, fields[0])
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read metrics.txt: %v", err)
	}
	if !slices.IsSorted(names) {
		t.Fatalf("metrics.txt is not sorted")
	}
	if len(types) == 0 {
		t.Fatalf("metrics.txt lists no metric")
	}
	return types
}

// grafanaVars replaces Grafana's template variables in a dashboard query by values that
// make it valid PromQL, so that Prometheus's parser can read it.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "1h",
	"${job}", "job",
	"$job", "job",
)

// exprMetrics returns the metric names that the PromQL expression expr selects, in the order
// met. A selector without a metric name (only {__name__=~…}) is an error: every query must name
// what it reads, or the test could not check it.
func exprMetrics(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	var names []string
	var bad error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if vs.Name == "" {
				bad = fmt.Errorf("%q: selector %s names no metric", expr, vs)
			}
			names = append(names, vs.Name)
		}
		return nil
	})
	return names, bad
}

// unknownMetrics returns the metrics that expr reads and that metrics.txt (types) does not
// list. A histogram's _bucket, _sum and _count series count as the histogram, a summary's
// _sum and _count as the summary.
func unknownMetrics(types map[string]string, expr string) ([]string, error) {
	names, err := exprMetrics(expr)
	if err != nil {
		return nil, err
	}
	var unknown []string
	for _, n := range names {
		if !known(types, n) {
			unknown = append(unknown, n)
		}
	}
	return unknown, nil
}

func known(types map[string]string, name string) bool {
	if synthetic[name] || conditional[name] != "" {
		return true
	}
	if _, ok := types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		switch types[base] {
		case "histogram":
			return true
		case "summary":
			return suffix != "_bucket"
		}
	}
	return false
}

func TestMetricsListIsWellFormed(t *testing.T) {
	types := loadMetrics(t)
	for name := range conditional {
		if _, ok := types[name]; ok {
			t.Errorf("%s is in metrics.txt: take it out of conditional", name)
		}
	}
	for name, typ := range types {
		if !strings.HasPrefix(name, "sluice_") {
			t.Errorf("%s: not a sluice_ metric", name)
		}
		if strings.HasSuffix(name, "_total") != (typ == "counter") {
			t.Errorf("%s %s: _total is for counters, and every counter ends in _total", name, typ)
		}
	}
}

func TestUnknownMetrics(t *testing.T) {
	types := map[string]string{
		"sluice_a_total":   "counter",
		"sluice_h_seconds": "histogram",
	}
	tests := []struct {
		name    string
		expr    string
		unknown []string
		err     bool
	}{
		{name: "counter", expr: `sum by (x) (rate(sluice_a_total[$__rate_interval]))`},
		{name: "histogram bucket", expr: `histogram_quantile(0.99, sum by (le) (rate(sluice_h_seconds_bucket{job=~"$job"}[5m])))`},
		{name: "histogram sum and count", expr: `rate(sluice_h_seconds_sum[5m]) / rate(sluice_h_seconds_count[5m])`},
		{name: "counter has no bucket", expr: `sluice_a_total_bucket`, unknown: []string{"sluice_a_total_bucket"}},
		{name: "missing", expr: `sluice_a_total + sluice_b`, unknown: []string{"sluice_b"}},
		{name: "up is Prometheus's own", expr: `up == 0`},
		{name: "nameless selector", expr: `{__name__=~"sluice_.*"}`, err: true},
		{name: "not PromQL", expr: `rate(sluice_a_total[5m]`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := unknownMetrics(types, tt.expr)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if !slices.Equal(got, tt.unknown) {
				t.Fatalf("unknown = %q, want %q", got, tt.unknown)
			}
		})
	}
}
