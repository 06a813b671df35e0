package observability_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"

	"github.com/sluice-dev/sluice/deployments/observability"
)

const dashboardFile = "sluice-dashboard.json"

// TestDashboardIsCurrent fails when the committed dashboard is not what Dashboard makes;
// SLUICE_UPDATE_DASHBOARD=1 (go generate) rewrites it instead.
func TestDashboardIsCurrent(t *testing.T) {
	want, err := observability.DashboardJSON()
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("SLUICE_UPDATE_DASHBOARD") == "1" {
		if err := os.WriteFile(dashboardFile, want, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", dashboardFile)
		return
	}
	got, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatalf("%v (go generate ./deployments/observability/ writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from what Dashboard makes: run go generate ./deployments/observability/ and commit the file", dashboardFile)
	}
}

// committedDashboard decodes the committed dashboard strictly into the SDK's types: an unknown
// field, a wrongly typed one or a missing required one fails, as does a query of a data source
// other than Prometheus.
func committedDashboard(t *testing.T) dashboard.Dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := decodeStrict(raw)
	if err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// decodeStrict decodes and validates a dashboard with the SDK.
func decodeStrict(raw []byte) (dashboard.Dashboard, error) {
	plugins.RegisterDefaultPlugins()
	var d dashboard.Dashboard
	if err := sdkError(d.UnmarshalJSONStrict(raw)); err != nil {
		return d, fmt.Errorf("decode strictly: %w", err)
	}
	// The SDK (v0.0.22) drops every panel whose strict decoding succeeded: Panel's
	// UnmarshalJSONStrict returns its empty error list as a non-nil error, on which
	// PanelOrRowPanel returns before keeping the panel. Decode the panels again, one by one.
	var top struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return d, fmt.Errorf("decode panels: %w", err)
	}
	d.Panels = nil
	for i, rawPanel := range top.Panels {
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(rawPanel, &kind); err != nil {
			return d, fmt.Errorf("decode panel %d: %w", i, err)
		}
		if kind.Type == "row" {
			r := &dashboard.RowPanel{}
			if err := sdkError(r.UnmarshalJSONStrict(rawPanel)); err != nil {
				return d, fmt.Errorf("decode row %d strictly: %w", i, err)
			}
			if r.Panels == nil {
				r.Panels = []dashboard.Panel{} // the SDK writes an empty list, and reads it as nil
			}
			d.Panels = append(d.Panels, dashboard.PanelOrRowPanel{RowPanel: r})
			continue
		}
		p := &dashboard.Panel{}
		if err := sdkError(p.UnmarshalJSONStrict(rawPanel)); err != nil {
			return d, fmt.Errorf("decode panel %d strictly: %w", i, err)
		}
		// Its options are dropped the same way: decode them as the panel type's.
		if err := decodeOptions(p, rawPanel); err != nil {
			return d, fmt.Errorf("decode panel %d: %w", i, err)
		}
		// And its queries: decode them as Prometheus queries.
		var targets struct {
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(rawPanel, &targets); err != nil {
			return d, fmt.Errorf("decode panel %d targets: %w", i, err)
		}
		p.Targets = nil
		for j, rawTarget := range targets.Targets {
			q := &prometheus.Dataquery{}
			if err := sdkError(q.UnmarshalJSONStrict(rawTarget)); err != nil {
				return d, fmt.Errorf("decode panel %d query %d strictly as a Prometheus query: %w", i, j, err)
			}
			p.Targets = append(p.Targets, q)
		}
		d.Panels = append(d.Panels, dashboard.PanelOrRowPanel{Panel: p})
	}
	// Nothing else may have been dropped: encoded again, the decoded dashboard is the input.
	again, err := json.Marshal(d)
	if err != nil {
		return d, fmt.Errorf("encode the decoded dashboard: %w", err)
	}
	var in, out any
	if err := json.Unmarshal(raw, &in); err != nil {
		return d, err
	}
	if err := json.Unmarshal(again, &out); err != nil {
		return d, err
	}
	if !reflect.DeepEqual(in, out) {
		return d, errors.New("the decoded dashboard, encoded again, differs from the input: the decoding lost or changed something")
	}
	if err := sdkError(d.Validate()); err != nil {
		return d, fmt.Errorf("validate: %w", err)
	}
	return d, nil
}

