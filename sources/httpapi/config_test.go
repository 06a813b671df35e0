package httpapi_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi"
)

func TestLoopbackRule(t *testing.T) {
	ipv6 := true
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		ipv6 = false
	} else {
		ln.Close()
	}
	tests := []struct {
		name    string
		addr    string
		tokens  bool
		wantErr bool
		needV6  bool
	}{
		{name: "all interfaces without tokens", addr: "0.0.0.0:0", wantErr: true},
		{name: "empty host without tokens", addr: ":0", wantErr: true},
		{name: "hostname without tokens", addr: "example.com:0", wantErr: true},
		{name: "all interfaces with tokens", addr: "0.0.0.0:0", tokens: true},
		{name: "ipv4 loopback", addr: "127.0.0.1:0"},
		{name: "other 127/8 address", addr: "127.0.0.2:0"},
		{name: "localhost", addr: "localhost:0"},
		{name: "ipv6 loopback", addr: "[::1]:0", needV6: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.needV6 && !ipv6 {
				t.Skip("no IPv6 loopback here")
			}
			cfg := httpapi.Config{Addr: tt.addr, Jobs: &fakeJobs{}, Chunks: &fakeChunks{}}
			if tt.tokens {
				cfg.Tokens = testTokens()
			}
			s, err := httpapi.New(cfg)
			if tt.wantErr {
				if err == nil {
					s.Close()
					t.Fatal("New succeeded, want a loopback error")
				}
				mustContain(t, "error", err.Error(), "loopback")
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer s.Close()
			host, port, _ := net.SplitHostPort(s.Addr())
			if port == "0" || host == "" {
				t.Errorf("Addr() = %q, want the bound address", s.Addr())
			}
		})
	}
}

func TestNewFailsOnPortInUse(t *testing.T) {
	s1 := newServer(t, httpapi.Config{})
	s2, err := httpapi.New(httpapi.Config{Addr: s1.Addr(), Jobs: &fakeJobs{}, Chunks: &fakeChunks{}})
	if err == nil {
		s2.Close()
		t.Fatal("New on an address in use succeeded")
	}
	mustContain(t, "error", err.Error(), "listen on "+s1.Addr())
}

