package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/sluice-dev/sluice/pipeline/commands"
	"github.com/sluice-dev/sluice/pipeline/settle"
	"github.com/sluice-dev/sluice/pipeline/sign"
	"github.com/sluice-dev/sluice/sinks/graph"
	"github.com/sluice-dev/sluice/sinks/reqstore"
	"github.com/sluice-dev/sluice/sources/embedded"
	"github.com/sluice-dev/sluice/sources/embedded/embeddedtest"
	"github.com/sluice-dev/sluice/sources/httpapi"
	"github.com/sluice-dev/sluice/sources/httpapi/openapitest"
	sjs "github.com/sluice-dev/sluice/sources/jetstream"
)

// seedServer runs the API over the real command pipeline: an embedded nats-server, the
// SQLite requirement store and graph, a command client and a command worker. It returns the
// base URL and the server's stop (a graceful shutdown). mod, when set, changes the server's
// configuration.
func seedServer(t *testing.T, mod ...func(*httpapi.Config)) (string, func() error) {
	t.Helper()
	dir := t.TempDir()
	_, _, js := embeddedtest.Start(t, embedded.Config{DataDir: dir, LazySync: true})
	ctx := context.Background()
	cs, err := sjs.ProvisionCommands(ctx, js, sjs.ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store, err := reqstore.OpenSQLite(ctx, reqstore.SQLiteConfig{Path: filepath.Join(dir, "requirements.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	g, err := graph.Open(ctx, filepath.Join(dir, "graph.db"), graph.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close() })
	key, err := sign.NewKey("httpapi-seed-tests-command-key-0123456789")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := commands.NewClient(commands.ClientConfig{JS: js, Streams: cs, Store: store, Graph: g, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	w, err := commands.NewWorker(commands.WorkerConfig{JS: js, Streams: cs, Store: store, Graph: g, Key: key,
		Retry: settle.RetryPolicy{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cfg := httpapi.Config{Tokens: testTokens(), Requirements: cl, MaxFeedsPerToken: 8}
	for _, m := range mod {
		m(&cfg)
	}
	s := newServer(t, cfg)
	stop := run(t, s)
	return "http://" + s.Addr(), stop
}

// seedBody is a RequirementCreate body (the Python submission body) titled title.
func seedBody(title string) string {
	return `{"title":"` + title + `","version":"1.0.0","description":"Dice roller requirements",
	 "requirements":{"functional":[{"id":"DR-001","title":"Roll","description":"Roll 3d6","priority":"high"}],"non_functional":[]},
	 "stakeholders":[{"name":"GM","role":"Owner","involvement":"primary"}],"author":"rules-team"}`
}

// seedCall sends one request and returns the status, the headers and the body.
func seedCall(t *testing.T, c *http.Client, method, url, token, body string) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// seedList is GET /requirements/ decoded, with X-Total-Count.
func seedList(t *testing.T, c *http.Client, base, query string) ([]map[string]any, int) {
	t.Helper()
	code, h, b := seedCall(t, c, "GET", base+"/requirements/"+query, readTok, "")
	if code != 200 {
		t.Fatalf("GET /requirements/%s: %d %s", query, code, b)
	}
	var list []map[string]any
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("GET /requirements/: %v in %s", err, b)
	}
	n, err := strconv.Atoi(h.Get("X-Total-Count"))
	if err != nil {
		t.Fatalf("X-Total-Count %q: %v", h.Get("X-Total-Count"), err)
	}
	return list, n
}

func TestSeedCreateAndList(t *testing.T) {
	base, _ := seedServer(t)
	c := client(t)
	code, _, b := seedCall(t, c, "POST", base+"/requirements/", adminTok, seedBody("Dice Roller"))
	if code != 200 {
		t.Fatalf("POST /requirements/: %d %s", code, b)
	}
	var created map[string]any
	if err := json.Unmarshal(b, &created); err != nil {
		t.Fatal(err)
	}
	id, ok := created["id"].(float64)
	if !ok || id <= 0 || created["title"] != "Dice Roller" || created["archived"] != false {
		t.Fatalf("created = %s; want id, title and archived:false", b)
	}
	md, _ := created["metadata"].(map[string]any)
	if md["version_id"] != id || md["author"] != "operator" {
		t.Errorf("metadata = %v; want version_id %v and the token's name as author", md, id)
	}

	doc, err := openapitest.Load(httpapi.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Check("POST /requirements/", code, "application/json", b); err != nil {
		t.Error(err)
	}
	code, _, lb := seedCall(t, c, "GET", base+"/requirements/", readTok, "")
	if err := doc.Check("GET /requirements/", code, "application/json", lb); err != nil {
		t.Error(err)
	}
	code, _, eb := seedCall(t, c, "GET", base+"/requirements/?limit=0", readTok, "")
	if err := doc.Check("GET /requirements/", code, "application/json", eb); err != nil {
		t.Error(err)
	}

	list, total := seedList(t, c, base, "")
	if total != 1 || len(list) != 1 || list[0]["id"] != id || list[0]["title"] != "Dice Roller" {
		t.Fatalf("list = %v (total %d); want the created requirement", list, total)
	}
	// The stored one reads back the same through /v1.
	code, _, b = seedCall(t, c, "GET", base+"/v1/requirements/"+strconv.FormatInt(int64(id), 10), readTok, "")
	if code != 200 || !strings.Contains(string(b), `"Dice Roller"`) {
		t.Errorf("GET /v1/requirements/{id}: %d %s", code, b)
	}

	for _, tc := range []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"not JSON", "POST", "/requirements/", adminTok, `{"title":`, 422},
		{"empty body", "POST", "/requirements/", adminTok, ``, 422},
		{"schema refuses", "POST", "/requirements/", adminTok, `{"title":"T","version":"one","description":"d","requirements":{"functional":[],"non_functional":[]}}`, 422},
		{"read token cannot create", "POST", "/requirements/", readTok, seedBody("X"), 403},
		{"no token", "GET", "/requirements/", "", "", 401},
		{"limit 0", "GET", "/requirements/?limit=0", readTok, "", 422},
		{"limit 1001", "GET", "/requirements/?limit=1001", readTok, "", 422},
		{"limit not a number", "GET", "/requirements/?limit=x", readTok, "", 422},
		{"offset -1", "GET", "/requirements/?offset=-1", readTok, "", 422},
		{"below the route", "GET", "/requirements/123", readTok, "", 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, b := seedCall(t, c, tc.method, base+tc.path, tc.token, tc.body)
			if code != tc.want {
				t.Fatalf("%d %s, want %d", code, b, tc.want)
			}
			if code == 422 || code == 404 {
				var d struct{ Detail string }
				if json.Unmarshal(b, &d) != nil || d.Detail == "" {
					t.Errorf("body %s is not FastAPI's {\"detail\": …}", b)
				}
			}
		})
	}
}

// Fifty creates at once are all applied and all listed, each with its own id; the pages and
// X-Total-Count agree.
func TestSeedConcurrentCreates(t *testing.T) {
	base, _ := seedServer(t)
	c := client(t)
	const n = 50
	ids := make([]float64, n)
	errs := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", base+"/requirements/", strings.NewReader(seedBody(fmt.Sprintf("Req %02d", i))))
			req.Header.Set("Authorization", "Bearer "+adminTok)
			resp, err := c.Do(req)
			if err != nil {
				errs[i] = err.Error()
				return
			}
			defer resp.Body.Close()
			var m map[string]any
			if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&m) != nil {
				errs[i] = fmt.Sprintf("status %d", resp.StatusCode)
				return
			}
			ids[i], _ = m["id"].(float64)
		})
	}
	wg.Wait()
	seen := map[float64]bool{}
	for i := range n {
		if errs[i] != "" || ids[i] <= 0 || seen[ids[i]] {
			t.Fatalf("create %d: %q, id %v (duplicate: %v)", i, errs[i], ids[i], seen[ids[i]])
		}
		seen[ids[i]] = true
	}
	all, total := seedList(t, c, base, "?limit=1000")
	if total != n || len(all) != n {
		t.Fatalf("listed %d, total %d; want %d", len(all), total, n)
	}
	for _, r := range all {
		if !seen[r["id"].(float64)] {
			t.Errorf("listed id %v was not created", r["id"])
		}
	}
	// Pages: newest first, offset and limit cut the same list; total is the whole count.
	p1, t1 := seedList(t, c, base, "?limit=20&offset=0")
	p3, t3 := seedList(t, c, base, "?limit=20&offset=40")
	past, tp := seedList(t, c, base, "?offset=50")
	if len(p1) != 20 || len(p3) != 10 || len(past) != 0 || t1 != n || t3 != n || tp != n {
		t.Fatalf("pages of %d, %d, %d (totals %d %d %d); want 20, 10, 0 of %d", len(p1), len(p3), len(past), t1, t3, tp, n)
	}
	if p1[0]["id"] != all[0]["id"] || p3[9]["id"] != all[n-1]["id"] {
		t.Errorf("pages do not cut the list in order")
	}
	if all[0]["id"].(float64) < all[n-1]["id"].(float64) {
		t.Errorf("list is not newest first")
	}
}

// wsMsg is a message of /ws/requirements.
type wsMsg struct {
	Type   string           `json:"type"`
	Data   []map[string]any `json:"data"`
	Detail string           `json:"detail"`
}

// ask sends one message and reads one answer.
func ask(t *testing.T, c *websocket.Conn, msg string) wsMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read answer to %s: %v", msg, err)
	}
	var m wsMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	// requirements_data always carries a "data" list, [] when nothing matched (a client
	// written from the seed reads msg["data"]); an error carries none.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	data, has := raw["data"]
	switch {
	case m.Type == "requirements_data" && (!has || data[0] != '['):
		t.Errorf("answer to %s: %s; want a \"data\" list", msg, b)
	case m.Type == "error" && has:
		t.Errorf("error answer to %s carries data: %s", msg, b)
	}
	return m
}

