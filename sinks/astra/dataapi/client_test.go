package dataapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/pipeline/fault"
	"github.com/sluice-dev/sluice/pipeline/secret"
	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
)

const testToken = "AstraCS:unit-secret-0123456789"

// scripted is an httptest server that answers each request with the next reply of a
// script (the last one repeats) and records what it received.
type scripted struct {
	srv *httptest.Server

	seen chan struct{} // one value per request received (buffered; extra ones dropped)

	mu      sync.Mutex
	replies []reply
	got     []recorded // guarded by mu
}

type reply struct {
	status  int
	body    string
	headers map[string]string
}

type recorded struct {
	path    string
	headers http.Header
	body    map[string]json.RawMessage
}

func newScripted(t *testing.T, replies ...reply) *scripted {
	t.Helper()
	s := &scripted{replies: replies, seen: make(chan struct{}, 1000)}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var body map[string]json.RawMessage
		_ = json.Unmarshal(data, &body)
		s.mu.Lock()
		s.got = append(s.got, recorded{path: r.URL.Path, headers: r.Header.Clone(), body: body})
		rp := s.replies[0]
		if len(s.replies) > 1 {
			s.replies = s.replies[1:]
		}
		s.mu.Unlock()
		select {
		case s.seen <- struct{}{}:
		default:
		}
		for k, v := range rp.headers {
			w.Header().Set(k, v)
		}
		if rp.status == 0 {
			rp.status = http.StatusOK
		}
		w.WriteHeader(rp.status)
		_, _ = io.WriteString(w, rp.body)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *scripted) requests() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.got...)
}

// newTestClient returns a client for url with tiny backoffs, logging into buf (when not
// nil).
func newTestClient(t testing.TB, url string, buf *bytes.Buffer, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Endpoint: url, Token: testToken,
		BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
		RequestTimeout: 5 * time.Second,
	}
	if buf != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(&syncWriter{w: buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// syncWriter serialises writes of concurrent log records into one buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"minimal", Config{Endpoint: "https://db-region.apps.astra.datastax.com", Token: "t"}, nil},
		{"local http", Config{Endpoint: "http://localhost:8181", Token: "t", APIPath: "/v1"}, nil},
		{"missing both", Config{}, []string{"Endpoint is required", "Token is required"}},
		{"bad scheme", Config{Endpoint: "ftp://x", Token: "t"}, []string{"http:// or https://"}},
		{"user info", Config{Endpoint: "https://u:p@x", Token: "t"}, []string{"user information"}},
		{"bad keyspace", Config{Endpoint: "https://x", Token: "t", Keyspace: "a-b"}, []string{"Keyspace"}},
		{"negatives", Config{Endpoint: "https://x", Token: "t", MaxConns: -1, MaxAttempts: -2, RequestTimeout: -1},
			[]string{"MaxConns", "MaxAttempts", "RequestTimeout"}},
		{"factor below one", Config{Endpoint: "https://x", Token: "t", BackoffFactor: 0.5}, []string{"BackoffFactor"}},
		{"token with newline", Config{Endpoint: "https://x", Token: "a\nb"}, []string{"line breaks"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want errors %q", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
			if tt.cfg.Token != "" && strings.Contains(err.Error(), string(tt.cfg.Token)) && len(tt.cfg.Token) > 2 {
				t.Errorf("Validate() leaks the token: %v", err)
			}
		})
	}
}

func TestConfigNeverPrintsToken(t *testing.T) {
	cfg := Config{Endpoint: "https://x", Token: testToken, Keyspace: "ks"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "astra", cfg)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "astra", cfg)
	for _, s := range []string{
		cfg.String(), fmt.Sprint(cfg), fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg),
		fmt.Sprintf("%v", &cfg), buf.String(),
	} {
		if strings.Contains(s, testToken) {
			t.Fatalf("token printed: %s", s)
		}
		if !strings.Contains(s, "REDACTED") {
			t.Fatalf("output does not say the token is redacted: %s", s)
		}
	}
}

