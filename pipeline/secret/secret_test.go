package secret_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/sluice-dev/sluice/pipeline/secret"
)

// Processes creating the same secret at once all end up with the first one's, and the file is
// owner-only.
func TestReadOrCreateConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	const n = 16
	got := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = secret.ReadOrCreate(path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != got[0] || len(got[i]) != 43 {
			t.Fatalf("caller %d: %q, %v; caller 0: %q", i, got[i], errs[i], got[0])
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".key-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	if _, err := secret.Read(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := secret.Read(filepath.Join(dir, "d")); !errors.Is(err, secret.ErrInsecure) {
		t.Fatalf("directory: %v", err)
	}
	long := filepath.Join(dir, "long")
	if err := os.WriteFile(long, make([]byte, secret.MaxLen+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := secret.Read(long); err == nil {
		t.Fatal("a 256-byte secret was accepted")
	}
}