func dialWS(t *testing.T, base string, opts *websocket.DialOptions) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	opts.HTTPClient = &http.Client{Transport: tr}
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws/requirements", opts)
	if c != nil {
		t.Cleanup(func() { _ = c.CloseNow() })
	}
	return c, resp, err
}

func TestSeedWebSocket(t *testing.T) {
	base, _ := seedServer(t)
	c := client(t)
	var ids []float64
	for _, title := range []string{"Alpha", "Beta", "Gamma"} {
		code, _, b := seedCall(t, c, "POST", base+"/requirements/", adminTok, seedBody(title))
		if code != 200 {
			t.Fatalf("POST: %d %s", code, b)
		}
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		ids = append(ids, m["id"].(float64))
	}

	t.Run("seed client, header token, many requests", func(t *testing.T) {
		ws, _, err := dialWS(t, base, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + readTok}}})
		if err != nil {
			t.Fatal(err)
		}
		// As the seed's snippet: send get_requirements, read requirements_data.
		got := ask(t, ws, `{"type": "get_requirements", "filter": {"archived": {"$ne": true}}}`)
		if got.Type != "requirements_data" || len(got.Data) != 3 {
			t.Fatalf("answer %+v; want requirements_data with 3", got)
		}
		for _, tc := range []struct {
			filter string
			want   []string
		}{
			{`{}`, []string{"Gamma", "Beta", "Alpha"}},
			{`{"title": "Beta"}`, []string{"Beta"}},
			{`{"title": {"$ne": "Beta"}}`, []string{"Gamma", "Alpha"}},
			{fmt.Sprintf(`{"id": %d}`, int64(ids[0])), []string{"Alpha"}},
			{fmt.Sprintf(`{"id": {"$ne": %d}, "author": "operator"}`, int64(ids[0])), []string{"Gamma", "Beta"}},
			{`{"archived": true}`, nil},
			{`{"id": 1}`, nil},
		} {
			got := ask(t, ws, `{"type":"get_requirements","filter":`+tc.filter+`}`)
			var titles []string
			for _, d := range got.Data {
				titles = append(titles, d["title"].(string))
			}
			if got.Type != "requirements_data" || strings.Join(titles, ",") != strings.Join(tc.want, ",") {
				t.Errorf("filter %s: %+v; want %v", tc.filter, got, tc.want)
			}
		}
	})

	t.Run("bad messages answer error and the socket stays usable", func(t *testing.T) {
		ws, _, err := dialWS(t, base, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + readTok}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range []string{
			`not json`,
			`{"type":"delete_requirements"}`,
			`{"type":"get_requirements","filter":{"archived":{"$gt":1}}}`,
			`{"type":"get_requirements","filter":{"secret_field":1}}`,
			`{"type":"get_requirements","filter":{"id":"seven"}}`,
			`{"type":"get_requirements","filter":[1]}`,
		} {
			if got := ask(t, ws, msg); got.Type != "error" || got.Detail == "" {
				t.Errorf("%s: %+v; want an error with detail", msg, got)
			}
		}
		if got := ask(t, ws, `{"type":"get_requirements"}`); got.Type != "requirements_data" || len(got.Data) != 3 {
			t.Errorf("after the errors: %+v; want requirements_data with 3", got)
		}
	})

	t.Run("token as subprotocol", func(t *testing.T) {
		ws, _, err := dialWS(t, base, &websocket.DialOptions{Subprotocols: []string{"bearer", readTok}})
		if err != nil {
			t.Fatal(err)
		}
		if ws.Subprotocol() != "bearer" {
			t.Errorf("selected subprotocol %q, want bearer", ws.Subprotocol())
		}
		if got := ask(t, ws, `{"type":"get_requirements","filter":{}}`); got.Type != "requirements_data" || len(got.Data) != 3 {
			t.Errorf("%+v", got)
		}
	})

	t.Run("refused before the upgrade", func(t *testing.T) {
		for name, opts := range map[string]*websocket.DialOptions{
			"no token":          {},
			"wrong token":       {HTTPHeader: http.Header{"Authorization": {"Bearer nope-nope-nope-nope"}}},
			"wrong subprotocol": {Subprotocols: []string{"bearer", "nope-nope-nope-nope"}},
		} {
			_, resp, err := dialWS(t, base, opts)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				code := 0
				if resp != nil {
					code = resp.StatusCode
				}
				t.Errorf("%s: err %v, status %d; want 401", name, err, code)
			}
		}
	})
}

