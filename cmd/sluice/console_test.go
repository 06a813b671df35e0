package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/sluice-dev/sluice/sinks/astra/dataapitest"
	"github.com/sluice-dev/sluice/sources/httpapi/console"
)

// The operator console (/ui/), driven in a real Chromium (Debian's, installed by .ci/run) by
// chromedp, against `sluice serve` on the strict Data API double: an operator loads the
// adversarial fixture while AstraDB refuses every write, sees the job's rejections and dead
// letters, fixes the sink, replays after a dry run, watches the job complete and the dead-letter
// list empty, rolls the job back after its preview, and a read-only operator sees everything but
// can act on nothing. Each page is saved as a 1280×800 screenshot in the test's artifact
// directory (go test -artifacts keeps it; SLUICE_UPDATE_SCREENSHOTS=1 writes docs/console/).

// chromiumPath finds the browser: SLUICE_CHROMIUM, else Debian's chromium on PATH. Without one
// the test skips, except in CI, where .ci/run installs it and a skip would hide the console.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SLUICE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no Chromium: .ci/run installs Debian's chromium; set SLUICE_CHROMIUM to another")
	}
	t.Skip("no Chromium on this machine (apt-get install chromium, or set SLUICE_CHROMIUM)")
	return ""
}

// browser is one headless Chromium with what the test watches in it: every request the pages
// make, every uncaught exception and every console or CSP error.
type browser struct {
	t        *testing.T
	alloc    context.Context
	mu       sync.Mutex
	requests []string
	problems []string
	statuses map[string]int64 // URL → last HTTP status seen
	shots    string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
	)
	alloc, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	b := &browser{t: t, alloc: alloc, statuses: map[string]int64{}, shots: t.ArtifactDir()}
	if os.Getenv("SLUICE_UPDATE_SCREENSHOTS") != "" {
		b.shots = filepath.Join("..", "..", "docs", "console")
	}
	return b
}

// tab opens a new tab (a fresh session storage) whose events the browser records, at
// 1280×800. The first tab starts the browser.
func (b *browser) tab(parent context.Context) context.Context {
	b.t.Helper()
	if parent == nil {
		parent = b.alloc
	}
	ctx, cancel := chromedp.NewContext(parent, chromedp.WithListener(b.listen))
	b.t.Cleanup(cancel)
	// The first action starts the browser or opens the tab, which live as long as the context
	// of that call: no timeout on it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		b.t.Fatalf("start Chromium: %v", err)
	}
	return ctx
}

// listen records what the browser reports; it runs in the tab's read loop and only records.
func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	case *network.EventResponseReceived:
		b.statuses[ev.Response.URL] = ev.Response.Status
	case *runtime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+ev.ExceptionDetails.Text)
	case *cdplog.EventEntryAdded:
		// A refused request logs "Failed to load resource: … status of 4xx": expected here.
		if ev.Entry.Level == cdplog.EntryLevelError && !strings.Contains(ev.Entry.Text, "status of 4") {
			b.problems = append(b.problems, fmt.Sprintf("%s: %s", ev.Entry.Source, ev.Entry.Text))
		}
	}
}

func (b *browser) run(ctx context.Context, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(tctx, actions...); err != nil {
		b.t.Fatalf("browser: %v; problems seen: %v", err, b.seenProblems())
	}
}

