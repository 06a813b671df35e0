package dataapitest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type wireErr struct {
	ID          string `json:"id"`
	Family      string `json:"family"`
	Scope       string `json:"scope"`
	ErrorCode   string `json:"errorCode"`
	Title       string `json:"title"`
	Message     string `json:"message"`
	DocumentIDs []any  `json:"documentIds"`
}

type envelope struct {
	HTTP   int
	Raw    string
	Data   map[string]any `json:"data"`
	Status map[string]any `json:"status"`
	Errors []wireErr      `json:"errors"`
}

func (e envelope) code() string {
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].ErrorCode
}

const ks = "default_keyspace"

// call POSTs body (a JSON string or a value to marshal) to path with the right headers
// unless hdr overrides them ("" deletes a header).
func call(t *testing.T, s *Server, path string, body any, hdr ...string) envelope {
	t.Helper()
	env, err := callCtx(context.Background(), s, http.MethodPost, path, body, hdr...)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return env
}

func callCtx(ctx context.Context, s *Server, method, path string, body any, hdr ...string) (envelope, error) {
	var b []byte
	switch x := body.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		var err error
		if b, err = json.Marshal(body); err != nil {
			return envelope{}, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL()+path, bytes.NewReader(b))
	if err != nil {
		return envelope{}, err
	}
	req.Header.Set("Token", s.Token())
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return envelope{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return envelope{}, err
	}
	env := envelope{HTTP: resp.StatusCode, Raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &env); err != nil {
			return env, fmt.Errorf("decode %q: %w", raw, err)
		}
	}
	return env, nil
}

func collPath(c string) string { return "/api/json/v1/" + ks + "/" + c }

const ksPath = "/api/json/v1/" + ks

// obj is shorthand for a JSON object literal in tests.
type obj = map[string]any

func newServer(t *testing.T, cfg Config, colls ...string) *Server {
	t.Helper()
	s := New(cfg)
	t.Cleanup(s.Close)
	for _, c := range colls {
		if env := call(t, s, ksPath, obj{"createCollection": obj{"name": c}}); env.code() != "" {
			t.Fatalf("create %s: %s", c, env.Raw)
		}
	}
	return s
}

func mustOK(t *testing.T, env envelope) envelope {
	t.Helper()
	if env.HTTP != http.StatusOK || len(env.Errors) > 0 {
		t.Fatalf("want success, got HTTP %d %s", env.HTTP, env.Raw)
	}
	return env
}

func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

func insertN(t *testing.T, s *Server, coll string, n int, mk func(i int) obj) {
	t.Helper()
	for start := 0; start < n; start += 100 {
		var docs []any
		for i := start; i < min(start+100, n); i++ {
			docs = append(docs, mk(i))
		}
		mustOK(t, call(t, s, collPath(coll), obj{"insertMany": obj{"documents": docs}}))
	}
}

func noViolations(t *testing.T, s *Server) {
	t.Helper()
	if v := s.Stats().Violations; len(v) > 0 {
		t.Fatalf("unexpected violations: %q", v)
	}
}

func mustUnmarshal(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("test JSON %q: %v", s, err)
	}
}