// A socket is bounded three ways: requests per token (the feeds rate: an error message, the
// socket stays open), sockets per token (the feeds cap: 429 before the upgrade) and the size
// of one message (the socket closes with 1009).
func TestSeedWebSocketLimits(t *testing.T) {
	base, _ := seedServer(t, func(c *httpapi.Config) {
		off := httpapi.Rate{PerSecond: -1}
		c.RateLimits = httpapi.RateLimits{Uploads: off, Graph: off, Replay: off, Feeds: httpapi.Rate{PerSecond: 0.01, Burst: 5}}
		c.MaxFeedsPerToken = 2
	})
	auth := func() *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + readTok}}}
	}
	ws, _, err := dialWS(t, base, auth()) // takes 1 of the burst of 5
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if got := ask(t, ws, `{"type":"get_requirements","filter":{}}`); got.Type != "requirements_data" {
			t.Fatalf("request %d: %+v", i, got)
		}
	}
	got := ask(t, ws, `{"type":"get_requirements","filter":{}}`)
	if got.Type != "error" || !strings.Contains(got.Detail, "too many requests") {
		t.Fatalf("over the rate: %+v; want an error", got)
	}
	if got := ask(t, ws, `{"type":"get_requirements","filter":{}}`); got.Type != "error" {
		t.Fatalf("still over the rate: %+v; the socket must stay open and answer", got)
	}

	// Sockets per token: the writer token has its own slots and bucket.
	wauth := func() *websocket.DialOptions {
		return &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + writeTok}}}
	}
	if _, _, err := dialWS(t, base, wauth()); err != nil {
		t.Fatal(err)
	}
	w2, _, err := dialWS(t, base, wauth())
	if err != nil {
		t.Fatal(err)
	}
	if _, resp, err := dialWS(t, base, wauth()); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third socket of a token: %v; want 429", err)
	}

	// One message over the bound closes that socket with 1009.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	big := `{"type":"get_requirements","filter":{"title":"` + strings.Repeat("x", 70<<10) + `"}}`
	_ = w2.Write(ctx, websocket.MessageText, []byte(big))
	if _, _, err := w2.Read(ctx); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Fatalf("after a too-large message: %v; want close 1009", err)
	}
}

// A socket open when the server shuts down is closed with 1001 (going away), and the
// handler's goroutines end (goleak checks them at the end of the package).
func TestSeedWebSocketShutdown(t *testing.T) {
	base, stop := seedServer(t)
	ws, _, err := dialWS(t, base, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + readTok}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := ask(t, ws, `{"type":"get_requirements","filter":{}}`); got.Type != "requirements_data" {
		t.Fatalf("%+v", got)
	}
	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := ws.Read(ctx)
		errc <- err
	}()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := <-errc; websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Fatalf("read after shutdown: %v; want close 1001", err)
	}
}
