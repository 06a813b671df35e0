// Package secret reads and creates the small secret files Sluice keeps in its data directory
// (the embedded broker's password, the command signing key): one line, owner-only (mode 0600),
// owned by the user running Sluice. A file other users could read is refused, never silently
// fixed: its secret must be presumed known.
package secret

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrInsecure is returned by Read and ReadOrCreate when the file can be read or replaced by
// other users: group or other permission bits, another owner, a symbolic link, not a regular
// file. The error says how to fix it.
var ErrInsecure = errors.New("insecure secret file")

// MinLen and MaxLen bound a secret's length in bytes: MinLen because a shorter one can be
// guessed, MaxLen because a secret is one short line and anything larger is not one.
const (
	MinLen = 16
	MaxLen = 255
)

// generatedBytes is the entropy of a generated secret: 256 bits.
const generatedBytes = 32

// Generate returns a new random secret: 32 bytes from crypto/rand, base64url (43 characters).
func Generate() string {
	var raw [generatedBytes]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// Read returns the secret in path (surrounding white space trimmed) after checking that only
// its owner, the current user, can read it. A missing file gives an error wrapping
// fs.ErrNotExist. It does not block beyond the file read.
func Read(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", fmt.Errorf("%w: %s is a symbolic link; it must be a regular file", ErrInsecure, path)
		}
		return "", fmt.Errorf("read secret: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %s is not a regular file", ErrInsecure, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return "", fmt.Errorf("%w: %s belongs to uid %d, not to this user (uid %d); run sluice as its owner",
			ErrInsecure, path, st.Uid, os.Getuid())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("%w: %s has mode %04o, so other users can read it; run chmod 600 %s "+
			"(and consider the secret known: delete the file, with sluice stopped, to make a new one)",
			ErrInsecure, path, perm, path)
	}
	buf := make([]byte, MaxLen+1)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read secret %s: %w", path, err)
	}
	s := strings.TrimSpace(string(buf[:n]))
	if len(s) < MinLen || n > MaxLen {
		return "", fmt.Errorf("secret file %s must hold one line of %d to %d characters; delete it, with sluice stopped, to make a new one",
			path, MinLen, MaxLen)
	}
	return s, nil
}

// ReadOrCreate returns the secret in path, or generates one (Generate) and writes it there,
// mode 0600, synced. It never replaces a file another process created meanwhile: both then use
// the first one's secret.
func ReadOrCreate(path string) (string, error) {
	s, err := Read(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return s, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("create secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(Generate() + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("write secret %s: %w", path, err)
	}
	// Link fails if path exists: two processes creating it at once agree on the first one's.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("store secret %s: %w", path, err)
	}
	return Read(path)
}