// wait polls the JavaScript expression in the page until it is truthy.
func (b *browser) wait(ctx context.Context, what, expr string) {
	b.t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	if _, err := chromedp.Run(tctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(40*time.Second))); err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText + '\n' + document.querySelector('#status').innerText`))
		b.t.Fatalf("waiting for %s: %v\npage:\n%.3000s\nproblems: %v", what, err, text, b.seenProblems())
	}
}

// eval evaluates the JavaScript expression in the page and returns its value.
func eval[T any](b *browser, ctx context.Context, expr string) T {
	b.t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAsValue, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// shot saves the page as name.png at the viewport's size.
func (b *browser) shot(ctx context.Context, name string) {
	b.t.Helper()
	// Without the focus ring of the last key press.
	b.run(ctx, chromedp.Evaluate[chromedp.Void](`document.activeElement?.blur()`))
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatal(err)
	}
	if err := os.MkdirAll(b.shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browser) seenProblems() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.problems...)
}

func (b *browser) status(url string) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statuses[url]
}

// signIn opens the console in ctx and signs in with token.
func (b *browser) signIn(ctx context.Context, base, token string) {
	b.t.Helper()
	b.run(ctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.run(ctx, chromedp.SendKeys(chromedp.CSS("#token"), token), chromedp.Click(chromedp.CSS("#login button[type=submit]")))
	b.wait(ctx, "the jobs page", `document.querySelector('table[data-table=jobs]') !== null`)
}

func (b *browser) confirm(ctx context.Context) {
	b.t.Helper()
	b.wait(ctx, "an enabled confirm button", `(() => { const x = document.querySelector('#dialog-actions button[data-action=confirm]'); return x && !x.disabled })()`)
	b.run(ctx, chromedp.Click(chromedp.CSS(`#dialog-actions button[data-action=confirm]`)))
}

// hostileName is a file name that would run a script if a page rendered it as HTML.
const hostileName = `<img src=x onerror="document.title='pwned'">.json`

