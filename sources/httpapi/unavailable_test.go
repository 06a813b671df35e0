package httpapi_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-dev/sluice/pipeline/jobs"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// brokerJobs is a JobService that publishes each upload to a real JetStream stream, as the
// loader does, with the loader's kind of publish timeout.
type brokerJobs struct {
	js      jetstream.JetStream
	timeout time.Duration
}

func (b brokerJobs) SubmitJob(ctx context.Context, req httpapi.SubmitRequest) (httpapi.SubmitResult, error) {
	data, err := io.ReadAll(req.Body)
	if err != nil {
		return httpapi.SubmitResult{}, fmt.Errorf("read upload: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if _, err := b.js.Publish(pctx, "t.upload", data); err != nil {
		return httpapi.SubmitResult{}, fmt.Errorf("publish upload: %w", err)
	}
	return httpapi.SubmitResult{JobID: "j1", State: jobs.JobPending}, nil
}

func (brokerJobs) GetJob(context.Context, string) (jobs.Job, error) {
	return jobs.Job{}, httpapi.ErrNotFound
}

// Regression: while the broker was away, publishing routes answered 500 after 5-9.5 s (the
// publish waited for its timeout). Now a server that can see the connection answers 503 with
// Retry-After at once, and one that cannot still answers 503 (not 500) when the publish fails
// with a broker error or its own deadline.
func TestBrokerAwayAnswers503(t *testing.T) {
	srv, nc, js := embeddedtest.Start(t, embedded.Config{LazySync: true})
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	jobs := brokerJobs{js: js, timeout: time.Second}
	watching := newServer(t, httpapi.Config{Jobs: jobs, BrokerConnected: func() bool { return nc.Status() == nats.CONNECTED }})
	blind := newServer(t, httpapi.Config{Jobs: jobs})
	run(t, watching)
	run(t, blind)
	post := func(s *httpapi.Server) (*http.Response, string, time.Duration) {
		start := time.Now()
		resp, err := client(t).Post("http://"+s.Addr()+"/v1/jobs", "application/x-ndjson", strings.NewReader("{\"id\":\"a\",\"text\":\"b\"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b), time.Since(start)
	}
	for _, s := range []*httpapi.Server{watching, blind} {
		if resp, body, _ := post(s); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("with the broker up: %d %s", resp.StatusCode, body)
		}
	}

	srv.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for nc.Status() == nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("the client did not notice the broker going away")
		}
		time.Sleep(10 * time.Millisecond)
	}
	tests := []struct {
		name   string
		s      *httpapi.Server
		within time.Duration
	}{
		{"fails fast on the connection status", watching, 500 * time.Millisecond},
		{"classifies the publish error", blind, jobs.timeout + time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, took := post(tc.s)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
				resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("broker away: %d (Retry-After %q) %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
			}
			if took > tc.within {
				t.Fatalf("answered after %s, want within %s", took, tc.within)
			}
			t.Logf("503 after %s", took.Round(time.Millisecond))
		})
	}
}
