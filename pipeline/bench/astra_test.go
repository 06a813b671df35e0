package bench_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/pipeline/bench"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...)
}

func TestRunAstraEveryMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunAstra(ctx, bench.AstraConfig{Chunks: 200, Latency: time.Millisecond, Runs: 2, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modes) != 4 {
		t.Fatalf("%d mode results, want 4: %+v", len(res.Modes), res)
	}
	for i, want := range []string{bench.ModeSeed, bench.ModeAstrapy, bench.ModeSluice, bench.ModeJetStream} {
		m := res.Modes[i]
		if m.Mode != want || m.Runs != 2 || m.Chunks != 200 || m.Stored != 200 || m.Elapsed <= 0 || m.DocsPerSec <= 0 {
			t.Errorf("mode %d = %+v, want %s, 2 runs of 200 chunks, all stored, docs/s > 0", i, m, want)
		}
	}
	if res.SluiceVsSeed <= 0 || res.SluiceVsAstrapy <= 0 || res.SluiceVsAstrapyCeiling <= 0 {
		t.Errorf("ratios c/a = %v, c/b = %v, c/b ceiling = %v, want all computed", res.SluiceVsSeed, res.SluiceVsAstrapy, res.SluiceVsAstrapyCeiling)
	}
	// Where the process's CPU time can be read, every mode used some, and the sluice mode,
	// which publishes what the floor publishes and then writes it, more than the floor.
	if _, ok := bench.ProcessCPU(); ok {
		for _, m := range res.Modes {
			if m.CPUPerRun <= 0 {
				t.Errorf("mode %s: CPU per run %v, want it measured", m.Mode, m.CPUPerRun)
			}
		}
		if floor, sluice := res.Modes[3], res.Modes[2]; sluice.CPUPerRun <= floor.CPUPerRun {
			t.Errorf("sluice used %v of CPU per run, the floor %v: want more", sluice.CPUPerRun, floor.CPUPerRun)
		}
	}
	// The floor publishes what the sluice mode publishes, and does nothing else.
	if floor, sluice := res.Modes[3], res.Modes[2]; floor.DocsPerSec <= sluice.DocsPerSec {
		t.Errorf("the jetstream floor (%.0f docs/s) is not faster than the whole sluice path (%.0f docs/s)", floor.DocsPerSec, sluice.DocsPerSec)
	}
	if res.Chunks != 200 || res.Latency != time.Millisecond || res.Runs != 2 {
		t.Errorf("result = %+v, want the configuration echoed", res)
	}
	// The CPU split is measured in every mode. (A mode without a broker can still show some
	// broker CPU: the runs are interleaved, and the other modes' brokers stay up and idle,
	// or finish settling a run, beside it — a sample or two.)
	for _, m := range res.Modes {
		c := m.CPU
		if c == nil {
			if profilerFree(t) {
				t.Errorf("mode %s: no CPU split", m.Mode)
			}
			continue
		}
		if c.BrokerAndClient < c.Broker+c.Client || c.Samples < 0 {
			t.Errorf("mode %s: split %+v", m.Mode, *c)
		}
	}
}

// TestRunAstraSingleAgainstBundles runs the sluice mode with bundles and with one chunk per
// message side by side: both store every chunk, the ratios are computed, and the broker's
// CPU is measured in both (≈30 µs per chunk at one per message: 4,000 chunks give it ≈12
// samples, so it cannot read 0).
func TestRunAstraSingleAgainstBundles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunAstra(ctx, bench.AstraConfig{Chunks: 2000, Latency: -1, Runs: 2, Dir: t.TempDir(),
		Modes: []string{bench.ModeAstrapy, bench.ModeSluice, bench.ModeSluiceSingle}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modes) != 3 || res.Modes[2].Mode != bench.ModeSluiceSingle || res.Modes[2].Stored != 2000 {
		t.Fatalf("modes = %+v", res.Modes)
	}
	if res.SluiceSingleVsAstrapy <= 0 || res.BundlesVsSingle <= 0 || res.SluiceVsAstrapy <= 0 {
		t.Errorf("ratios: c/b %v, c/b single %v, bundles/single %v", res.SluiceVsAstrapy, res.SluiceSingleVsAstrapy, res.BundlesVsSingle)
	}
	// The runs were interleaved, and each ratio is also given run by run.
	for name, byRun := range map[string][]float64{"c/b": res.SluiceVsAstrapyByRun, "c/b single": res.SluiceSingleVsAstrapyByRun, "bundles/single": res.BundlesVsSingleByRun} {
		if len(byRun) != 2 || byRun[0] <= 0 || byRun[1] <= 0 {
			t.Errorf("%s run by run = %v, want 2 ratios", name, byRun)
		}
	}
	single := res.Modes[2].CPU
	if single == nil && !profilerFree(t) {
		return // go test -cpuprofile: no split to check
	}
	if single == nil || single.Broker <= 0 || single.Client <= 0 {
		t.Errorf("one chunk per message: split %+v, want the broker's and the client's CPU measured", single)
	}
}