func TestConsoleInChromium(t *testing.T) {
	b := newBrowser(t)
	double := dataapitest.New(dataapitest.Config{})
	defer double.Close()
	s := startServer(t, "serve", []string{"SLUICE_LOG_LEVEL=warn",
		"ASTRA_DB_API_ENDPOINT=" + double.URL(), "ASTRA_DB_APPLICATION_TOKEN=" + double.Token()},
		"--data-dir", filepath.Join(t.TempDir(), "data"), "--tokens-file", tokensFile(t))
	base := s.base

	// The console's own answer: embedded, with its security headers.
	resp, err := http.Get(base + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != console.ContentSecurityPolicy {
		t.Fatalf("GET /ui/: %d, CSP %q", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}

	admin := b.tab(nil)
	// A wrong token is refused and stays out of the tab's storage.
	b.run(admin, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#token")))
	b.run(admin, chromedp.SendKeys(chromedp.CSS("#token"), "not-a-token"), chromedp.Click(chromedp.CSS("#login button[type=submit]")))
	b.wait(admin, "the refusal", `document.querySelector('#status').textContent.includes('refused') && sessionStorage.getItem('sluice.token') === null && document.querySelector('#token') !== null`)
	b.signIn(admin, base, adminTok)
	// Keyboard: on a freshly loaded page the first Tab reaches the skip link (the token stays
	// in the tab's session storage across the reload).
	b.run(admin, chromedp.Reload())
	b.wait(admin, "the jobs page", `document.querySelector('table[data-table=jobs]') !== null`)
	b.run(admin, chromedp.KeyEvent(kb.Tab))
	focused := eval[string](b, admin, `document.activeElement.textContent`)
	if focused != "Skip to content" {
		t.Fatalf("first Tab focused %q, want the skip link", focused)
	}

	// An earlier job, under a hostile file name, writes five of the fixture's chunks, which the
	// fixture's job rewrites.
	nasty, err := os.ReadFile("../../testdata/chunks/nasty_job_1757498642_0a06fa1bc2da_pass_a_chunks.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Chunks []map[string]any `json:"chunks"`
	}
	if err := json.Unmarshal(nasty, &file); err != nil {
		t.Fatal(err)
	}
	for _, c := range file.Chunks[:5] {
		c["content"] = "An earlier draft of " + c["id"].(string)
	}
	earlierBody, _ := json.Marshal(map[string]any{"chunks": file.Chunks[:5]})
	earlier := upload(t, base, "/v1/jobs?env=dev&file="+url.QueryEscape(hostileName), adminTok, "application/json", earlierBody)
	if j := waitDone(t, base, adminTok, earlier, 30*time.Second); j["state"] != "completed" {
		t.Fatalf("earlier job: %v", j)
	}

	// AstraDB refuses every command: each chunk of the job is dead-lettered (auth is permanent).
	double.SetFaultRate(1, dataapitest.FaultUnauthorized)
	id := upload(t, base, "/v1/jobs?env=dev&file=nasty.json", adminTok, "application/json", nasty)
	job := waitDone(t, base, adminTok, id, 60*time.Second)
	if num(job, "rejected") != 6 || num(job, "dead_lettered") != 36 {
		t.Fatalf("job = %v, want 6 rejected and 36 dead-lettered", job)
	}
	// The live list shows the job in its final state without a reload.
	b.wait(admin, "the job in the live list", fmt.Sprintf(`document.querySelector('tr[data-job=%q][data-state=completed_with_errors]') !== null`, id))
	b.shot(admin, "jobs")
	if n := eval[int](b, admin, `document.querySelectorAll('table[data-table=jobs] tbody tr').length`); n != 2 {
		t.Fatalf("the jobs list has %d rows, want the 2 jobs", n)
	}
	// The hostile name is shown as text: no element made of it, no script run.
	if name := eval[string](b, admin, fmt.Sprintf(`document.querySelector('tr[data-job=%q] td:nth-child(4)').textContent`, earlier)); name != hostileName {
		t.Fatalf("the earlier job's file shows as %q", name)
	}
	if eval[bool](b, admin, `document.querySelector('main img') !== null || document.title === 'pwned'`) {
		t.Fatal("a job's file name was rendered as HTML")
	}

	// The job: its rejections with item index and reason, and its dead letters.
	b.run(admin, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-job=%q] a`, id))))
	b.wait(admin, "the job's rejections", `document.querySelectorAll('table[data-table=rejections] tbody tr[data-item]').length === 6`)
	items := eval[[]string](b, admin, `[...document.querySelectorAll('table[data-table=rejections] tbody tr')].map(r => r.dataset.item + ': ' + r.lastChild.textContent)`)
	for i, want := range []string{"13: empty content", "14: ", "21: content too large", "27: ", "34: no id", "37: id must be a string"} {
		if !strings.HasPrefix(items[i], want) {
			t.Fatalf("rejection %d = %q, want %q…", i, items[i], want)
		}
	}
	b.wait(admin, "the job's dead letters", `document.querySelectorAll('table[data-table=dead-letters] tbody tr[data-dead-letter]').length === 36`)
	b.shot(admin, "job")

	// The dead letters of the job: payload and error side by side.
	b.run(admin, chromedp.Navigate(base+"/ui/#/dlq?job="+id))
	b.wait(admin, "the DLQ list", `document.querySelector('main div[data-count]')?.dataset.count === '36'`)
	b.shot(admin, "dead-letters")
	b.run(admin, chromedp.Click(chromedp.CSS(`tr[data-dead-letter] a`)))
	b.wait(admin, "a dead letter", `document.querySelector('#payload')?.textContent.includes('"content"')`)
	errText := eval[string](b, admin, `document.querySelector('#error-message').textContent`)
	if !strings.Contains(strings.ToLower(errText), "unauthorized") && !strings.Contains(strings.ToLower(errText), "auth") {
		t.Fatalf("error shown: %q", errText)
	}
	b.shot(admin, "dead-letter")

	// A read-only operator sees the same pages, dead letters included, and no action; a
	// forged action is refused and changes nothing.
	reader := b.tab(admin)
	b.signIn(reader, base, readTok)
	b.run(reader, chromedp.Navigate(base+"/ui/#/jobs/"+id))
	b.wait(reader, "the job", `document.querySelectorAll('table[data-table=dead-letters] tr[data-dead-letter]').length === 36`)
	b.run(reader, chromedp.Navigate(base+"/ui/#/dlq"))
	b.wait(reader, "the DLQ", `document.querySelector('main div[data-count]')?.dataset.count === '36'`)
	b.shot(reader, "read-only")
	controls := `document.querySelectorAll('#rollback, #replay-selected, #replay-filter, #purge, #replay-one, #delete-one, input[data-id]').length`
	if n := eval[int](b, reader, controls); n != 0 {
		t.Fatalf("a read token sees %d action controls on the DLQ", n)
	}
	b.run(reader, chromedp.Click(chromedp.CSS(`tr[data-dead-letter] a`)))
	b.wait(reader, "a dead letter", `document.querySelector('#payload') !== null`)
	if n := eval[int](b, reader, controls); n != 0 {
		t.Fatalf("a read token sees %d action controls on a dead letter", n)
	}
	forged := eval[int](b, reader, `(async () => (await fetch('/v1/dlq?job=`+id+`', {method: 'DELETE', headers: {Authorization: 'Bearer ' + sessionStorage.getItem('sluice.token')}})).status)()`)
	if forged != 403 || len(dlqEntries(t, base, adminTok)) != 36 {
		t.Fatalf("a read token's purge answered %d", forged)
	}

	// Fix the sink, then dry-run: the preview names all 36 and changes nothing.
	double.SetFaultRate(0)
	b.run(admin, chromedp.Navigate(base+"/ui/#/dlq?job="+id))
	b.wait(admin, "the DLQ list", `document.querySelector('main div[data-count]')?.dataset.count === '36'`)
	b.run(admin, chromedp.Click(chromedp.CSS("#replay-filter")))
	b.wait(admin, "the dry run", `document.querySelectorAll('#replay-preview ul[data-list=would-replay] li').length === 36`)
	rateLabel := eval[string](b, admin, `document.querySelector('label[for=replay-rate]').textContent`)
	if !strings.Contains(rateLabel, "default 100") {
		t.Fatalf("rate limit not shown: %q", rateLabel)
	}
	b.shot(admin, "replay-dry-run")
	if n := len(dlqEntries(t, base, adminTok)); n != 36 {
		t.Fatalf("the dry run changed the DLQ: %d entries", n)
	}
	b.confirm(admin)
	b.wait(admin, "the replay", `document.querySelector('#status').textContent.startsWith('Replayed 36, skipped 0, failed 0')`)
	b.wait(admin, "an empty list", `document.querySelector('main div[data-count]')?.dataset.count === '0'`)

	// The job completes: every published item written, none dead.
	b.run(admin, chromedp.Navigate(base+"/ui/#/jobs/"+id))
	b.wait(admin, "the job written", `document.querySelector('dd[data-field=Written]')?.textContent === '36' && document.querySelector('dd[data-field=Dead-lettered]')?.textContent === '0'`)
	b.wait(admin, "no dead letter", `document.querySelectorAll('table[data-table=dead-letters] tr[data-dead-letter]').length === 0`)
	job = waitDone(t, base, adminTok, id, 10*time.Second)
	if num(job, "written") != 36 || num(job, "dead_lettered") != 0 || len(dlqEntries(t, base, adminTok)) != 0 {
		t.Fatalf("after the replay: job %v", job)
	}
	docs := len(double.Documents("default_keyspace", "ttrpg_chunks_dev"))
	if docs < 36 {
		t.Fatalf("AstraDB holds %d documents after the replay", docs)
	}

	// Consumers and lag, and requirements with a decided feature request.
	b.run(admin, chromedp.Navigate(base+"/ui/#/consumers"))
	b.wait(admin, "the consumers", `document.querySelectorAll('table[data-table=consumers] tr[data-consumer]').length > 0`)
	b.shot(admin, "consumers")
	fr := call(t, "POST", base+"/v1/features?wait=5s", writeTok, "application/json",
		[]byte(`{"title":"Export to PDF","description":"Export the rules to a PDF file.","priority":"high","requester":"dev_team"}`))
	if fr.status != http.StatusCreated {
		t.Fatalf("feature: %d %v", fr.status, fr.body)
	}
	frID := fr.body["feature"].(map[string]any)["request_id"].(string)
	if a := call(t, "POST", base+"/v1/features/"+frID+"/decision?wait=5s", adminTok, "application/json", []byte(`{"action":"approve","reason":"planned for 2.0"}`)); a.status >= 300 {
		t.Fatalf("approve: %d %v", a.status, a.body)
	}
	b.run(admin, chromedp.Navigate(base+"/ui/#/requirements"))
	b.wait(admin, "the features and the audit chain", fmt.Sprintf(`document.querySelector('tr[data-feature=%q]') !== null && document.querySelector('#integrity').textContent.includes('intact')`, frID))
	b.shot(admin, "requirements")
	b.run(admin, chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-feature=%q] a`, frID))))
	b.wait(admin, "the decision history", `document.querySelectorAll('table[data-table=audit] tbody tr').length === 2`)
	b.shot(admin, "feature")

	// Rollback: the confirmation shows what goes before anything does.
	b.run(admin, chromedp.Navigate(base+"/ui/#/jobs/"+id))
	b.wait(admin, "the rollback button", `document.querySelector('#rollback') !== null`)
	b.run(admin, chromedp.Click(chromedp.CSS("#rollback")))
	b.wait(admin, "the rollback preview", `document.querySelector('#rollback-preview') !== null`)
	preview := eval[string](b, admin, `document.querySelector('#rollback-preview').textContent`)
	for _, want := range []string{fmt.Sprintf("%d documents this job wrote last are deleted", docs),
		"1 earlier job loses documents", earlier + " — 5 documents"} {
		if !strings.Contains(preview, want) {
			t.Fatalf("rollback preview %q, want %q", preview, want)
		}
	}
	b.shot(admin, "rollback")
	// Escape cancels: nothing is rolled back.
	b.run(admin, chromedp.KeyEvent(kb.Escape))
	b.wait(admin, "the dialog closed", `!document.querySelector('#dialog').open`)
	if j := waitDone(t, base, adminTok, id, time.Second); j["rollback"] != nil {
		t.Fatalf("Escape rolled the job back: %v", j["rollback"])
	}
	b.run(admin, chromedp.Click(chromedp.CSS("#rollback")))
	b.confirm(admin)
	b.wait(admin, "the job rolled back", `document.querySelector('dd[data-field=State]')?.textContent === 'rolled back'`)
	if n := len(double.Documents("default_keyspace", "ttrpg_chunks_dev")); n != 0 {
		t.Fatalf("AstraDB holds %d documents after the rollback", n)
	}
	if j := waitDone(t, base, adminTok, earlier, time.Second); j["state"] != "superseded" {
		t.Fatalf("the earlier job after the rollback: %v", j)
	}

	// A page on another origin cannot act through the operator's browser.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>evil</title><script>
