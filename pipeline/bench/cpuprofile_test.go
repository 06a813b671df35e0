package bench_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/bench"
)

// profilerFree reports whether this process's CPU profiler is free: not when the tests run
// under go test -cpuprofile, which leaves the benches without a split (not a failure).
func profilerFree(t *testing.T) bool {
	t.Helper()
	p, err := bench.StartCPUProfile()
	if errors.Is(err, bench.ErrProfiling) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	return true
}

// burn uses CPU: n rounds of hashing 64 KiB (≈0.1 ms each here).
func burn(n int) {
	buf := make([]byte, 64<<10)
	for range n {
		sum := sha256.Sum256(buf)
		buf[0] = sum[0]
	}
}

// TestCPUSplitByPart checks that the CPU of goroutines started inside InPart — and of the
// goroutines those start — is charged to that part, that nats-server's own labels count as
// the broker's, and that work outside any part is unlabeled.
func TestCPUSplitByPart(t *testing.T) {
	if !profilerFree(t) {
		t.Skip("the CPU profiler is in use (go test -cpuprofile)")
	}
	p, err := bench.StartCPUProfile()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	// The broker: a goroutine started in its part starts another, as nats-server's accept
	// loop starts each connection's loops.
	bench.InPart(bench.PartBroker, func() {
		wg.Go(func() {
			var inner sync.WaitGroup
			inner.Go(func() { burn(4500) })
			inner.Wait()
		})
	})
	// A stream loop of nats-server replaces the labels it inherited with its own.
	bench.InPart(bench.PartBroker, func() {
		wg.Go(func() {
			pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("account", "$G", "stream", "S")))
			burn(4500)
		})
	})
	bench.InPart(bench.PartClient, func() { wg.Go(func() { burn(1500) }) })
	wg.Wait()
	burn(500) // this goroutine's labels were cleared when InPart returned
	split, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	broker, client := split.ByPart[bench.PartBroker], split.ByPart[bench.PartClient]
	t.Logf("split: %v, %d samples", split.ByPart, split.Samples)
	if split.Samples == 0 || split.Total() <= 0 {
		t.Fatalf("no samples: %+v", split)
	}
	// 9,000 rounds against 1,500: sampled at 100 Hz, the broker's share is far above the
	// client's even on a loaded machine (the split counts CPU time, not wall time).
	if broker <= 2*client || client == 0 {
		t.Errorf("broker %v, client %v: want the broker's (6× the work) well above the client's, both measured", broker, client)
	}
	if _, ok := split.ByPart[bench.PartDouble]; ok {
		t.Errorf("the double used CPU in a test without one: %v", split.ByPart)
	}
	if _, err := p.Stop(); err == nil {
		t.Error("a second Stop did not fail")
	}

	per := bench.PerChunk(split, 1000)
	if per.Samples != split.Samples || per.Broker <= 0 || per.BrokerAndClient < per.Broker+per.Client {
		t.Errorf("PerChunk = %+v", per)
	}
}

// TestCPUProfileOnlyOne checks that a second profile is refused with ErrProfiling while one
// runs (go test -cpuprofile, or another benchmark), and that the first still works.
func TestCPUProfileOnlyOne(t *testing.T) {
	if !profilerFree(t) {
		t.Skip("the CPU profiler is in use (go test -cpuprofile)")
	}
	p, err := bench.StartCPUProfile()
	if err != nil {
		t.Fatal(err)
	}
	if q, err := bench.StartCPUProfile(); !errors.Is(err, bench.ErrProfiling) || q != nil {
		t.Errorf("second profile: %v, %v; want ErrProfiling", q, err)
	}
	if _, err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	q, err := bench.StartCPUProfile()
	if err != nil {
		t.Fatalf("a profile after the first stopped: %v", err)
	}
	if _, err := q.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestParseCPUSplitRefusesGarbage(t *testing.T) {
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		_, _ = w.Write(b)
		_ = w.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"not gzip", []byte("hello"), "read CPU profile"},
		{"truncated length", gz([]byte{0x12, 0x05, 0x01}), "bad length"},
		{"group wire type", gz([]byte{0x0b}), "wire type 3"},
		{"truncated varint", gz([]byte{0x08, 0x80}), "bad varint"},
		{"samples without a cpu type", gz([]byte{0x12, 0x02, 0x10, 0x01}), "no cpu sample type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := bench.ParseCPUSplit(bytes.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one saying %q", err, tt.want)
			}
		})
	}
	// An empty profile (no samples) is an empty split, not an error.
	split, err := bench.ParseCPUSplit(bytes.NewReader(gz(nil)))
	if err != nil || split.Samples != 0 || split.Total() != 0 {
		t.Fatalf("empty profile: %+v, %v", split, err)
	}
}
