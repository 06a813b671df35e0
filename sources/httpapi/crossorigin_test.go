package httpapi_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/pipeline/instrument/instrumenttest"
	"github.com/sluice-dev/sluice/sources/httpapi"
)

// browserRequest is a request as a browser sends it: hdr holds Sec-Fetch-Site and Origin as
// given (nothing when empty), host is the Host the browser addressed.
func browserRequest(method, target, host, token, body string, hdr map[string]string) *http.Request {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// Issue 18: a page on another site must not change state through the API a browser can
// reach. A state-changing request a browser marks cross-origin is refused with 403 before
// anything runs, counted as rejected; same-origin requests, non-browser clients and reads pass.
func TestCrossOriginRefused(t *testing.T) {
	const host = "127.0.0.1:8080"
	crossSite := map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}
	refused := []struct {
		name, method, target, body string
		hdr                        map[string]string
	}{
		{"purge cross-site", "DELETE", "/v1/dlq?error_class=rejected", "", crossSite},
		{"replay cross-site, text/plain", "POST", "/v1/dlq/replay", `{"ids":["SLUICE_CHUNKS-3"]}`,
			map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}},
		{"delete same-site", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", "", map[string]string{"Sec-Fetch-Site": "same-site"}},
		{"delete, Origin not Host, old browser", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", "", map[string]string{"Origin": "http://evil.example"}},
		{"purge, Origin on another port", "DELETE", "/v1/dlq?job=j", "", map[string]string{"Origin": "http://127.0.0.1:9999"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{}`), testEntry("SLUICE_CHUNKS-5", `{}`))
			h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake, Registry: reg}).Handler()
			rec := recorder(h, browserRequest(tc.method, tc.target, host, adminTok, tc.body, tc.hdr))
			p := decodeProblem(t, rec, http.StatusForbidden)
			if !strings.HasPrefix(p.Detail, "Cross-origin request refused: ") {
				t.Errorf("detail = %q, want it to start with Cross-origin request refused", p.Detail)
			}
			if calls := fake.Calls(); len(calls) != 0 {
				t.Errorf("a refused request reached the dead-letter store: %v", calls)
			}
			if len(fake.entries) != 2 {
				t.Errorf("%d dead letters left, want both", len(fake.entries))
			}
			if v, _ := instrumenttest.Value(t, reg, "sluice_http_rejected_total", map[string]string{"reason": "cross_origin"}); v != 1 {
				t.Errorf("sluice_http_rejected_total{reason=cross_origin} = %v, want 1", v)
			}
		})
	}

	allowed := []struct {
		name, method, target string
		hdr                  map[string]string
		want                 int
	}{
		{"same-origin", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://" + host}, http.StatusNoContent},
		{"typed by the user", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", map[string]string{"Sec-Fetch-Site": "none"}, http.StatusNoContent},
		{"Origin is Host, old browser", "DELETE", "/v1/dlq/SLUICE_CHUNKS-3", map[string]string{"Origin": "http://" + host}, http.StatusNoContent},
		{"not a browser (curl, CLI, Python client)", "DELETE", "/v1/dlq?error_class=rejected", nil, http.StatusOK},
		{"read cross-site", "GET", "/v1/dlq", crossSite, http.StatusOK},
		{"read cross-site, one entry", "GET", "/v1/dlq/SLUICE_CHUNKS-3", crossSite, http.StatusOK},
	}
	for _, tc := range allowed {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{}`))
			h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake}).Handler()
			rec := recorder(h, browserRequest(tc.method, tc.target, host, adminTok, "", tc.hdr))
			if rec.Code != tc.want {
				t.Fatalf("%s %s = %d %s, want %d", tc.method, tc.target, rec.Code, rec.Body, tc.want)
			}
			if len(fake.Calls()) == 0 {
				t.Error("the request did not reach the dead-letter store")
			}
		})
	}
}

// The attack the check exists for: without tokens the API serves loopback without
// authentication, and a page on any site can make the operator's browser POST a "simple"
// request (text/plain, no preflight) to 127.0.0.1. Over a real connection, it creates no job;
// the same request from a non-browser client does.
func TestCrossOriginOpenModeCreatesNoJob(t *testing.T) {
	jobs := &fakeJobs{}
	s := newServer(t, httpapi.Config{Jobs: jobs})
	run(t, s)
	c := client(t)
	post := func(hdr map[string]string) (int, string) {
		req, err := http.NewRequest("POST", "http://"+s.Addr()+"/v1/jobs?env=dev", strings.NewReader("{\"chunk_id\":\"a\",\"content\":\"x\"}\n"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}

	for _, hdr := range []map[string]string{
		{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		{"Origin": "https://evil.example"}, // a browser without Sec-Fetch-Site
		{"Origin": "null"},                 // a sandboxed page
	} {
		if code, body := post(hdr); code != http.StatusForbidden || !strings.Contains(body, "Cross-origin request refused") {
			t.Errorf("POST /v1/jobs with %v = %d %s, want 403 Cross-origin request refused", hdr, code, body)
		}
	}
	if calls := jobs.Calls(); len(calls) != 0 {
		t.Fatalf("a cross-origin request created a job: %+v", calls)
	}
	if code, body := post(nil); code != http.StatusAccepted {
		t.Fatalf("POST /v1/jobs from a non-browser client = %d %s, want 202", code, body)
	}
	if calls := jobs.Calls(); len(calls) != 1 {
		t.Fatalf("job submissions = %+v, want the non-browser one", calls)
	}
}

// An origin listed in TrustedOrigins (SLUICE_API_TRUSTED_ORIGINS) may change state across
// origins; others still may not, and a malformed origin fails New.
func TestCrossOriginTrustedOrigins(t *testing.T) {
	fake := newFakeDLQ(testEntry("SLUICE_CHUNKS-3", `{}`))
	h := newServer(t, httpapi.Config{Tokens: testTokens(), DeadLetters: fake, TrustedOrigins: []string{"https://console.example"}}).Handler()
	rec := recorder(h, browserRequest("DELETE", "/v1/dlq/SLUICE_CHUNKS-3", "sluice.internal:8080", adminTok, "",
		map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}))
	decodeProblem(t, rec, http.StatusForbidden)
	rec = recorder(h, browserRequest("DELETE", "/v1/dlq/SLUICE_CHUNKS-3", "sluice.internal:8080", adminTok, "",
		map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://console.example"}))
	if rec.Code != http.StatusNoContent {
		t.Fatalf("DELETE from a trusted origin = %d %s, want 204", rec.Code, rec.Body)
	}

	for _, bad := range []string{"console.example", "https://console.example/ui/", "https://"} {
		if _, err := httpapi.New(httpapi.Config{Addr: "127.0.0.1:0", Jobs: &fakeJobs{}, Chunks: &fakeChunks{}, TrustedOrigins: []string{bad}}); err == nil ||
			!strings.Contains(err.Error(), "TrustedOrigins[0]") {
			t.Errorf("New with trusted origin %q: err = %v, want a TrustedOrigins error", bad, err)
		}
	}
}
