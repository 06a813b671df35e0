package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"
)

// browserCall is call with a browser's headers (hdr) and a text/plain body: the "simple"
// request another site's page can make a browser send without a preflight.
func browserCall(t *testing.T, method, url, token string, body []byte, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "text/plain")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// consumersReading is GET /v1/consumers as the console decodes it.
type consumersReading struct {
	ReadAt    *time.Time `json:"read_at"`
	Streams   []struct{ Stream string }
	Consumers []struct {
		Stream, Consumer string
		Pending          int64 `json:"pending"`
	}
}

// pollConsumers polls GET /v1/consumers until ok accepts the reading, or fails after timeout.
func pollConsumers(t *testing.T, base, token string, timeout time.Duration, ok func(consumersReading) bool) consumersReading {
	t.Helper()
	var last string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		code, body := browserCall(t, "GET", base+"/v1/consumers", token, nil, nil)
		last = body
		var r consumersReading
		if code == http.StatusOK && json.Unmarshal([]byte(body), &r) == nil && ok(r) {
			return r
		}
	}
	t.Fatalf("GET /v1/consumers never gave the reading wanted within %s; last: %s", timeout, last)
	return consumersReading{}
}

// Issue 18: the console's server pieces are wired in both processes that serve the API: serve
// and api run the broker statistics and hand them to GET /v1/consumers, GET /v1/whoami names
// the token, and a cross-origin browser POST creates no job (SLUICE_API_TRUSTED_ORIGINS lets a
// listed origin through).
func TestConsoleRoutesWired(t *testing.T) {
	chunks := []byte(`{"chunk_id":"console_1","content":"one"}` + "\n" + `{"chunk_id":"console_2","content":"two"}` + "\n" + `{"chunk_id":"console_3","content":"three"}` + "\n")
	evil := map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}

	t.Run("serve", func(t *testing.T) {
		s := startServer(t, "serve", nil, "--data-dir", t.TempDir(), "--tokens-file", tokensFile(t))
		if code, body := browserCall(t, "GET", s.base+"/v1/whoami", writeTok, nil, nil); code != 200 ||
			body != `{"principal":"writer","scopes":["read","write"],"auth":true}`+"\n" {
			t.Errorf("GET /v1/whoami = %d %s", code, body)
		}
		pollConsumers(t, s.base, readTok, 30*time.Second, func(r consumersReading) bool {
			for _, c := range r.Consumers {
				if c.Consumer == "sluice-chunks" {
					return r.ReadAt != nil
				}
			}
			return false
		})
		if code, body := browserCall(t, "POST", s.base+"/v1/jobs?env=dev&file=evil.jsonl", writeTok, chunks, evil); code != http.StatusForbidden {
			t.Errorf("cross-site POST /v1/jobs = %d %s, want 403", code, body)
		}
		if list, _ := call(t, "GET", s.base+"/v1/jobs", readTok, "", nil).body["jobs"].([]any); len(list) != 0 {
			t.Errorf("a cross-site POST created a job: %v", list)
		}
	})

	t.Run("api", func(t *testing.T) {
		// An API without workers: what it publishes stays pending on the chunk consumer.
		s := startServer(t, "api", []string{"SLUICE_API_TRUSTED_ORIGINS=https://console.example"}, "--data-dir", t.TempDir(), "--tokens-file", tokensFile(t))
		if code, body := browserCall(t, "POST", s.base+"/v1/jobs?env=dev&file=evil.jsonl", writeTok, chunks, evil); code != http.StatusForbidden {
			t.Errorf("cross-site POST /v1/jobs = %d %s, want 403", code, body)
		}
		trusted := map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://console.example"}
		if code, body := browserCall(t, "POST", s.base+"/v1/jobs?env=dev&file=console.jsonl", writeTok, chunks, trusted); code != http.StatusAccepted {
			t.Fatalf("POST /v1/jobs from the trusted origin = %d %s, want 202", code, body)
		}
		// The statistics refresh every 10 s: the published chunk batch shows as pending within
		// one (the three chunks travel in one message).
		pollConsumers(t, s.base, readTok, 30*time.Second, func(r consumersReading) bool {
			for _, c := range r.Consumers {
				if c.Stream == "SLUICE_CHUNKS" && c.Consumer == "sluice-chunks" && c.Pending > 0 {
					return true
				}
			}
			return false
		})
		if code, _ := browserCall(t, "GET", s.base+"/v1/consumers", "", nil, nil); code != http.StatusUnauthorized {
			t.Errorf("GET /v1/consumers without a token = %d, want 401", code)
		}
	})
}
