package pipeline_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/sluice-dev/sluice/pipeline/intake"
	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/files"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// chunkLines returns n JSONL chunk records with ids prefix_0000…
func chunkLines(n int, prefix string) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"chunk_id":"%s_%04d","content":"text %d"}`+"\n", prefix, i, i)
	}
	return b.Bytes()
}

func gzipBytes(t testing.TB, plain []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdBytes(t testing.TB, plain []byte) []byte {
	t.Helper()
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer zw.Close()
	return zw.EncodeAll(plain, nil)
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// noJobLeft fails the test when any job exists or any chunk was published.
func (e *testEnv) noJobLeft(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	jobs, _, err := e.jobs.List(ctx, jobs.Filter{}, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 0 {
		t.Errorf("%d jobs left behind: %+v", len(jobs), jobs[0])
	}
	info, err := e.streams.Chunks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d chunk messages published", info.State.Msgs)
	}
}

// A gzip file was parsed line by line (every item rejected); gzip and zstd files now load as
// their content, recognised by content whatever their name, and are the same job as the
// plain file.
func TestLoadCompressedFiles(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	dir := t.TempDir()
	plain := chunkLines(30, "cmp")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var jobID string
	for i, tc := range []struct {
		name string
		data []byte
	}{
		{"chunks.jsonl.gz", gzipBytes(t, plain)},
		{"chunks.json", zstdBytes(t, plain)}, // the name says nothing
		{"chunks.jsonl", plain},
	} {
		res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: writeFile(t, dir, tc.name, tc.data)})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if i == 0 {
			if res.Existing || res.Total != 30 || res.Published != 30 || res.Rejected != 0 {
				t.Fatalf("%s: %+v, want 30 published", tc.name, res)
			}
			jobID = res.JobID
			job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
			if err != nil || job.State != jobs.JobCompleted || job.Written != 30 {
				t.Fatalf("%s: job %s %d written, %v", tc.name, job.State, job.Written, err)
			}
			continue
		}
		// The same content, compressed otherwise or not at all, is the same job.
		if !res.Existing || res.JobID != jobID {
			t.Errorf("%s: job %s existing %v, want the existing job %s", tc.name, res.JobID, res.Existing, jobID)
		}
	}
	if n := e.count(t); n != 30 {
		t.Fatalf("%d documents stored, want 30", n)
	}
	if got := e.doc(t, "cmp_0029")["content"]; got != "text 29" {
		t.Errorf("content %v", got)
	}
	// A compressed upload (Body) loads too: a new content, as zstd.
	body := zstdBytes(t, chunkLines(5, "up"))
	res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Body: bytes.NewReader(body), File: "up.zst"})
	if err != nil || res.Published != 5 {
		t.Fatalf("zstd upload: %+v, %v", res, err)
	}
}

// sizedBody is an upload body that reports its limit, as the API's do.
type sizedBody struct {
	io.Reader
	max int64
}

func (b sizedBody) MaxBytes() int64 { return b.max }

// Inputs that are not chunk files were half-accepted: a binary file became a job of 176,465
// rejected items, an empty file a completed job of 0. They, and compression bombs, are now
// refused whole with ErrBadInput before any job is opened: no job, no message.
func TestLoadRefusesInputsWhole(t *testing.T) {
	plain := chunkLines(100, "b") // 100 lines
	n := int64(len(plain))
	bomb := append([]byte(`{"chunk_id":"bomb","content":"`), bytes.Repeat([]byte("x"), 32<<20)...)
	bomb = append(bomb, `"}`...)
	exe, err := os.ReadFile("/proc/self/exe") // this test binary: a real executable
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		data   []byte
		body   bool  // as an upload (Body) instead of a path
		limit  int64 // LoaderConfig.MaxDecompressedBytes; 0: the default
		bodyAt int64 // the body reports this limit (MaxBytes); 0: none
		want   error // nil: it loads
		says   string
	}{
		{name: "an executable", data: exe[:min(len(exe), 4<<20)], want: files.ErrNotJSON, says: "7f 45 4c 46"},
		{name: "an uploaded executable", data: exe[:min(len(exe), 4<<20)], body: true, want: files.ErrNotJSON},
		{name: "UTF-16", data: []byte("\xff\xfe{\x00}\x00"), want: files.ErrNotJSON, says: "UTF-16"},
		{name: "empty", data: nil, want: files.ErrEmpty},
		{name: "empty upload", data: nil, body: true, want: files.ErrEmpty},
		{name: "white space only", data: []byte("\n \t\r\n\n"), want: files.ErrEmpty},
		{name: "gzip of nothing", data: gzipBytes(t, nil), want: files.ErrEmpty},
		{name: "gzip bomb", data: gzipBytes(t, bomb), limit: 1 << 20, want: files.ErrTooLarge, says: "unpacks to more than 1048576 bytes"},
		{name: "zstd bomb", data: zstdBytes(t, bomb), limit: 1 << 20, want: files.ErrTooLarge},
		{name: "uploaded gzip bomb, bounded by the body's limit", data: gzipBytes(t, bomb), body: true, bodyAt: 1 << 20, want: files.ErrTooLarge},
		{name: "gzip one byte over the limit", data: gzipBytes(t, plain), limit: n - 1, want: files.ErrTooLarge},
		{name: "gzip at the limit", data: gzipBytes(t, plain), limit: n},
		{name: "uploaded gzip at the body's limit", data: gzipBytes(t, plain), body: true, bodyAt: n, limit: 1},
		{name: "uploaded gzip one byte over the body's limit", data: gzipBytes(t, plain), body: true, bodyAt: n - 1, want: files.ErrTooLarge},
		{name: "truncated gzip", data: gzipBytes(t, plain)[:200], want: nil, says: "corrupt or truncated gzip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{})
			l, err := intake.NewLoader(intake.LoaderConfig{JS: e.js, Jobs: e.jobs, SpoolDir: filepath.Join(e.dir, "spool"),
				MaxDecompressedBytes: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			req := intake.LoadRequest{Env: "dev", File: "input"}
			if tc.body {
				req.Body = bytes.NewReader(tc.data)
				if tc.bodyAt > 0 {
					req.Body = sizedBody{Reader: bytes.NewReader(tc.data), max: tc.bodyAt}
				}
			} else {
				req.Path = writeFile(t, t.TempDir(), "input", tc.data)
			}
			res, err := l.Load(context.Background(), req)
			if tc.want == nil && tc.says == "" {
				if err != nil || res.Published != 100 {
					t.Fatalf("load: %+v, %v; want 100 published", res, err)
				}
				return
			}
			if !errors.Is(err, intake.ErrBadInput) {
				t.Fatalf("load: %v, want ErrBadInput", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("load: %v, want %v", err, tc.want)
			}
			if tc.says != "" && !strings.Contains(err.Error(), tc.says) {
				t.Errorf("load: %q does not say %q", err, tc.says)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
			e.noJobLeft(t)
		})
	}
}

// rejectingFile writes a JSONL file of good items and of items rejected for having no id.
func rejectingFile(good, bad int) []byte {
	var b bytes.Buffer
	for i := range good + bad {
		if i < bad {
			fmt.Fprintf(&b, `{"content":"no id %d"}`+"\n", i)
		} else {
			fmt.Fprintf(&b, `{"chunk_id":"r_%05d","content":"x"}`+"\n", i)
		}
	}
	return b.Bytes()
}

// A file with more rejected items than the listing holds printed exactly 1,000 rejections
// and nothing of the rest. The answer now says how many it leaves out, in the load result and
// in the job.
func TestRejectionsOmitted(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		bad, listed, omitted int
	}{
		{bad: 1500, listed: 1000, omitted: 500},
		{bad: 1001, listed: 1000, omitted: 1},
		{bad: 1000, listed: 1000, omitted: 0},
		{bad: 3, listed: 3, omitted: 0},
	} {
		path := writeFile(t, t.TempDir(), "rejects.jsonl", rejectingFile(5, tc.bad))
		res, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if res.Rejected != int64(tc.bad) || len(res.Rejections) != tc.listed || res.RejectionsOmitted != int64(tc.omitted) {
			t.Errorf("%d bad: result rejected %d, %d listed, %d omitted; want %d listed, %d omitted",
				tc.bad, res.Rejected, len(res.Rejections), res.RejectionsOmitted, tc.listed, tc.omitted)
		}
		job, err := jobs.Wait(ctx, e.jobs, res.JobID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if job.Rejected != int64(tc.bad) || len(job.Rejections) != tc.listed || job.RejectionsOmitted != int64(tc.omitted) ||
			job.RejectionsTruncated != (tc.omitted > 0) {
			t.Errorf("%d bad: job rejected %d, %d listed, %d omitted (truncated %v); want %d listed, %d omitted",
				tc.bad, job.Rejected, len(job.Rejections), job.RejectionsOmitted, job.RejectionsTruncated, tc.listed, tc.omitted)
		}
		// The same file again reports the existing job with the same count.
		again, err := e.loader(t).Load(ctx, intake.LoadRequest{Env: "dev", Path: path})
		if err != nil || !again.Existing || again.RejectionsOmitted != int64(tc.omitted) {
			t.Errorf("%d bad: resubmitted: existing %v, %d omitted, %v", tc.bad, again.Existing, again.RejectionsOmitted, err)
		}
	}
}

// loaderJobs is the API's job service over a real loader, as sluice serve wires it.
type loaderJobs struct {
	noJobs
	loader *intake.Loader
	jobs   *jobs.Store
}

func (s loaderJobs) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	res, err := s.loader.Load(ctx, intake.LoadRequest{Env: req.Env, Body: req.Body, File: req.File,
		Format: files.Format(req.Format), Force: req.Force})
	if errors.Is(err, intake.ErrBadInput) {
		return httpapi.SubmitResult{}, fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
	}
	if err != nil {
		return httpapi.SubmitResult{}, err
	}
	return httpapi.SubmitResult{JobID: res.JobID, Env: res.Env, State: res.State, Total: res.Total,
		Published: res.Published, Rejected: res.Rejected, Rejections: res.Rejections, Existing: res.Existing}, nil
}

func (s loaderJobs) GetJob(ctx context.Context, id string) (jobs.Job, error) {
	j, err := s.jobs.Get(ctx, id)
	if errors.Is(err, jobs.ErrJobNotFound) {
		return j, fmt.Errorf("%w: %w", httpapi.ErrNotFound, err)
	}
	return j, err
}

// The same checks through the HTTP API: a binary, empty or white-space upload is a 400 with
// one line and no job; a bomb past the upload limit a 413; gzip and zstd load; the answer
// and the job say how many rejections they leave out.
func TestAPIInputChecks(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.startWorker(t, e.store, nil)
	const limit = 1 << 20
	base := startUploadAPI(t, e, limit)
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	bomb := gzipBytes(t, append([]byte(`{"chunk_id":"bomb","content":"`), bytes.Repeat([]byte("x"), 8<<20)...))
	refused := []struct {
		name   string
		body   []byte
		status int
		says   string
	}{
		{"executable", exe[:limit], http.StatusBadRequest, "not JSON text"},
		{"empty", nil, http.StatusBadRequest, "empty"},
		{"white space", []byte("  \n\n\t"), http.StatusBadRequest, "empty"},
		{"gzip bomb", bomb, http.StatusRequestEntityTooLarge, "unpacks to more than the limit of 1048576 bytes"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			code, m := postUpload(t, base, tc.body)
			detail, _ := m["detail"].(string)
			if code != tc.status || !strings.Contains(detail, tc.says) || strings.Contains(detail, "\n") {
				t.Fatalf("%d %q, want %d saying %q in one line", code, detail, tc.status, tc.says)
			}
			e.noJobLeft(t)
		})
	}
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"gzip", gzipBytes(t, chunkLines(10, "apigz"))},
		{"zstd", zstdBytes(t, chunkLines(10, "apizst"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := postUpload(t, base, tc.body)
			if code != http.StatusAccepted || m["published"] != float64(10) {
				t.Fatalf("%d %v, want 202 with 10 published", code, m)
			}
		})
	}
	t.Run("1,500 rejections", func(t *testing.T) { checkOmittedRejections(t, base) })
}

