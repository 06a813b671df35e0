package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

// metricsFile lists every sluice_* family that serve and a lone worker export (sorted
// "name type" lines); the dashboards' and alerts' tests check their queries against it.
var metricsFile = filepath.Join("..", "..", "deployments", "observability", "metrics.txt")

// Issue 16: the metric set follows Prometheus' conventions, checked by its linter on the live
// /metrics of `sluice serve` and of a lone `sluice worker` after each did some work (chunks
// written, a graph batch and a command applied), so that the labelled families have samples;
// and the families they export are those deployments/observability/metrics.txt lists
// (SLUICE_UPDATE_METRICS=1 rewrites it); and each is documented in docs/operations.md.
func TestMetricsLintAndFamilies(t *testing.T) {
	families := map[string]string{}

	t.Run("serve", func(t *testing.T) {
		ops := freeAddr(t)
		s := startServer(t, "serve", []string{"SLUICE_OPS_ADDR=" + ops}, "--data-dir", t.TempDir(), "--tokens-file", tokensFile(t))
		upload(t, s.base, "/v1/jobs?env=dev&file=lint.jsonl", writeTok, "application/x-ndjson",
			[]byte(`{"chunk_id":"lint_1","content":"one"}`+"\n"+`{"chunk_id":"lint_2","content":"two"}`+"\n"))
		upload(t, s.base, "/v1/graph?env=dev", writeTok, "application/json", graphFile(3, 2))
		if a := call(t, "POST", s.base+"/v1/requirements", adminTok, "application/json", []byte(
			`{"title":"Metrics","version":"1.0.0","description":"Linted.","requirements":{"functional":[],"non_functional":[]},"author":"metrics test"}`)); a.status/100 != 2 {
			t.Fatalf("POST /v1/requirements: %d %v", a.status, a.body)
		}
		body := scrapeUntil(t, "http://"+ops+"/metrics", []string{
			`sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"} 2`,
			`sluice_messages_total{outcome="applied",stream="SLUICE_GRAPH"}`,
			`sluice_messages_total{outcome="applied",stream="SLUICE_COMMANDS"} 1`,
			`sluice_sink_write_seconds_count{command="insert_docs",sink="docstore",status="ok"}`,
			`sluice_sink_write_seconds_count{command="apply_graph",sink="graph",status="ok"}`,
			`sluice_sink_write_seconds_count{command="apply_commands",sink="requirements",status="ok"}`,
			`sluice_sink_write_seconds_count{command="project_graph",sink="graph",status="ok"}`,
			`sluice_consumer_pending_messages{consumer="sluice-chunks",stream="SLUICE_CHUNKS"}`,
			`sluice_jobs{state="pending"}`,
			`sluice_http_requests_total{code="202",method="POST",route="/v1/jobs"}`,
		})
		lint(t, body)
		addFamilies(families, body)
	})

	// The lone worker writes to AstraDB (the Data API double), so that the Data API client's
	// metrics are seen too.
	t.Run("worker", func(t *testing.T) {
		double := dataapitest.New(dataapitest.Config{})
		defer double.Close()
		_, url := opsBroker(t)
		ops := freeAddr(t)
		startProc(t, "worker", []string{"SLUICE_OPS_ADDR=" + ops, "ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
			"worker", "--nats-url", url, "--data-dir", t.TempDir())
		waitProbe(t, "http://"+ops+"/readyz", 60*time.Second, "worker ready", func(p probe) bool { return p.code == 200 })
		load, loadLogs := startProc(t, "load", nil, "load", "--nats-url", url, "--data-dir", t.TempDir(), "--env", "dev", writeChunkFile(t, 50))
		if err := load.Wait(); err != nil {
			t.Fatalf("load: %v\n%s", err, loadLogs.String())
		}
		body := scrapeUntil(t, "http://"+ops+"/metrics", []string{
			`sluice_messages_total{outcome="written",stream="SLUICE_CHUNKS"} 50`,
			`sluice_sink_write_seconds_count{command="insert_docs",sink="astra",status="ok"}`,
			`sluice_astra_requests_in_flight{client="documents"}`,
			`sluice_astra_requests_max{client="requirements"}`,
			`sluice_consumer_pending_messages{consumer="sluice-chunks",stream="SLUICE_CHUNKS"}`,
			`sluice_jobs{state="completed"}`,
		})
		lint(t, body)
		addFamilies(families, body)
	})
	if t.Failed() {
		return
	}

	// Every family is documented in docs/operations.md's table ("### Metrics"), with its type.
	ops, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for name, typ := range families {
		lines = append(lines, name+" "+typ)
		if !strings.Contains(string(ops), "| `"+name+"` | "+typ+" |") {
			t.Errorf("docs/operations.md has no table row for %s (%s)", name, typ)
		}
	}
	slices.Sort(lines)
	live := strings.Join(lines, "\n") + "\n"
	if os.Getenv("SLUICE_UPDATE_METRICS") == "1" {
		if err := os.MkdirAll(filepath.Dir(metricsFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(metricsFile, []byte(live), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d families)", metricsFile, len(lines))
		return
	}
	want, err := os.ReadFile(metricsFile)
	if err != nil {
		t.Fatalf("%v (SLUICE_UPDATE_METRICS=1 writes it)", err)
	}
	if string(want) != live {
		t.Fatalf("%s differs from the families serve and worker export (SLUICE_UPDATE_METRICS=1 rewrites it):\n%s",
			metricsFile, lineDiff(strings.Split(strings.TrimSpace(string(want)), "\n"), lines))
	}
}

// scrapeUntil scrapes url until every one of samples (a sample's name and labels as printed,
// optionally with its value) is present, and returns that scrape; it fails the test after a
// minute. The job reaper scans once at start, so sluice_jobs shows from the start.
func scrapeUntil(t *testing.T, url string, samples []string) string {
	t.Helper()
	var body string
	var missing []string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		p, ok := get(url)
		if ok && p.code == http.StatusOK {
			body = string(p.body)
			missing = missing[:0]
			for _, s := range samples {
				if !hasSample(body, s) {
					missing = append(missing, s)
				}
			}
			if len(missing) == 0 {
				return body
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: after a minute, no sample %q:\n%s", url, missing, grepLines(body, "sluice_"))
		}
	}
}

// hasSample reports whether body has a line that is sample, or starts with sample and a space.
func hasSample(body, sample string) bool {
	for line := range strings.Lines(body) {
		line = strings.TrimSuffix(line, "\n")
		if line == sample || strings.HasPrefix(line, sample+" ") {
			return true
		}
	}
	return false
}

// lint fails the test with every problem promlint finds in body.
func lint(t *testing.T, body string) {
	t.Helper()
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

var typeLine = regexp.MustCompile(`(?m)^# TYPE (sluice_\S+) (\S+)$`)

// addFamilies adds the sluice_* families of body, with their types, to fams.
func addFamilies(fams map[string]string, body string) {
	for _, m := range typeLine.FindAllStringSubmatch(body, -1) {
		fams[m[1]] = m[2]
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got []string) string {
	var b strings.Builder
	for _, w := range want {
		if !slices.Contains(got, w) {
			fmt.Fprintf(&b, "- %s (in the file, not exported)\n", w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			fmt.Fprintf(&b, "+ %s (exported, not in the file)\n", g)
		}
	}
	return b.String()
}
