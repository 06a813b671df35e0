package intake

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// Defaults of LoaderConfig.MemSpoolBytes and MemSpoolTotal.
const (
	// DefaultMemSpoolBytes: an upload of up to 1 MiB is held in memory while it is hashed
	// and published. A spool file costs a create and an unlink in SpoolDir, and on a disk the
	// broker and SQLite fsync, each waits for the file system's journal: in a burst of 100
	// uploads (the 1,000-client mix) creating the spool files was an eighth of the server's
	// CPU.
	DefaultMemSpoolBytes = 1 << 20
	// DefaultMemSpoolTotal bounds the bytes of every upload held in memory at once; past it
	// uploads go to files.
	DefaultMemSpoolTotal = 64 << 20
)

// memGrow is the step in which an in-memory spool reserves from the total budget.
const memGrow = 32 << 10

// ByteBudget is a counting semaphore of bytes that never waits: a taker that would pass its
// maximum gets false and nothing. The loader bounds the uploads it holds in memory with one,
// the API the bytes of the uploads it receives at once. Safe for concurrent use.
type ByteBudget struct {
	max  int64
	used atomic.Int64
}

// NewByteBudget returns a budget of max bytes.
func NewByteBudget(max int64) *ByteBudget { return &ByteBudget{max: max} }

// TryTake reserves n bytes, or returns false (reserving nothing) when that would pass the
// maximum.
func (b *ByteBudget) TryTake(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// Give returns n bytes taken before.
func (b *ByteBudget) Give(n int64) { b.used.Add(-n) }

// Used returns the bytes reserved now.
func (b *ByteBudget) Used() int64 { return b.used.Load() }

// Max returns the budget's maximum.
func (b *ByteBudget) Max() int64 { return b.max }

// spooled is an upload held while it is hashed and published: in memory (mem) when it was
// small enough, else in a file (path). release frees either.
type spooled struct {
	mem      []byte
	inMem    bool
	path     string
	temp     bool // path is a spool file of ours, removed by release
	budget   *ByteBudget
	reserved int64 // bytes of budget held for mem
}

// open returns a reader of the whole upload from its start.
func (s *spooled) open() (io.ReadCloser, error) {
	if s.inMem {
		return io.NopCloser(bytes.NewReader(s.mem)), nil
	}
	return os.Open(s.path)
}

// size returns the upload's size in bytes.
func (s *spooled) size() (int64, error) {
	if s.inMem {
		return int64(len(s.mem)), nil
	}
	st, err := os.Stat(s.path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// release removes a spool file and gives back the memory budget. Safe to call twice.
func (s *spooled) release() {
	if s.temp {
		os.Remove(s.path)
		s.temp = false
	}
	if s.reserved > 0 {
		s.budget.Give(s.reserved)
		s.reserved = 0
	}
	s.mem = nil
}

// spool reads body to its end and returns it with its SHA-256. Up to MemSpoolBytes stay in
// memory while the total budget allows; a larger body (or one met with the budget spent)
// goes on to a file in SpoolDir. A failed read of body is ErrBadInput.
func (l *Loader) spool(body io.Reader) (*spooled, []byte, error) {
	h := sha256.New()
	body = io.TeeReader(body, h)
	s := &spooled{budget: l.mem, inMem: true}
	for l.cfg.MemSpoolBytes > 0 {
		if len(s.mem) == cap(s.mem) {
			grow := int64(min(max(cap(s.mem), memGrow), int(l.cfg.MemSpoolBytes)-cap(s.mem)))
			if grow <= 0 {
				// Full at the limit: an upload of exactly MemSpoolBytes ends here.
				var one [1]byte
				n, err := io.ReadFull(body, one[:])
				if n == 0 && errors.Is(err, io.EOF) {
					return s, h.Sum(nil), nil
				}
				if n == 0 {
					s.release()
					return nil, nil, fmt.Errorf("%w: read upload: %w", ErrBadInput, err)
				}
				body = io.MultiReader(bytes.NewReader(one[:n]), body)
				break // larger than MemSpoolBytes: go on in a file
			}
			if !l.mem.TryTake(grow) {
				break // the budget is spent: go on in a file
			}
			s.reserved += grow
			buf := make([]byte, len(s.mem), cap(s.mem)+int(grow)) // cap exactly what is reserved
			copy(buf, s.mem)
			s.mem = buf
		}
		n, err := body.Read(s.mem[len(s.mem):cap(s.mem)])
		s.mem = s.mem[:len(s.mem)+n]
		if errors.Is(err, io.EOF) {
			return s, h.Sum(nil), nil
		}
		if err != nil {
			s.release()
			return nil, nil, fmt.Errorf("%w: read upload: %w", ErrBadInput, err)
		}
	}
	if err := s.toFile(l.cfg.SpoolDir, body); err != nil {
		s.release()
		return nil, nil, err
	}
	return s, h.Sum(nil), nil
}

// toFile writes what s holds in memory and then the rest of body to a new spool file in dir,
// and gives back the memory.
func (s *spooled) toFile(dir string, body io.Reader) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create spool directory: %w", err)
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return fmt.Errorf("spool upload: %w", err)
	}
	s.path, s.temp, s.inMem = f.Name(), true, false
	if _, err := f.Write(s.mem); err != nil {
		f.Close()
		return fmt.Errorf("spool upload: %w", err)
	}
	if s.reserved > 0 {
		s.budget.Give(s.reserved)
		s.reserved = 0
	}
	s.mem = nil
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return fmt.Errorf("%w: read upload: %w", ErrBadInput, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spool upload: %w", err)
	}
	return nil
}