// TestAstraRunsSluiceAgain checks that later Run calls on one Astra load the file again (a
// benchmark calls Run once with b.N = 1, then with the real b.N): the loader would otherwise
// recognise the file and publish nothing.
func TestAstraRunsSluiceAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	a, err := bench.NewAstra(ctx, bench.AstraConfig{Chunks: 50, Latency: -1, Modes: []string{bench.ModeSluice}, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, runs := range []int{1, 2} {
		res, err := a.Run(ctx, bench.ModeSluice, runs)
		if err != nil {
			t.Fatal(err)
		}
		if res.Runs != runs || res.Stored != 50 || res.DocsPerSec <= 0 {
			t.Fatalf("run of %d: %+v", runs, res)
		}
	}
	if _, err := a.Run(ctx, bench.ModeSeed, 1); err == nil || !strings.Contains(err.Error(), "not set up") {
		t.Fatalf("a mode that was not set up ran: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("Close left %d entries in %s", len(left), dir)
	}
}

func TestAstraConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  bench.AstraConfig
		want []string
	}{
		{"unknown mode", bench.AstraConfig{Modes: []string{"seed", "turbo"}}, []string{`unknown mode "turbo"`}},
		{"mode twice", bench.AstraConfig{Modes: []string{"sluice", "sluice"}}, []string{`mode "sluice" given twice`}},
		{"no chunks", bench.AstraConfig{Chunks: -1}, []string{"Chunks must be at least 1, got -1"}},
		{"every problem at once", bench.AstraConfig{Chunks: -3, Runs: -1, Modes: []string{"x"}},
			[]string{"Chunks must be at least 1", "Runs must be at least 1", `unknown mode "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.cfg.Dir = dir
			_, err := bench.RunAstra(context.Background(), tt.cfg)
			if err == nil {
				t.Fatal("RunAstra accepted the configuration")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if _, err := bench.NewAstra(context.Background(), tt.cfg); err == nil {
				t.Error("NewAstra accepted the configuration")
			}
		})
	}
}

// TestRunAstraTraced runs the sluice mode untraced and traced (all sampled) side by side
// (issue 16: tracing's overhead measured): the traced runs made spans, the untraced none,
// the ratio is computed, and the global provider is no SDK's afterwards.
func TestRunAstraTraced(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := bench.RunAstra(ctx, bench.AstraConfig{Chunks: 1000, Latency: -1, Runs: 2, Dir: t.TempDir(),
		Modes: []string{bench.ModeSluice, bench.ModeSluiceTrace100, bench.ModeSluiceTrace1}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modes) != 3 || res.Modes[0].Spans != 0 || res.Modes[1].Spans < 3 || res.Modes[1].Stored != 1000 {
		t.Fatalf("modes = %+v, want spans only from the traced modes", res.Modes)
	}
	if res.Trace100VsSluice <= 0 || len(res.Trace100VsSluiceByRun) != 2 || res.Trace1VsSluice <= 0 {
		t.Errorf("ratios: %v %v %v", res.Trace100VsSluice, res.Trace100VsSluiceByRun, res.Trace1VsSluice)
	}
	if _, sdk := otel.GetTracerProvider().(*sdktrace.TracerProvider); sdk {
		t.Error("an SDK provider is still global after the traced runs")
	}
}
