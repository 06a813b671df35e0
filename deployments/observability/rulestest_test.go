package observability_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
	"go.yaml.in/yaml/v3"
)

// ruleTestFile is the part of promtool's rule unit-test format ("promtool test rules",
// prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/) that these tests
// use. It is decoded strictly: a field of the format that runRuleTests does not implement
// (promql_expr_test, external_labels, group_eval_order …) fails the test instead of being
// ignored, so the file means the same here and under promtool.
type ruleTestFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	Tests              []ruleTest     `yaml:"tests"`
}

type ruleTest struct {
	Name          string          `yaml:"name"`
	Interval      model.Duration  `yaml:"interval"`
	InputSeries   []inputSeries   `yaml:"input_series"`
	AlertRuleTest []alertTestCase `yaml:"alert_rule_test"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertTestCase struct {
	EvalTime  model.Duration `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []expAlert     `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// discard is the logger given to Prometheus's packages, which log through a nil one by
// panicking (a second YAML document, a template that fails to expand: the test then fails on
// the annotation's "<error expanding template…>" text instead).
var discard = slog.New(slog.DiscardHandler)

// loadRuleTests reads a promtool unit-test file strictly.
func loadRuleTests(t *testing.T, path string) ruleTestFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f ruleTestFile
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if f.EvaluationInterval == 0 {
		f.EvaluationInterval = model.Duration(time.Minute) // promtool's default
	}
	return f
}

// loadAlertRules parses rule files with Prometheus's own rule parser and returns their alerting
// rules, fresh (no state), by name.
func loadAlertRules(t *testing.T, paths []string) (map[string]*rules.AlertingRule, []string) {
	t.Helper()
	p := parser.NewParser(parser.Options{})
	byName := map[string]*rules.AlertingRule{}
	var order []string
	for _, path := range paths {
		groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, p, discard)
		if len(errs) > 0 {
			t.Fatalf("parse %s: %v", path, errs)
		}
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				expr, err := p.ParseExpr(r.Expr)
				if err != nil {
					t.Fatalf("%s: alert %s: %v", path, r.Alert, err)
				}
				if _, dup := byName[r.Alert]; dup {
					t.Fatalf("%s: alert %s defined twice", path, r.Alert)
				}
				byName[r.Alert] = rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
					labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", true, discard)
				order = append(order, r.Alert)
			}
		}
	}
	return byName, order
}

// firing is one firing alert as a comparable string: its labels and its annotations.
func firing(l, a labels.Labels) string { return l.String() + " " + a.String() }

// runRuleTests runs every test of a promtool unit-test file the way promtool does: the input
// series are loaded, the rules evaluated every evaluation_interval from 0 to the last
// eval_time, and at each eval_time the alerts firing (pending ones are not) must be exactly
// the expected ones, with alertname added to the expected labels and annotations expanded.
// It returns the names of the alerts that the file tests.
func runRuleTests(t *testing.T, path string) map[string]bool {
	t.Helper()
	f := loadRuleTests(t, path)
	var files []string
	for _, rf := range f.RuleFiles {
		files = append(files, filepath.Join(filepath.Dir(path), rf))
	}
	tested := map[string]bool{}
	for i, tc := range f.Tests {
		name := tc.Name
		if name == "" {
			name = fmt.Sprintf("test %d", i)
		}
		t.Run(name, func(t *testing.T) {
			for _, c := range tc.AlertRuleTest {
				tested[c.Alertname] = true
			}
			for _, m := range evalRuleTest(t, f, files, tc) {
				t.Error(m)
			}
		})
	}
	return tested
}

// evalRuleTest runs one test of a unit-test file and returns how the alerts differed from its
// expectations (nothing when they behaved); it fails t only when the test cannot run.
func evalRuleTest(t *testing.T, f ruleTestFile, files []string, tc ruleTest) (mismatches []string) {
	t.Helper()
	interval := time.Duration(tc.Interval)
	if interval == 0 {
		interval = time.Duration(f.EvaluationInterval) // promtool's default
	}
	var load strings.Builder
	fmt.Fprintf(&load, "load %s\n", model.Duration(interval))
	for _, s := range tc.InputSeries {
		fmt.Fprintf(&load, "  %s %s\n", s.Series, s.Values)
	}
	storage := promqltest.LoadedStorage(t, load.String()) // closed by its own t.Cleanup
	engine := promqltest.NewTestEngine(t, false, 0, promqltest.DefaultMaxSamplesPerQuery*100)
	query := rules.EngineQueryFunc(engine, storage)

	alerts, _ := loadAlertRules(t, files)
	var last time.Duration
	for _, c := range tc.AlertRuleTest {
		if _, ok := alerts[c.Alertname]; !ok {
			t.Fatalf("alert_rule_test names %s, which no rule file defines", c.Alertname)
		}
		last = max(last, time.Duration(c.EvalTime))
	}
	externalURL, _ := url.Parse("http://localhost:9090")
	start := time.Unix(0, 0).UTC()
	step := time.Duration(f.EvaluationInterval)
	ctx := context.Background()
	for ts := time.Duration(0); ts <= last; ts += step {
		for name, r := range alerts {
			if _, err := r.Eval(ctx, 0, start.Add(ts), query, externalURL, 0); err != nil {
				t.Fatalf("evaluate %s at %s: %v", name, model.Duration(ts), err)
			}
		}
		for _, c := range tc.AlertRuleTest {
			// promtool compares an eval_time with the evaluation at or just before it.
			at := time.Duration(c.EvalTime)
			if at < ts || at >= ts+step {
				continue
			}
			var got, want []string
			for _, a := range alerts[c.Alertname].ActiveAlerts() {
				if a.State == rules.StateFiring {
					got = append(got, firing(a.Labels, a.Annotations))
				}
			}
			for _, e := range c.ExpAlerts {
				l := map[string]string{labels.AlertName: c.Alertname}
				for k, v := range e.ExpLabels {
					l[k] = v
				}
				want = append(want, firing(labels.FromMap(l), labels.FromMap(e.ExpAnnotations)))
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				mismatches = append(mismatches, fmt.Sprintf("%s at %s:\n got  %q\n want %q", c.Alertname, c.EvalTime, got, want))
			}
		}
	}
	return mismatches
}
