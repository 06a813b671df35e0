package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeTokensScopesAndRotation runs sluice serve with a tokens file: calls without a
// token or with too small a scope are refused and change nothing, and a rotated file takes
// effect without a restart.
func TestServeTokensScopesAndRotation(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens.json")
	write := func(s string) { replaceFile(t, tokens, s) }
	write(`[{"name":"reader","token":"reader-token-0123456789","scopes":["read"]},
	        {"name":"loader","token":"loader-token-0123456789","scopes":["write"]},
	        {"name":"operator","token":"operator-token-012345678","scopes":["admin"]}]`)
	srv := startServer(t, "serve", nil, "--data-dir", filepath.Join(dir, "data"), "--tokens-file", tokens)
	base := srv.base
	call := func(method, path, token string, body []byte) int { return statusOf(method, base+path, token, body) }
	chunk := []byte(`{"chunk_id":"auth_1","content":"a chunk"}`)
	for _, tc := range []struct {
		name, method, path, token string
		body                      []byte
		want                      int
	}{
		{"no token", "GET", "/v1/jobs", "", nil, 401},
		{"bad token", "GET", "/v1/jobs", "not-a-token-at-all-xxxx", nil, 401},
		{"read can list", "GET", "/v1/jobs", "reader-token-0123456789", nil, 200},
		{"read cannot load", "POST", "/v1/jobs?env=dev", "reader-token-0123456789", chunk, 403},
		{"write cannot replay", "POST", "/v1/dlq/replay", "loader-token-0123456789", []byte(`{"ids":["x"]}`), 403},
		{"write cannot purge", "DELETE", "/v1/dlq?job=x", "loader-token-0123456789", nil, 403},
		{"write cannot roll back", "DELETE", "/v1/jobs/jx", "loader-token-0123456789", nil, 403},
		{"metrics need a token", "GET", "/metrics", "", nil, 401},
		{"health needs none", "GET", "/healthz", "", nil, 200},
	} {
		if got := call(tc.method, tc.path, tc.token, tc.body); got != tc.want {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.path, got, tc.want)
		}
	}
	// The refused upload published nothing.
	if got := getJSONAuth(t, base+"/v1/jobs", "reader-token-0123456789"); len(got["jobs"].([]any)) != 0 {
		t.Fatalf("a refused call created a job: %v", got)
	}
	if got := call("POST", "/v1/jobs?env=dev", "loader-token-0123456789", chunk); got != 202 {
		t.Fatalf("write token: %d", got)
	}
	// Rotate: the reader token goes, a new one arrives; no restart.
	write(`[{"name":"reader2","token":"reader-token-rotated-0001","scopes":["read"]},
	        {"name":"operator","token":"operator-token-012345678","scopes":["admin"]}]`)
	deadline := time.Now().Add(15 * time.Second)
	for call("GET", "/v1/jobs", "reader-token-rotated-0001", nil) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("rotated token never accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := call("GET", "/v1/jobs", "reader-token-0123456789", nil); got != 401 {
		t.Fatalf("the removed token still works: %d", got)
	}
	// A broken file keeps the tokens in force: once the server says it refused the file, the
	// rotated token still works.
	write(`[{"name":`)
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(srv.logs.String(), "keeping the previous tokens"); {
		if time.Now().After(deadline) {
			t.Fatal("the server never reported the broken tokens file")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := call("GET", "/v1/jobs", "reader-token-rotated-0001", nil); got != 200 {
		t.Fatalf("a broken tokens file dropped the tokens in force: %d", got)
	}
}

// replaceFile replaces the file at path with content s in one rename, as an operator's tooling
// (or a mounted secret) would.
func replaceFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// statusOf makes one request (token "" sends none) and returns its status, -1 when it failed.
func statusOf(method, url, token string, body []byte) int {
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getJSONAuth(t *testing.T, url, token string) map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = jsonDecode(resp.Body, &m)
	return m
}
