package dataapitest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	insert := obj{"insertMany": obj{"documents": []any{obj{"_id": "x"}}}}
	tests := []struct {
		name        string
		fault       Fault
		wantHTTP    int
		wantCodes   []string
		wantJSON    bool
		wantErr     bool // transport error
		wantWritten bool
	}{
		{name: "429", fault: FaultHTTP429, wantHTTP: 429},
		{name: "503", fault: FaultHTTP503, wantHTTP: 503},
		{name: "504", fault: FaultHTTP504, wantHTTP: 504},
		{name: "retryable code", fault: FaultRetryableCode, wantHTTP: 200, wantJSON: true, wantCodes: []string{"TIMEOUT_WRITING_DATA", "UNAVAILABLE_DATABASE"}},
		{name: "unauthorized", fault: FaultUnauthorized, wantHTTP: 401, wantJSON: true, wantCodes: []string{"UNAUTHENTICATED_REQUEST"}},
		{name: "lost response", fault: FaultLostResponse, wantErr: true, wantWritten: true},
		{name: "timeout", fault: FaultTimeout, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, Config{}, "c")
			s.InjectNext(1, tc.fault)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			if tc.fault != FaultTimeout {
				ctx = context.Background()
			}
			env, err := callCtx(ctx, s, http.MethodPost, collPath("c"), insert)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("want a transport error, got HTTP %d %s", env.HTTP, env.Raw)
				}
				if tc.fault == FaultTimeout && !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("want deadline exceeded, got %v", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if env.HTTP != tc.wantHTTP {
					t.Fatalf("HTTP %d, want %d", env.HTTP, tc.wantHTTP)
				}
				isJSON := env.Raw != "" && env.Raw[0] == '{'
				if isJSON != tc.wantJSON {
					t.Fatalf("JSON body = %v, want %v: %q", isJSON, tc.wantJSON, env.Raw)
				}
				if tc.wantCodes != nil && !strings.Contains(strings.Join(tc.wantCodes, ","), env.code()) {
					t.Fatalf("code %q, want one of %v", env.code(), tc.wantCodes)
				}
				if tc.fault == FaultRetryableCode && (env.Errors[0].Family != "SERVER" || env.Errors[0].Scope != "DATABASE" || env.Status != nil) {
					t.Fatalf("retryable error shape: %s", env.Raw)
				}
			}
			if _, written := s.Documents(ks, "c")["x"]; written != tc.wantWritten {
				t.Fatalf("written = %v, want %v", written, tc.wantWritten)
			}
			st := s.Stats()
			if st.Faults[tc.fault] != 1 || len(st.Violations) != 0 {
				t.Fatalf("stats: faults %v violations %q", st.Faults, st.Violations)
			}
			// The fault was used up: the retry goes through.
			env = call(t, s, collPath("c"), insert)
			if tc.wantWritten {
				if env.code() != "DOCUMENT_ALREADY_EXISTS" {
					t.Fatalf("retry after a lost response: %s", env.Raw)
				}
			} else {
				mustOK(t, env)
			}
			noViolations(t, s)
		})
	}
}

func TestFaultFilterAndRate(t *testing.T) {
	s := newServer(t, Config{Seed: 7}, "c")
	s.SetCommandFilter("insertMany")
	s.InjectNext(2, FaultHTTP503)
	// Not filtered: no fault consumed.
	mustOK(t, call(t, s, collPath("c"), obj{"countDocuments": obj{"filter": obj{}}}))
	for i := range 2 {
		if env := call(t, s, collPath("c"), obj{"insertMany": obj{"documents": []any{obj{"_id": i}}}}); env.HTTP != 503 {
			t.Fatalf("request %d: HTTP %d", i, env.HTTP)
		}
	}
	mustOK(t, call(t, s, collPath("c"), obj{"insertMany": obj{"documents": []any{obj{"_id": 1}}}}))

	s.SetCommandFilter()
	s.SetFaultRate(1, FaultHTTP429)
	if env := call(t, s, collPath("c"), obj{"countDocuments": obj{}}); env.HTTP != 429 {
		t.Fatalf("rate 1: HTTP %d", env.HTTP)
	}
	s.SetFaultRate(0)
	mustOK(t, call(t, s, collPath("c"), obj{"countDocuments": obj{}}))

	// A seeded rate is reproducible.
	pattern := func() string {
		s2 := newServer(t, Config{Seed: 42}, "c")
		s2.SetFaultRate(0.5, FaultHTTP503)
		var b strings.Builder
		for range 40 {
			fmt.Fprint(&b, call(t, s2, collPath("c"), obj{"estimatedDocumentCount": obj{}}).HTTP/100)
		}
		return b.String()
	}
	p1, p2 := pattern(), pattern()
	if p1 != p2 || !strings.Contains(p1, "5") || !strings.Contains(p1, "2") {
		t.Fatalf("seeded patterns differ or are degenerate: %s vs %s", p1, p2)
	}
	if st := s.Stats(); st.Faults[FaultHTTP503] != 2 || st.Faults[FaultHTTP429] != 1 || st.Requests["insertMany"] != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConcurrency(t *testing.T) {
	s := newServer(t, Config{}, "c")
	const n = 50
	// Hold 50 requests at once, so MaxConcurrent must reach 50.
	s.testHeld = make(chan struct{}, n)
	s.InjectNext(n, FaultTimeout)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			_, err := callCtx(ctx, s, http.MethodPost, collPath("c"), obj{"insertOne": obj{"document": obj{"_id": i}}})
			errs <- err
		})
	}
	for range n {
		<-s.testHeld
	}
	if st := s.Stats(); st.InFlight != n {
		t.Fatalf("%d requests in flight, want %d", st.InFlight, n)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("held request ended with %v", err)
		}
	}
	if st := s.Stats(); st.MaxConcurrent != n || len(s.Documents(ks, "c")) != 0 {
		t.Fatalf("MaxConcurrent %d, documents %d", st.MaxConcurrent, len(s.Documents(ks, "c")))
	}

	// 50 concurrent writers, each inserting its own 20 documents.
	s.ResetStats()
	werrs := make(chan error, n)
	for w := range n {
		wg.Go(func() {
			docs := make([]any, 20)
			for i := range docs {
				docs[i] = obj{"_id": fmt.Sprintf("w%d-%d", w, i)}
			}
			env, err := callCtx(context.Background(), s, http.MethodPost, collPath("c"), obj{"insertMany": obj{"documents": docs}})
			if err == nil && env.code() != "" {
				err = fmt.Errorf("insertMany: %s", env.Raw)
			}
			werrs <- err
		})
	}
	wg.Wait()
	close(werrs)
	for err := range werrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if got := len(s.Documents(ks, "c")); got != n*20 {
		t.Fatalf("stored %d documents, want %d", got, n*20)
	}
	if st.Requests["insertMany"] != n || st.InFlight != 0 || st.MaxConcurrent < 1 || len(st.Violations) != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLatency(t *testing.T) {
	s := newServer(t, Config{}, "c")
	s.SetLatency(20*time.Millisecond, 5*time.Millisecond)
	start := time.Now()
	mustOK(t, call(t, s, collPath("c"), obj{"insertMany": obj{"documents": []any{obj{"_id": 1}, obj{"_id": 2}}}}))
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("request took %v, want at least 30ms", d)
	}
	s.SetLatency(0, 0)
}
