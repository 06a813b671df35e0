package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBigUploadMemory uploads a generated NDJSON file of SLUICE_BIG_UPLOAD_MB megabytes
// (set it to run: 500 for the figure) to `sluice api` (broker in another process) and
// reports the server's peak resident memory. The body is streamed from a generator, spooled to disk by the server and
// published in atomic batches; nothing holds it in memory.
func TestBigUploadMemory(t *testing.T) {
	mb, _ := strconv.Atoi(os.Getenv("SLUICE_BIG_UPLOAD_MB"))
	if mb <= 0 {
		t.Skip("set SLUICE_BIG_UPLOAD_MB (e.g. 500) to measure the server's memory during a large upload")
	}
	dir := t.TempDir()
	// The broker runs in this test process, so the measured process is Sluice alone (in
	// production the broker is its own process too).
	url, _, _ := startBroker(t)
	s0 := startServer(t, "api", nil, "--data-dir", filepath.Join(dir, "data"), "--nats-url", url)
	srv, base := s0.cmd, s0.base
	pr, pw := io.Pipe()
	target := int64(mb) << 20
	go func() {
		text := strings.Repeat("The wizard casts a spell of the third level at the lazy dog. ", 14) // ~850 bytes
		var b bytes.Buffer
		var sent int64
		for i := 0; sent < target; i++ {
			b.Reset()
			fmt.Fprintf(&b, `{"chunk_id":"big_%08d","content":%q,"stage":"raw"}`+"\n", i, text)
			n, err := pw.Write(b.Bytes())
			if err != nil {
				return
			}
			sent += int64(n)
		}
		pw.Close()
	}()
	start := time.Now()
	req, _ := http.NewRequest("POST", base+"/v1/jobs?env=dev&file=big.ndjson", pr)
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("upload: %d %v", resp.StatusCode, res)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", srv.Process.Pid))
	var hwm, rss string
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
		if strings.HasPrefix(l, "VmRSS:") {
			rss = strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	t.Logf("uploaded %d MB (%v items published) in %s; server peak RSS %s, now %s", mb, res["published"], time.Since(start).Round(time.Millisecond), hwm, rss)
	kb, _ := strconv.Atoi(strings.Fields(hwm)[0])
	if kb > 128<<10 {
		t.Fatalf("server peak RSS %s: memory is not bounded", hwm)
	}
}