// decodeOptions decodes the options of panel p (from its JSON, raw) strictly as its type's:
// only the types the dashboard uses are known.
func decodeOptions(p *dashboard.Panel, raw []byte) error {
	var fields struct {
		Options json.RawMessage `json:"options"`
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return err
	}
	if fields.Options == nil {
		p.Options = nil
		return nil
	}
	var opts interface{ UnmarshalJSONStrict([]byte) error }
	switch p.Type {
	case "timeseries":
		o := &timeseries.Options{}
		opts, p.Options = o, o
	case "stat":
		o := &stat.Options{}
		opts, p.Options = o, o
	default:
		return fmt.Errorf("panel type %q: not one this test knows", p.Type)
	}
	if err := sdkError(opts.UnmarshalJSONStrict(fields.Options)); err != nil {
		return fmt.Errorf("options of a %s panel, strictly: %w", p.Type, err)
	}
	return nil
}

// sdkError returns err, or nil for an empty cog.BuildErrors: the SDK's generated code returns
// its (possibly nil) error list as an error, which is then never == nil.
func sdkError(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

// TestDashboardDecodingIsStrict makes sure the strict decoding above would catch a field
// Grafana does not know, here or in a panel, so that passing it means something.
func TestDashboardDecodingIsStrict(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeStrict(raw); err != nil {
		t.Fatalf("the committed dashboard: %v", err)
	}
	tests := []struct{ name, from, to string }{
		{name: "dashboard field", from: `"uid": "sluice-overview"`, to: `"uid": "sluice-overview", "refreshh": "1m"`},
		{name: "panel field", from: `"type": "timeseries"`, to: `"type": "timeseries", "titel": "x"`},
		{name: "query field", from: `"expr": `, to: `"exprr": "x", "expr": `},
		{name: "options field", from: `"showLegend": true`, to: `"showLegend": true, "shoLegend": true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := strings.Replace(string(raw), tt.from, tt.to, 1)
			if bad == string(raw) {
				t.Fatalf("%q not found in %s", tt.from, dashboardFile)
			}
			if _, err := decodeStrict([]byte(bad)); err == nil {
				t.Fatalf("decoded a dashboard with an unknown field (%s)", tt.to)
			}
		})
	}
}

// panelQuery is one PromQL query of the dashboard and where it is.
type panelQuery struct {
	row, panel, expr string
}

// dashboardQueries returns every query of d's panels, failing on a query that is not a
// Prometheus query or has an empty expression.
func dashboardQueries(t *testing.T, d dashboard.Dashboard) (queries []panelQuery, rows []string) {
	t.Helper()
	row := ""
	add := func(p dashboard.Panel) {
		title := ""
		if p.Title != nil {
			title = *p.Title
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q (row %q) has no query", title, row)
		}
		for i, target := range p.Targets {
			q, ok := target.(*prometheus.Dataquery)
			if !ok {
				t.Errorf("panel %q query %d: %T, not a Prometheus query", title, i, target)
				continue
			}
			if q.Expr == "" {
				t.Errorf("panel %q query %d: empty expression", title, i)
			}
			if q.Datasource == nil || q.Datasource.Uid == nil || *q.Datasource.Uid != "${datasource}" {
				t.Errorf("panel %q query %d: not on the datasource variable", title, i)
			}
			queries = append(queries, panelQuery{row, title, q.Expr})
		}
	}
	for _, pr := range d.Panels {
		switch {
		case pr.RowPanel != nil:
			row = *pr.RowPanel.Title
			rows = append(rows, row)
			for _, p := range pr.RowPanel.Panels {
				add(p)
			}
		case pr.Panel != nil:
			add(*pr.Panel)
		}
	}
	return queries, rows
}

func TestDashboardQueriesNameExistingMetrics(t *testing.T) {
	types := loadMetrics(t)
	d := committedDashboard(t)
	queries, _ := dashboardQueries(t, d)
	used := map[string]bool{}
	for _, q := range queries {
		unknown, err := unknownMetrics(types, q.expr)
		if err != nil {
			t.Errorf("row %q panel %q: %v", q.row, q.panel, err)
			continue
		}
		for _, u := range unknown {
			t.Errorf("row %q panel %q: %s is not a metric Sluice exports (metrics.txt): %s", q.row, q.panel, u, q.expr)
		}
		names, _ := exprMetrics(q.expr)
		for _, n := range names {
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(n, suffix); ok && types[base] != "" {
					used[base] = true
				}
			}
		}
	}
	// The variables' queries too: label_values(metric, label).
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	for _, v := range d.Templating.List {
		if v.Type != dashboard.VariableTypeQuery {
			continue
		}
		if v.Query == nil || v.Query.String == nil {
			t.Errorf("variable %s: no query", v.Name)
			continue
		}
		m := labelValues.FindStringSubmatch(*v.Query.String)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, *v.Query.String)
			continue
		}
		if !known(types, m[1]) {
			t.Errorf("variable %s: %s is not a metric Sluice exports (metrics.txt)", v.Name, m[1])
		}
	}
	// What operators ask the dashboard (issue 16): throughput, latency, lag, dead letters,
	// pools, jobs and broker storage each read from the families that answer it.
	for _, name := range []string{
		"sluice_messages_total", "sluice_messages_in_flight",
		"sluice_sink_write_seconds", "sluice_http_request_duration_seconds", "sluice_chunk_handle_seconds",
		"sluice_consumer_pending_messages", "sluice_consumer_ack_pending_messages", "sluice_consumer_redelivered_messages",
		"sluice_dead_letter_messages", "sluice_dead_letter_replays_total", "sluice_dead_letter_unresolved",
		"sluice_graph_pool_conns_acquired", "sluice_graph_pool_conns_max", "sluice_sink_writes_in_flight",
		"sluice_jobs", "sluice_job_stalled_seconds",
		"sluice_stream_bytes", "sluice_stream_max_bytes", "sluice_jetstream_storage_bytes",
	} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	var unused []string
	for name := range types {
		if !used[name] {
			unused = append(unused, name)
		}
	}
	slices.Sort(unused)
	t.Logf("%d queries read %d of the %d metrics in metrics.txt; not shown: %q", len(queries), len(used), len(types), unused)
}

// TestDashboardShowsWhatOperatorsAsk checks the dashboard has the rows the operations guide
// names and a datasource variable every query uses.
func TestDashboardShowsWhatOperatorsAsk(t *testing.T) {
	d := committedDashboard(t)
	if d.Uid == nil || *d.Uid != observability.DashboardUID {
		t.Errorf("uid = %v, want %s", d.Uid, observability.DashboardUID)
	}
	_, rows := dashboardQueries(t, d)
	want := []string{"Overview", "Throughput", "Latency", "Consumer lag", "Dead letters", "Pools", "Jobs", "Broker storage"}
	if !slices.Equal(rows, want) {
		t.Errorf("rows = %q, want %q", rows, want)
	}
	ids := map[uint32]bool{}
	for i, pr := range d.Panels {
		var id uint32
		var pos *dashboard.GridPos
		switch {
		case pr.RowPanel != nil:
			id, pos = pr.RowPanel.Id, pr.RowPanel.GridPos
		case pr.Panel != nil:
			if pr.Panel.Id != nil {
				id = *pr.Panel.Id
			}
			pos = pr.Panel.GridPos
		}
		if id == 0 || ids[id] {
			t.Errorf("panel %d: id %d is zero or taken", i, id)
		}
		ids[id] = true
		if pos == nil || pos.W == 0 || pos.H == 0 || pos.X+pos.W > 24 {
			t.Errorf("panel %d: grid position %+v is off the 24-column grid", i, pos)
		}
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
		if v.Name == "datasource" && v.Type != dashboard.VariableTypeDatasource {
			t.Errorf("variable datasource has type %s", v.Type)
		}
	}
	if !slices.Equal(vars, []string{"datasource", "job"}) {
		t.Errorf("variables = %q, want datasource and job", vars)
	}
}