fetch(%q, {method: 'POST', mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: '{"chunks":[{"id":"forged","content":"forged"}]}'})
  .finally(() => { document.title = 'sent' })</script>`, base+"/v1/jobs?env=dev")
	}))
	defer evil.Close()
	b.run(reader, chromedp.Navigate(evil.URL))
	b.wait(reader, "the forged request", `document.title === 'sent'`)
	// DevTools reports the answer's status a moment after the page saw the request end.
	st := b.status(base + "/v1/jobs?env=dev")
	for deadline := time.Now().Add(5 * time.Second); st == 0 && time.Now().Before(deadline); st = b.status(base + "/v1/jobs?env=dev") {
		time.Sleep(20 * time.Millisecond)
	}
	if st != http.StatusForbidden {
		t.Fatalf("the forged cross-origin POST answered %d", st)
	}
	if a := call(t, "GET", base+"/v1/jobs", adminTok, "", nil); len(a.body["jobs"].([]any)) != 2 {
		t.Fatalf("the forged request created a job: %v", a.body)
	}

	// On a phone the pages reflow: nothing is wider than the screen.
	b.run(admin, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	for _, page := range []string{"#/jobs", "#/dlq", "#/jobs/" + id, "#/consumers", "#/requirements"} {
		b.run(admin, chromedp.Navigate(base+"/ui/"+page))
		b.wait(admin, page, `document.querySelector('main table') !== null`)
		wide := eval[bool](b, admin, `document.documentElement.scrollWidth > window.innerWidth + 1`)
		if wide {
			t.Errorf("%s is wider than a 390 px screen", page)
		}
	}
	b.shot(admin, "phone-jobs")

	// Nothing left the server, and no page threw or broke its CSP.
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, u := range b.requests {
		if !strings.HasPrefix(u, base+"/") && !strings.HasPrefix(u, evil.URL) && !strings.HasPrefix(u, "data:") {
			t.Errorf("a page requested %s", u)
		}
	}
	if len(b.problems) > 0 {
		t.Errorf("the pages reported problems: %v", b.problems)
	}
}
