package jetstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/instrument/instrumenttest"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/schemas"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// gaugeValue returns the value of family name's series with labels, and whether there is one.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	return instrumenttest.Value(t, reg, name, labels)
}

// Issue 16: consumer lag, stream storage and dead letters stored are read from the broker, and
// cached: the values follow the broker after a refresh, and scrapes in between cost the
// broker no request.
func TestBrokerStatsCachedFromTheBroker(t *testing.T) {
	ctx := context.Background()
	js := emptyBroker(t)
	p, err := sjs.Provision(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, "sluice.v1.chunks.dev", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// Two delivered and held (not acked): 3 pending, 2 ack pending.
	batch, err := p.ChunkConsumer.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if got != 2 {
		t.Fatalf("fetched %d messages, want 2", got)
	}

	stats, err := sjs.NewBrokerStats(sjs.BrokerStatsConfig{JS: js})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(stats)
	chunks := map[string]string{"stream": schemas.StreamChunks, "consumer": sjs.ConsumerChunks}
	if _, ok := gaugeValue(t, reg, "sluice_consumer_pending_messages", chunks); ok {
		t.Fatal("consumer lag reported before the first refresh")
	}
	if snap := stats.Snapshot(); !snap.At.IsZero() || len(snap.Streams) != 0 || len(snap.Consumers) != 0 {
		t.Fatalf("Snapshot before the first refresh = %+v, want empty", snap)
	}
	if err := stats.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Snapshot is the same reading as the gauges (issue 18: the console's lag page).
	snap := stats.Snapshot()
	if snap.At.IsZero() {
		t.Fatal("Snapshot after a refresh has no reading time")
	}
	var sawStream, sawConsumer bool
	for _, st := range snap.Streams {
		if st.Stream == schemas.StreamChunks {
			sawStream = true
			if st.Messages != 5 || st.Bytes == 0 || st.MaxBytes != 8<<30 {
				t.Errorf("Snapshot stream %s = %+v, want 5 messages, bytes > 0, max 8 GiB", st.Stream, st)
			}
		}
	}
	for _, c := range snap.Consumers {
		if c.Stream == schemas.StreamChunks && c.Consumer == sjs.ConsumerChunks {
			sawConsumer = true
			if c.Pending != 3 || c.AckPending != 2 || c.Redelivered != 0 {
				t.Errorf("Snapshot consumer %s = %+v, want pending 3, ack pending 2, redelivered 0", c.Consumer, c)
			}
		}
	}
	if !sawStream || !sawConsumer {
		t.Errorf("Snapshot = %+v, want stream %s and consumer %s", snap, schemas.StreamChunks, sjs.ConsumerChunks)
	}
	snap.Consumers[0].Pending = 999 // the caller owns its copy
	if again := stats.Snapshot(); again.Consumers[0].Pending == 999 {
		t.Error("Snapshot shares its slices with the collector")
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"sluice_consumer_pending_messages", chunks, 3},
		{"sluice_consumer_ack_pending_messages", chunks, 2},
		{"sluice_consumer_redelivered_messages", chunks, 0},
		{"sluice_stream_messages", map[string]string{"stream": schemas.StreamChunks}, 5},
		{"sluice_stream_max_bytes", map[string]string{"stream": schemas.StreamChunks}, 8 << 30},
		{"sluice_dead_letter_messages", map[string]string{}, 0},
		{"sluice_broker_stats_refresh_failures_total", map[string]string{}, 0},
	} {
		if v, ok := gaugeValue(t, reg, c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if v, ok := gaugeValue(t, reg, "sluice_stream_bytes", map[string]string{"stream": schemas.StreamChunks}); !ok || v <= 0 {
		t.Errorf("sluice_stream_bytes of %s = %v (present %v), want > 0", schemas.StreamChunks, v, ok)
	}
	if v, ok := gaugeValue(t, reg, "sluice_jetstream_storage_bytes", map[string]string{"storage": "file"}); !ok || v <= 0 {
		t.Errorf("sluice_jetstream_storage_bytes{storage=file} = %v (present %v), want > 0", v, ok)
	}

	// Scrapes read the cache: a hundred of them make no JetStream API request.
	before, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 100 {
		if _, err := reg.Gather(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := js.AccountInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := after.API.Total - before.API.Total; n > 1 { // the second AccountInfo itself
		t.Errorf("100 scrapes made %d JetStream API requests, want none", n-1)
	}

	// A dead letter appears after the next refresh, not before.
	if _, err := js.Publish(ctx, "sluice.dlq.chunks.dev", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if v, _ := gaugeValue(t, reg, "sluice_dead_letter_messages", map[string]string{}); v != 0 {
		t.Fatalf("sluice_dead_letter_messages = %v before a refresh, want the cached 0", v)
	}
	if err := stats.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := gaugeValue(t, reg, "sluice_dead_letter_messages", map[string]string{}); v != 1 {
		t.Fatalf("sluice_dead_letter_messages = %v after a refresh, want 1", v)
	}

	// Run refreshes in the background until its context ends.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- stats.Run(runCtx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil when its context ends", err)
	}
}

// The broker statistics are read with requests the API and worker roles of the shipped
// permissions may make: every stream, every durable consumer and the account are reported, and
// the server reports no permissions violation.
func TestBrokerStatsWithRolePermissions(t *testing.T) {
	url := startExternal(t)
	ctx := context.Background()
	op, _ := connectAs(t, url, "operator")
	if _, err := sjs.ProvisionAll(ctx, op, sjs.ProvisionConfig{Mode: sjs.ModeProvision}); err != nil {
		t.Fatalf("provision as sluice-operator: %v", err)
	}
	for _, role := range []string{"api", "worker"} {
		t.Run(role, func(t *testing.T) {
			js, violations := connectAs(t, url, role)
			stats, err := sjs.NewBrokerStats(sjs.BrokerStatsConfig{JS: js})
			if err != nil {
				t.Fatal(err)
			}
			if err := stats.Refresh(ctx); err != nil {
				t.Fatalf("refresh as sluice-%s: %v", role, err)
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(stats)
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			series := map[string]int{}
			for _, mf := range mfs {
				series[mf.GetName()] = len(mf.GetMetric())
			}
			want := map[string]int{
				"sluice_stream_messages":           len(sjs.StatsStreams()),
				"sluice_consumer_pending_messages": len(sjs.StatsConsumers(sjs.CommandPartitions)),
				"sluice_jetstream_storage_bytes":   2,
				"sluice_dead_letter_messages":      1,
			}
			for name, n := range want {
				if series[name] != n {
					t.Errorf("%s: %d series, want %d", name, series[name], n)
				}
			}
			select {
			case err := <-violations:
				t.Fatalf("sluice-%s: %v", role, err)
			case <-time.After(200 * time.Millisecond):
			}
		})
	}
}