func TestAPIErrorRetryable(t *testing.T) {
	retryable := []string{"TIMEOUT_WRITING_DATA", "TIMEOUT_READING_DATA", "UNAVAILABLE_DATABASE",
		"FAILED_WRITE_REQUEST", "FAILED_READ_REQUEST", "FAILED_COMPARE_AND_SET", "FAILED_CONCURRENT_OPERATIONS",
		"FAILED_TO_CONNECT_TO_DATABASE", "FAILED_TO_READ_METADATA", "COUNT_READ_FAILED", "FAILED_TRUNCATION",
		"UNEXPECTED_DRIVER_ERROR", "UNEXPECTED_SERVER_ERROR", "INTERNAL_SERVER_ERROR"}
	tests := []struct {
		name      string
		err       APIError
		retryable bool
		class     fault.Class
	}{
		{"duplicate", APIError{Code: CodeDocumentAlreadyExists, Family: "REQUEST"}, false, fault.Rejected},
		{"limit", APIError{Code: CodeShredDocLimitViolation}, false, fault.Limit},
		{"unknown collection", APIError{Code: CodeUnknownCollection}, false, fault.Rejected},
		{"unknown keyspace request", APIError{Code: CodeUnknownKeyspace, Family: "REQUEST"}, false, fault.Rejected},
		{"unknown keyspace server", APIError{Code: CodeUnknownKeyspace, Family: "SERVER"}, true, fault.Transient},
		{"missing token", APIError{Code: CodeMissingToken, HTTPStatus: 401}, false, fault.Auth},
		{"bad token", APIError{Code: CodeUnauthenticated, HTTPStatus: 401}, false, fault.Auth},
		{"no permission", APIError{Code: CodeUnauthorized, HTTPStatus: 401}, false, fault.Auth},
		{"content type", APIError{Code: "UNSUPPORTED_CONTENT_TYPE", HTTPStatus: 415}, false, fault.Rejected},
	}
	for _, code := range retryable {
		tests = append(tests, struct {
			name      string
			err       APIError
			retryable bool
			class     fault.Class
		}{code, APIError{Code: code, Family: "SERVER"}, true, fault.Transient})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Retryable(); got != tt.retryable {
				t.Errorf("Retryable() = %v, want %v", got, tt.retryable)
			}
			err := tt.err.classify()
			if got := fault.ClassOf(err); got != tt.class {
				t.Errorf("class = %q, want %q", got, tt.class)
			}
			if fault.IsPermanent(err) == tt.retryable {
				t.Errorf("IsPermanent = %v with retryable %v", fault.IsPermanent(err), tt.retryable)
			}
			var ae *APIError
			if !errors.As(err, &ae) || ae.Code != tt.err.Code {
				t.Errorf("classified error does not wrap the *APIError: %v", err)
			}
		})
	}
}

const okInsert = `{"status":{"documentResponses":[{"_id":"a","status":"OK"}]}}`

func TestClientRetries(t *testing.T) {
	timeoutBody := `{"errors":[{"family":"SERVER","scope":"DATABASE","errorCode":"TIMEOUT_WRITING_DATA","message":"timed out"}]}`
	tests := []struct {
		name      string
		replies   []reply
		attempts  int // requests the server must see
		wantErr   bool
		permanent bool
		class     fault.Class
	}{
		{"ok", []reply{{body: okInsert}}, 1, false, false, ""},
		{"429 then ok", []reply{{status: 429, body: "slow down", headers: map[string]string{"Retry-After": "0"}}, {body: okInsert}}, 2, false, false, ""},
		{"503 html then ok", []reply{{status: 503, body: "<html>bad gateway</html>"}, {body: okInsert}}, 2, false, false, ""},
		{"504 twice then ok", []reply{{status: 504}, {status: 504}, {body: okInsert}}, 3, false, false, ""},
		{"retryable code then ok", []reply{{body: timeoutBody}, {body: okInsert}}, 2, false, false, ""},
		{"503 forever", []reply{{status: 503}}, 3, true, false, fault.Transient},
		{"retryable code forever", []reply{{body: timeoutBody}}, 3, true, false, fault.Transient},
		{"401 envelope", []reply{{status: 401, body: `{"errors":[{"family":"REQUEST","scope":"SECURITY","errorCode":"UNAUTHENTICATED_REQUEST","message":"bad token"}]}`}}, 1, true, true, fault.Auth},
		{"401 bare", []reply{{status: 401}}, 1, true, true, fault.Auth},
		{"403 bare", []reply{{status: 403}}, 1, true, true, fault.Auth},
		{"404", []reply{{status: 404, body: "not found"}}, 1, true, true, fault.Rejected},
		{"whole-request validation", []reply{{body: `{"errors":[{"family":"REQUEST","scope":"","errorCode":"COMMAND_FIELD_VALUE_INVALID","message":"too many"}]}`}}, 1, true, true, fault.Rejected},
		{"200 garbage then ok", []reply{{body: "{not json"}, {body: okInsert}}, 2, false, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newScripted(t, tt.replies...)
			var logs bytes.Buffer
			c := newTestClient(t, srv.srv.URL, &logs)
			_, err := c.InsertMany(t.Context(), "coll", []json.RawMessage{json.RawMessage(`{"_id":"a"}`)})
			if got := len(srv.requests()); got != tt.attempts {
				t.Errorf("server saw %d requests, want %d", got, tt.attempts)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("InsertMany error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if fault.IsPermanent(err) != tt.permanent {
					t.Errorf("IsPermanent(%v) = %v, want %v", err, fault.IsPermanent(err), tt.permanent)
				}
				if got := fault.ClassOf(err); got != tt.class {
					t.Errorf("ClassOf(%v) = %q, want %q", err, got, tt.class)
				}
				if strings.Contains(err.Error(), testToken) {
					t.Errorf("error leaks the token: %v", err)
				}
			}
			if strings.Contains(logs.String(), testToken) {
				t.Errorf("logs leak the token: %s", logs.String())
			}
		})
	}
}

