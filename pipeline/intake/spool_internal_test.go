package intake

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
)

// spoolLoader is a Loader with only what spool uses.
func spoolLoader(t *testing.T, perUpload, total int64) *Loader {
	t.Helper()
	return &Loader{cfg: LoaderConfig{SpoolDir: t.TempDir(), MemSpoolBytes: perUpload, MemSpoolTotal: total}, mem: NewByteBudget(total)}
}

// spoolFiles counts the files in l's spool directory.
func spoolFiles(t *testing.T, l *Loader) int {
	t.Helper()
	es, err := os.ReadDir(l.cfg.SpoolDir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// readAll reads s from its start.
func readAll(t *testing.T, s *spooled) []byte {
	t.Helper()
	r, err := s.open()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// body is n bytes that differ from one position to the next, so a misplaced byte shows.
func body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

// An upload up to MemSpoolBytes stays in memory (no file), one past it goes to a file; either
// way the content and the hash are the upload's, and release leaves no file and no budget held.
// Sizes around the limit and around the budget's growth step.
func TestSpoolInMemoryUpToTheLimit(t *testing.T) {
	const limit = 100_000 // not a multiple of the growth step
	for _, n := range []int{0, 1, memGrow - 1, memGrow, memGrow + 1, limit - 1, limit, limit + 1, 3 * limit} {
		l := spoolLoader(t, limit, 1<<20)
		want := body(n)
		s, sum, err := l.spool(io.MultiReader(bytes.NewReader(want[:n/2]), bytes.NewReader(want[n/2:])))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if wantSum := sha256.Sum256(want); !bytes.Equal(sum, wantSum[:]) {
			t.Errorf("%d bytes: wrong hash", n)
		}
		inMem := n <= limit
		if s.inMem != inMem || (spoolFiles(t, l) == 0) != inMem {
			t.Errorf("%d bytes: in memory %v with %d spool files; want in memory %v", n, s.inMem, spoolFiles(t, l), inMem)
		}
		if got := readAll(t, s); !bytes.Equal(got, want) {
			t.Errorf("%d bytes: read back %d bytes that differ", n, len(got))
		}
		if size, err := s.size(); err != nil || size != int64(n) {
			t.Errorf("%d bytes: size %d, %v", n, size, err)
		}
		if used := l.mem.Used(); inMem && used < int64(n) || !inMem && used != 0 {
			t.Errorf("%d bytes: %d bytes of budget held before release", n, used)
		}
		s.release()
		s.release()
		if used := l.mem.Used(); used != 0 || spoolFiles(t, l) != 0 {
			t.Errorf("%d bytes: after release %d bytes of budget held, %d spool files", n, used, spoolFiles(t, l))
		}
	}
}

// With the total budget spent by uploads held, the next goes to a file whole; once they are
// released it is held in memory again. A negative MemSpoolBytes sends every upload to a file.
func TestSpoolBudget(t *testing.T) {
	l := spoolLoader(t, 64<<10, 96<<10)
	a, _, err := l.spool(bytes.NewReader(body(60 << 10)))
	if err != nil || !a.inMem {
		t.Fatalf("first upload: in memory %v, %v", a != nil && a.inMem, err)
	}
	want := body(50 << 10)
	b, _, err := l.spool(bytes.NewReader(want))
	if err != nil {
		t.Fatal(err)
	}
	if b.inMem || !bytes.Equal(readAll(t, b), want) {
		t.Fatalf("second upload with the budget spent: in memory %v (want a file with the whole upload)", b.inMem)
	}
	if used := l.mem.Used(); used != 64<<10 {
		t.Errorf("budget held = %d, want the first upload's 64 KiB", used)
	}
	a.release()
	b.release()
	c, _, err := l.spool(bytes.NewReader(body(50 << 10)))
	if err != nil || !c.inMem {
		t.Fatalf("after release: in memory %v, %v", c != nil && c.inMem, err)
	}
	c.release()

	off := spoolLoader(t, -1, 1<<20)
	d, _, err := off.spool(bytes.NewReader([]byte("x")))
	if err != nil || d.inMem || spoolFiles(t, off) != 1 {
		t.Fatalf("MemSpoolBytes -1: in memory %v, %d files, %v", d != nil && d.inMem, spoolFiles(t, off), err)
	}
	d.release()
}

// failingReader returns n bytes and then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

// A body that fails mid-read is bad input, in memory or past the limit, and leaves neither a
// file nor budget behind.
func TestSpoolReadFailure(t *testing.T) {
	boom := errors.New("connection reset")
	for _, n := range []int{10, 200 << 10} {
		l := spoolLoader(t, 64<<10, 1<<20)
		s, _, err := l.spool(&failingReader{n: n, err: boom})
		if !errors.Is(err, ErrBadInput) || !errors.Is(err, boom) || s != nil {
			t.Fatalf("%d bytes then an error: %v, %v", n, s, err)
		}
		if used := l.mem.Used(); used != 0 || spoolFiles(t, l) != 0 {
			t.Errorf("%d bytes then an error: %d bytes of budget held, %d spool files", n, used, spoolFiles(t, l))
		}
	}
}

// Concurrent uploads never hold more than the budget, and give all of it back.
func TestSpoolBudgetConcurrent(t *testing.T) {
	const total = 256 << 10
	l := spoolLoader(t, 100<<10, total)
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := int64(0)
	for i := range 64 {
		wg.Go(func() {
			want := body(1000 * (i + 1))
			s, _, err := l.spool(bytes.NewReader(want))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			peak = max(peak, l.mem.Used())
			mu.Unlock()
			if !bytes.Equal(readAll(t, s), want) {
				t.Errorf("upload %d read back differs", i)
			}
			s.release()
		})
	}
	wg.Wait()
	if peak > total || l.mem.Used() != 0 || spoolFiles(t, l) != 0 {
		t.Fatalf("peak %d of %d, held at the end %d, spool files %d", peak, total, l.mem.Used(), spoolFiles(t, l))
	}
}
