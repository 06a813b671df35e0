package httpapi_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

// WatchTokens (moved here from cmd/sluice, where only the end-to-end serve test covered it):
// a rewritten file takes effect without a restart, a broken one keeps the tokens in force and
// says so, a reload signal reloads at once, and the watch ends with its context.
func TestWatchTokens(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	const first, second = "first-token-0123456789", "second-token-0123456789-rotated"
	write(`[{"name":"a","token":"` + first + `","scopes":["read"]}]`)
	tokens, err := httpapi.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	s := newServer(t, httpapi.Config{Tokens: tokens, Logger: debugLogger(logs)})
	get := func(tok string) int { return serve(t, s.Handler(), "GET", "/v1/jobs/x", tok, nil, nil).Code }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5 s; log:\n%s", what, logs.String())
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	reload := make(chan os.Signal, 1)
	done := make(chan error, 1)
	go func() { done <- httpapi.WatchTokensEvery(ctx, s, path, reload, 10*time.Millisecond) }()

	// A reload signal reloads though the file is unchanged; once it has, the watch has taken
	// its first look at the file, so the rotation below is a change it sees.
	reload <- os.Interrupt
	waitFor("reloaded on signal", func() bool { return strings.Contains(logs.String(), "reloaded API tokens") })
	if got := get(first); got != http.StatusNotFound {
		t.Fatalf("the token in force stopped working after a reload of the same file: %d", got)
	}
	// Rotated on disk: picked up by the poll.
	write(`[{"name":"b","token":"` + second + `","scopes":["read"]}]`)
	waitFor("rotated token accepted", func() bool { return get(second) == http.StatusNotFound })
	if got := get(first); got != http.StatusUnauthorized {
		t.Fatalf("the removed token still works: %d", got)
	}
	// Broken: the tokens in force stay.
	write(`[{"name":`)
	waitFor("broken file reported", func() bool { return strings.Contains(logs.String(), "keeping the previous tokens") })
	if got := get(second); got != http.StatusNotFound {
		t.Fatalf("a broken tokens file dropped the tokens in force: %d", got)
	}
	// Fixed again: picked up.
	write(`[{"name":"a","token":"` + first + `","scopes":["read"]}]`)
	waitFor("fixed file picked up", func() bool { return get(first) == http.StatusNotFound })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("WatchTokens returned %v when its context ended, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchTokens still running 5 s after its context ended")
	}
}