func TestClientRequestShape(t *testing.T) {
	srv := newScripted(t, reply{body: `{"status":{"ok":1}}`})
	c := newTestClient(t, srv.srv.URL+"/", nil, func(c *Config) { c.Keyspace = "ks1"; c.UserAgent = "sluice/test" })
	if err := c.CreateCollection(t.Context(), "chunks", CollectionOptions{IndexingDeny: []string{"embedding"}}); err != nil {
		t.Fatal(err)
	}
	got := srv.requests()
	if len(got) != 1 {
		t.Fatalf("%d requests", len(got))
	}
	r := got[0]
	if r.path != "/api/json/v1/ks1" {
		t.Errorf("path = %q", r.path)
	}
	for h, want := range map[string]string{"Token": testToken, "Content-Type": "application/json", "User-Agent": "sluice/test"} {
		if v := r.headers.Get(h); v != want {
			t.Errorf("header %s = %q, want %q", h, v, want)
		}
	}
	want := `{"name":"chunks","options":{"indexing":{"deny":["embedding"]}}}`
	if string(r.body["createCollection"]) != want {
		t.Errorf("body = %s, want %s", r.body["createCollection"], want)
	}
}

func TestClientRedactsEchoedToken(t *testing.T) {
	// A server (or proxy) that echoes the token in its error message must not get it into
	// our errors.
	srv := newScripted(t, reply{status: 401, body: `{"errors":[{"errorCode":"UNAUTHENTICATED_REQUEST","message":"token ` + testToken + ` is bad"}]}`})
	c := newTestClient(t, srv.srv.URL, nil)
	err := c.InsertOne(t.Context(), "coll", json.RawMessage(`{"_id":"a"}`))
	if err == nil || strings.Contains(err.Error(), testToken) {
		t.Fatalf("InsertOne error = %v, want an error without the token", err)
	}
	if fault.ClassOf(err) != fault.Auth || !fault.IsPermanent(err) {
		t.Fatalf("error %v is not permanent auth", err)
	}
}

func TestClientCancelledContextIsTransient(t *testing.T) {
	srv := newScripted(t, reply{status: 503})
	c := newTestClient(t, srv.srv.URL, nil, func(c *Config) { c.BaseBackoff = time.Hour; c.MaxBackoff = time.Hour })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.InsertMany(ctx, "coll", []json.RawMessage{json.RawMessage(`{"_id":"a"}`)})
		done <- err
	}()
	// Cancel while the client waits out its hour of backoff after the first 503.
	<-srv.seen
	cancel()
	err := <-done
	if err == nil || fault.IsPermanent(err) || !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want a transient error wrapping context.Canceled", err)
	}
}