// startUploadAPI serves e's loader and jobs over HTTP with uploads up to limit bytes and one
// write token (writerToken), and returns the server's base URL.
func startUploadAPI(t *testing.T, e *testEnv, limit int64) string {
	t.Helper()
	srv, err := httpapi.New(httpapi.Config{
		Addr:            "127.0.0.1:0",
		Tokens:          []httpapi.Token{{Name: "w", Token: writerToken, Scopes: []httpapi.Scope{httpapi.ScopeWrite}}},
		Jobs:            loaderJobs{loader: e.loader(t), jobs: e.jobs},
		Chunks:          noJobs{},
		MaxUploadBytes:  limit,
		ShutdownTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	base, _ := runServer(t, srv)
	return base
}

// postUpload POSTs body as a job upload with the write token and returns the status and the
// decoded answer, which must be JSON.
func postUpload(t *testing.T, base string, body []byte) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/v1/jobs?env=dev&file=f", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+writerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("answer %d %q: %v", resp.StatusCode, raw, err)
	}
	return resp.StatusCode, m
}

// checkOmittedRejections uploads a file of 1,500 rejected items: the answer lists the first
// 1,000 and says how many it leaves out, and so does the job.
func checkOmittedRejections(t *testing.T, base string) {
	t.Helper()
	code, m := postUpload(t, base, rejectingFile(5, 1500))
	if code != http.StatusAccepted || m["rejected"] != float64(1500) || m["rejections_omitted"] != float64(500) {
		t.Fatalf("%d rejected %v omitted %v, want 202, 1500, 500", code, m["rejected"], m["rejections_omitted"])
	}
	if list, _ := m["rejections"].([]any); len(list) != 1000 {
		t.Fatalf("%d rejections listed, want 1000", len(list))
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/jobs/"+m["job_id"].(string), nil)
	req.Header.Set("Authorization", "Bearer "+writerToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var job map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&job); err != nil {
		t.Fatal(err)
	}
	if job["rejections_omitted"] != float64(500) || job["rejections_truncated"] != true {
		t.Fatalf("job: omitted %v truncated %v, want 500 and true", job["rejections_omitted"], job["rejections_truncated"])
	}
}