func TestConfigValidateReportsEverything(t *testing.T) {
	cfg := httpapi.Config{
		Addr:            "127.0.0.1:0",
		MaxUploadBytes:  -1,
		ShutdownTimeout: -1,
		Ready:           []httpapi.Check{{Name: "a"}, {Name: "a", Check: nil}, {Name: ""}},
		Tokens:          []httpapi.Token{{Name: "x", Token: "short", Scopes: []httpapi.Scope{"read"}}},
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	mustContain(t, "error", err.Error(),
		"Jobs is required", "Chunks is required", "MaxUploadBytes -1", "ShutdownTimeout -1ns",
		`duplicate name "a"`, "Name is empty", "Check is nil", "shorter than 16")
	if strings.Contains(err.Error(), `"short"`) {
		t.Errorf("error shows a token value: %v", err)
	}
	if _, err := httpapi.New(cfg); err == nil {
		t.Error("New accepted a config Validate rejects")
	}
}

// Issue 15: deployments/tokens.example.json, public in the repository, was mounted as the live
// tokens file by docker-compose.yml; the server refuses it, every token of it named.
func TestExampleTokensRefused(t *testing.T) {
	_, err := httpapi.LoadTokens("../../deployments/tokens.example.json")
	if err == nil {
		t.Fatal("the example tokens file loaded")
	}
	for _, name := range []string{"loader", "operator", "dashboard"} {
		if !strings.Contains(err.Error(), fmt.Sprintf("name %q): token is an example placeholder", name)) {
			t.Errorf("error does not name token %q: %v", name, err)
		}
	}
	if strings.Contains(err.Error(), "change-me-operator-token-01") {
		t.Errorf("error shows a token value: %v", err)
	}
}

func TestLoadTokens(t *testing.T) {
	const (
		t1 = "s3cret-token-aaaaaaaa"
		t2 = "s3cret-token-bbbbbbbb"
	)
	tests := []struct {
		name    string
		content string // "" = no file
		want    []httpapi.Token
		wantErr []string // substrings of the error
	}{
		{
			name:    "valid",
			content: `[{"name":"ci","token":"` + t1 + `","scopes":["write"]},{"name":"ops","token":"` + t2 + `","scopes":["read","admin"]}]`,
			want: []httpapi.Token{
				{Name: "ci", Token: t1, Scopes: []httpapi.Scope{"write"}},
				{Name: "ops", Token: t2, Scopes: []httpapi.Scope{"read", "admin"}},
			},
		},
		{name: "empty list", content: `[]`, want: []httpapi.Token{}},
		{name: "missing file", wantErr: []string{"open tokens file"}},
		{name: "duplicate names", content: `[{"name":"ci","token":"` + t1 + `","scopes":["read"]},{"name":"ci","token":"` + t2 + `","scopes":["read"]}]`, wantErr: []string{`same name "ci"`}},
		{name: "duplicate tokens", content: `[{"name":"a","token":"` + t1 + `","scopes":["read"]},{"name":"b","token":"` + t1 + `","scopes":["read"]}]`, wantErr: []string{"same token value"}},
		{name: "short token", content: `[{"name":"a","token":"s3cret-short","scopes":["read"]}]`, wantErr: []string{"shorter than 16"}},
		{name: "empty name", content: `[{"name":" ","token":"` + t1 + `","scopes":["read"]}]`, wantErr: []string{"name is empty"}},
		{name: "unknown scope", content: `[{"name":"a","token":"` + t1 + `","scopes":["root"]}]`, wantErr: []string{`unknown scope "root"`}},
		{name: "no scopes", content: `[{"name":"a","token":"` + t1 + `"}]`, wantErr: []string{"no scopes"}},
		{name: "every problem at once", content: `[{"name":"","token":"s3cret-short","scopes":["x"]}]`, wantErr: []string{"name is empty", "shorter than 16", `unknown scope "x"`}},
		{name: "broken JSON after a token", content: `[{"name":"a","token":"` + t1 + `"s3cret]`, wantErr: []string{"invalid JSON at byte offset"}},
		{name: "token not a string", content: `[{"name":"a","token":12345678901234567890,"scopes":["read"]}]`, wantErr: []string{"wrong type"}},
		{name: "not a list", content: `{"name":"a"}`, wantErr: []string{"wrong type"}},
		// Issue 15: the compose file mounted the public example as the live tokens file.
		{name: "example placeholder", content: `[{"name":"ops","token":"Change-Me-operator-token-01","scopes":["admin"]}]`, wantErr: []string{"example placeholder"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokens.json")
			if tt.content != "" {
				if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := httpapi.LoadTokens(path)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("LoadTokens succeeded, want an error")
				}
				mustContain(t, "error", err.Error(), tt.wantErr...)
				if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "1234567890") {
					t.Errorf("error shows a token value: %v", err)
				}
				if tt.content == "" && !errors.Is(err, os.ErrNotExist) {
					t.Errorf("missing file error does not wrap os.ErrNotExist: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadTokens: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("LoadTokens = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTokenFormattingHidesSecret(t *testing.T) {
	tok := httpapi.Token{Name: "ci", Token: "s3cret-token-aaaaaaaa", Scopes: []httpapi.Scope{"read"}}
	var logs logBuffer
	debugLogger(&logs).Info("token", "t", tok)
	for _, s := range []string{tok.String(), logs.String()} {
		if strings.Contains(s, string(tok.Token)) {
			t.Errorf("formatted token shows the secret: %s", s)
		}
		mustContain(t, "formatted token", s, "ci")
	}
}
