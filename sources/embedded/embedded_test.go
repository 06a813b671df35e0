package embedded_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, embeddedtest.LeakOptions()...) }

func start(t *testing.T, dir string) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{DataDir: dir, LazySync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// Regression (issue 11, finding 4): the embedded server had no authentication and its URL
// file was world-readable, so any local user could purge the dead letters or publish forged
// commands. Now a client must present the generated credential.
func TestClientsMustAuthenticate(t *testing.T) {
	srv := start(t, filepath.Join(t.TempDir(), "data"))
	ep := srv.Endpoint()
	if ep.User != embedded.User || len(ep.Password) < 40 {
		t.Fatalf("endpoint credential: user %q, password of %d characters", ep.User, len(ep.Password))
	}
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no credential", nil},
		{"wrong password", []nats.Option{nats.UserInfo(embedded.User, string(ep.Password)+"x")}},
		{"wrong user", []nats.Option{nats.UserInfo("admin", string(ep.Password))}},
		{"token instead", []nats.Option{nats.Token(string(ep.Password))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(ep.URL, append(tc.opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected without the credential")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("connect: %v, want an authorization error", err)
			}
		})
	}
	// With the credential, JetStream works.
	nc := embeddedtest.Connect(t, srv)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("JetStream with the credential: %v", err)
	}
	// No monitoring endpoint: it would answer without a credential.
	if addr := srv.NATS().MonitorAddr(); addr != nil {
		t.Fatalf("monitoring port open on %v", addr)
	}
	// Printing an endpoint never shows the password.
	if s := ep.String(); strings.Contains(s, string(ep.Password)) || s != ep.URL {
		t.Fatalf("endpoint prints as %q", s)
	}
}

// Regression (issue 11, finding 4): nats.url was mode 0644. The data directory Sluice creates,
// the credential, the URL and the lock are the owner's only; the credential survives a
// restart and Discover hands it to other local sluice commands.
func TestFilesAreOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	srv := start(t, dir)
	want := map[string]os.FileMode{
		"":                      0o700 | os.ModeDir,
		embedded.CredentialFile: 0o600,
		embedded.URLFile:        0o600,
		"nats.lock":             0o600,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", filepath.Join(dir, name), fi.Mode(), mode)
		}
	}
	ep, err := embedded.Discover(dir)
	if err != nil || ep != srv.Endpoint() {
		t.Fatalf("Discover: %+v, %v; want the server's endpoint", ep.URL, err)
	}
	password := srv.Endpoint().Password
	srv.Shutdown()
	if ep, err := embedded.Discover(dir); err != nil || ep.URL != "" {
		t.Fatalf("Discover with no server: %v, %v", ep, err)
	}
	srv2 := start(t, dir)
	if srv2.Endpoint().Password != password {
		t.Fatal("the credential changed across a restart")
	}
}

// A credential file others can read (or replace) is refused with a clear error, never
// silently fixed: its password must be presumed known.
func TestInsecureCredentialRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    error // nil: any error
		msg     string
	}{
		{"group readable", func(t *testing.T, path string) { chmod(t, path, 0o640) }, embedded.ErrInsecureCredential, "chmod 600"},
		{"world readable", func(t *testing.T, path string) { chmod(t, path, 0o644) }, embedded.ErrInsecureCredential, "mode 0644"},
		{"symbolic link", func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "pw")
			if err := os.WriteFile(target, []byte("0123456789abcdefghijklmnop\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, embedded.ErrInsecureCredential, "symbolic link"},
		{"another owner", func(t *testing.T, path string) {
			if os.Getuid() != 0 {
				t.Skip("changing a file's owner needs root")
			}
			if err := os.Chown(path, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, embedded.ErrInsecureCredential, "belongs to uid 65534"},
		{"too short", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("short\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil, "16 to 255 characters"},
		{"empty", func(t *testing.T, path string) {
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil, "16 to 255 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			srv := start(t, dir)
			path := filepath.Join(dir, embedded.CredentialFile)
			tc.prepare(t, path)
			// A client on the same data directory refuses it while the server runs…
			_, err := embedded.Discover(dir)
			checkErr(t, "Discover", err, tc.want, tc.msg)
			// …and the server refuses to start on it.
			srv.Shutdown()
			s2, err := embedded.Start(embedded.Config{DataDir: dir, LazySync: true})
			if err == nil {
				s2.Shutdown()
			}
			checkErr(t, "Start", err, tc.want, tc.msg)
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func checkErr(t *testing.T, what string, err, want error, msg string) {
	t.Helper()
	switch {
	case err == nil:
		t.Fatalf("%s: no error", what)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: %v, want %v", what, err, want)
	case !strings.Contains(err.Error(), msg):
		t.Fatalf("%s: %q does not say %q", what, err, msg)
	}
}
