package instrument_test

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/instrument"
)

// count returns the series of the named families in reg.
func count(t *testing.T, reg *prometheus.Registry, names ...string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, name := range names {
			if mf.GetName() == name {
				n += len(mf.GetMetric())
			}
		}
	}
	return n
}

// Two workers of one process (the chunk and the command worker) register the shared families
// with one registry and count into the same series.
func TestWorkersShareFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := instrument.NewMessages(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := instrument.NewMessages(reg)
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	a.Add("SLUICE_CHUNKS", instrument.OutcomeWritten, 2)
	b.Add("SLUICE_CHUNKS", instrument.OutcomeWritten, 3)
	b.InFlight("SLUICE_COMMANDS", func() float64 { return 7 })
	if n := count(t, reg, "sluice_messages_total"); n != 1 {
		t.Fatalf("sluice_messages_total: %d series, want 1", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				got[mf.GetName()] = c.GetValue()
			} else if g := m.GetGauge(); g != nil {
				got[mf.GetName()] = g.GetValue()
			}
		}
	}
	if got["sluice_messages_total"] != 5 || got["sluice_messages_in_flight"] != 7 {
		t.Fatalf("got %v, want 5 written and 7 in flight", got)
	}

	s1, err := instrument.NewSinks(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := instrument.NewSinks(reg); err != nil {
		t.Fatalf("second registration: %v", err)
	}
	end := s1.Begin("graph", instrument.CommandApplyGraph)
	if n := count(t, reg, "sluice_sink_writes_in_flight"); n != 1 {
		t.Fatalf("in flight: %d series, want 1", n)
	}
	end(instrument.StatusError)
	if n := count(t, reg, "sluice_sink_write_seconds", "sluice_sink_write_failures_total"); n != 2 {
		t.Fatalf("a failed call: %d series, want its duration and its failure", n)
	}

	// A family of the same name but another kind is refused, not shared.
	if _, err := instrument.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_messages_total", Help: "x"})); err == nil {
		t.Fatal("a gauge registered over the messages counter")
	}
}

func TestStatus(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		err  error
		errs []error
		want string
	}{
		{"all written", nil, []error{nil, nil}, instrument.StatusOK},
		{"no items", nil, nil, instrument.StatusOK},
		{"one refused", nil, []error{nil, boom}, instrument.StatusPartial},
		{"the call failed", boom, nil, instrument.StatusError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := instrument.Status(tc.err, tc.errs); got != tc.want {
				t.Fatalf("Status = %q, want %q", got, tc.want)
			}
		})
	}
}
