package observability_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	alertsFile     = "alerts.yaml"
	alertTestsFile = "alerts_test.yaml"
	// runbookBase is where every alert's runbook_url points, followed by #anchor.
	runbookBase = "https://github.com/sluice-dev/sluice/blob/main/docs/operations.md"
)

// parseAlerts parses alerts.yaml with Prometheus's own rule parser, unknown fields refused.
func parseAlerts(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.UTF8Validation, parser.NewParser(parser.Options{}), discard)
	if len(errs) > 0 {
		t.Fatalf("parse %s: %v", alertsFile, errs)
	}
	return groups
}

// TestAlertRulesParse checks alerts.yaml as Prometheus would load it, and what every alert must
// carry: a severity of critical or warning, a for: of at least a minute, a summary and a
// runbook_url into docs/operations.md.
func TestAlertRulesParse(t *testing.T) {
	groups := parseAlerts(t)
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("group %s: recording rule %s: this file holds alerts only", g.Name, r.Record)
				continue
			}
			n++
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if time.Duration(r.For) < time.Minute {
				t.Errorf("%s: for: %s, want at least 1m (one slow scrape must not page)", r.Alert, r.For)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary annotation", r.Alert)
			}
			if !strings.HasPrefix(r.Annotations["runbook_url"], runbookBase+"#") {
				t.Errorf("%s: runbook_url %q does not point into %s", r.Alert, r.Annotations["runbook_url"], runbookBase)
			}
			if !strings.HasPrefix(r.Alert, "Sluice") {
				t.Errorf("%s: alert names start with Sluice", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s holds no alert", alertsFile)
	}
}

func TestAlertRulesNameExistingMetrics(t *testing.T) {
	types := loadMetrics(t)
	for _, g := range parseAlerts(t).Groups {
		for _, r := range g.Rules {
			unknown, err := unknownMetrics(types, r.Expr)
			if err != nil {
				t.Errorf("%s: %v", r.Alert, err)
				continue
			}
			for _, u := range unknown {
				t.Errorf("%s: %s is not a metric Sluice exports (metrics.txt)", r.Alert, u)
			}
		}
	}
}

// TestAlertRuleUnitTests runs alerts_test.yaml, promtool's unit-test format, and requires a
// test for every alert.
func TestAlertRuleUnitTests(t *testing.T) {
	tested := runRuleTests(t, alertTestsFile)
	_, names := loadAlertRules(t, []string{alertsFile})
	for _, name := range names {
		if !tested[name] {
			t.Errorf("%s: no test in %s", name, alertTestsFile)
		}
	}
}

// TestRuleTestRunnerFails makes sure the runner above fails a wrong expectation, so that its
// passing means the alerts behave: each case is a test that must not pass.
func TestRuleTestRunnerFails(t *testing.T) {
	tests := []struct {
		name, file string
	}{
		{name: "alert expected that does not fire", file: `
rule_files: [alerts.yaml]
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="sluice",instance="w1:9090"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: SluiceDown
        exp_alerts:
          - exp_labels: {severity: critical, job: sluice, instance: "w1:9090"}
`},
		{name: "alert fires that is not expected", file: `
rule_files: [alerts.yaml]
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="sluice",instance="w1:9090"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: SluiceDown
        exp_alerts: []
`},
		{name: "pending is not firing", file: `
rule_files: [alerts.yaml]
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="sluice",instance="w1:9090"}'
        values: '1 1 1 1 1 1 0x20'
    alert_rule_test:
      - eval_time: 9m
        alertname: SluiceDown
        exp_alerts:
          - exp_labels: {severity: critical, job: sluice, instance: "w1:9090"}
            exp_annotations:
              summary: "Sluice process w1:9090 (job sluice) has not answered a scrape for 5 minutes."
              runbook_url: https://github.com/sluice-dev/sluice/blob/main/docs/operations.md#sluicedown
`},
		{name: "wrong annotation", file: `
rule_files: [alerts.yaml]
tests:
  - interval: 1m
    input_series:
      - series: 'up{job="sluice",instance="w1:9090"}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: SluiceDown
        exp_alerts:
          - exp_labels: {severity: critical, job: sluice, instance: "w1:9090"}
            exp_annotations:
              summary: "something else"
              runbook_url: https://github.com/sluice-dev/sluice/blob/main/docs/operations.md#sluicedown
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			alerts, err := os.ReadFile(alertsFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir+"/alerts.yaml", alerts, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(dir+"/test.yaml", []byte(tt.file), 0o644); err != nil {
				t.Fatal(err)
			}
			f := loadRuleTests(t, dir+"/test.yaml")
			for _, tc := range f.Tests {
				if len(evalRuleTest(t, f, []string{dir + "/alerts.yaml"}, tc)) == 0 {
					t.Fatal("the runner passed a test that must fail")
				}
			}
		})
	}
}