func TestBackoff(t *testing.T) {
	c := newTestClient(t, "http://127.0.0.1:1", nil, func(c *Config) {
		c.BaseBackoff = 100 * time.Millisecond
		c.MaxBackoff = time.Second
	})
	tests := []struct {
		name       string
		attempt    int
		retryAfter time.Duration
		lo, hi     time.Duration
	}{
		{"first", 1, 0, 50 * time.Millisecond, 100 * time.Millisecond},
		{"second", 2, 0, 100 * time.Millisecond, 200 * time.Millisecond},
		{"capped", 10, 0, 500 * time.Millisecond, time.Second},
		{"retry-after wins", 1, 700 * time.Millisecond, 700 * time.Millisecond, 700 * time.Millisecond},
		{"retry-after capped", 1, time.Minute, time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 50 {
				if d := c.backoff(tt.attempt, tt.retryAfter); d < tt.lo || d > tt.hi {
					t.Fatalf("backoff(%d, %s) = %s, want in [%s, %s]", tt.attempt, tt.retryAfter, d, tt.lo, tt.hi)
				}
			}
		})
	}
}

func TestInsertManyFallbackWithoutDocumentResponses(t *testing.T) {
	// A server that ignores returnDocumentResponses answers with insertedIds in input order
	// and one error per failed document.
	srv := newScripted(t, reply{body: `{"status":{"insertedIds":["a","c"]},"errors":[` +
		`{"errorCode":"DOCUMENT_ALREADY_EXISTS","family":"REQUEST","scope":"DOCUMENT","message":"dup","documentIds":["b"]}]}`})
	c := newTestClient(t, srv.srv.URL, nil)
	out, err := c.InsertMany(t.Context(), "coll", []json.RawMessage{
		json.RawMessage(`{"_id":"a"}`), json.RawMessage(`{"_id":"b"}`), json.RawMessage(`{"_id":"c"}`)})
	if err != nil {
		t.Fatal(err)
	}
	var ae *APIError
	if out[0] != nil || out[2] != nil || !errors.As(out[1], &ae) || ae.Code != CodeDocumentAlreadyExists {
		t.Fatalf("outcomes = %v", out)
	}
}

func TestInsertManyRequestShapeAndInvalidDocument(t *testing.T) {
	srv := newScripted(t, reply{body: `{"status":{"documentResponses":[{"_id":"a","status":"OK"},{"_id":"b","status":"OK"}]}}`})
	c := newTestClient(t, srv.srv.URL+"/", nil, func(*Config) {})
	docs := []json.RawMessage{[]byte(`{"_id":"a","n":1}`), []byte(` {"_id":"b","s":"x\u00e9"} `)}
	out, err := c.InsertMany(t.Context(), "chunks", docs)
	if err != nil || len(out) != 2 || out[0] != nil || out[1] != nil {
		t.Fatalf("InsertMany = %v, %v", out, err)
	}
	got := srv.requests()
	if len(got) != 1 {
		t.Fatalf("%d requests", len(got))
	}
	var body struct {
		Documents []map[string]any `json:"documents"`
		Options   map[string]any   `json:"options"`
	}
	if err := json.Unmarshal(got[0].body["insertMany"], &body); err != nil {
		t.Fatalf("request body %s: %v", got[0].body["insertMany"], err)
	}
	if len(body.Documents) != 2 || body.Documents[1]["s"] != "xé" ||
		body.Options["ordered"] != false || body.Options["returnDocumentResponses"] != true {
		t.Fatalf("insertMany arguments = %+v", body)
	}

	// A document that is not one JSON value fails the call before anything is sent.
	_, err = c.InsertMany(t.Context(), "chunks", []json.RawMessage{[]byte(`{"_id":"c"}`), []byte(`{"_id":`)})
	if !fault.IsPermanent(err) || !strings.Contains(err.Error(), "document 1 is not valid JSON") {
		t.Fatalf("invalid document: err = %v, want a permanent error naming document 1", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Fatalf("%d requests after the invalid call, want still 1", n)
	}
}

// newDoubleClient returns a client of srv, a Data API double.
func newDoubleClient(t testing.TB, srv *dataapitest.Server) *Client {
	return newTestClient(t, srv.URL(), nil, func(c *Config) { c.Token = secret.String(srv.Token()) })
}
