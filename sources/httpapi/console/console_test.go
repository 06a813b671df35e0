package console_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/sources/httpapi/console"
)

func get(t *testing.T, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	console.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec.Result()
}

// Every answer carries the CSP and the other security headers; the page, its script and its
// style are served with their types; anything else is 404.
func TestHandlerServesTheFilesWithTheirHeaders(t *testing.T) {
	for path, ctype := range map[string]string{"/ui/": "text/html", "/ui/app.js": "text/javascript", "/ui/app.css": "text/css"} {
		res := get(t, path)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || len(body) == 0 {
			t.Fatalf("GET %s: %d %q, %d bytes", path, res.StatusCode, res.Header.Get("Content-Type"), len(body))
		}
		for h, want := range map[string]string{
			"Content-Security-Policy": console.ContentSecurityPolicy, "X-Content-Type-Options": "nosniff",
			"X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
		} {
			if got := res.Header.Get(h); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, h, got, want)
			}
		}
	}
	for _, path := range []string{"/ui/index.html", "/ui/nope.js", "/ui/assets/app.js", "/ui/../console.go", "/ui/%2e%2e/console.go"} {
		if res := get(t, path); res.StatusCode != 404 {
			t.Errorf("GET %s: %d, want 404", path, res.StatusCode)
		}
	}
}

// The CSP forbids inline script and style, and anything from another origin; the files must
// not need them, and the script must never turn server text into HTML.
func TestAssetsNeedNothingTheCSPForbids(t *testing.T) {
	files := map[string]string{}
	err := fs.WalkDir(console.Assets(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(console.Assets(), p)
		files[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("assets: %v", len(files))
	}
	external := regexp.MustCompile(`(?i)(src|href|url)\s*[=(]\s*["']?(https?:)?//`)
	for name, text := range files {
		if m := external.FindString(text); m != "" {
			t.Errorf("%s loads from another origin: %q", name, m)
		}
	}
	html := files["index.html"]
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), // inline script
		regexp.MustCompile(`<style`),                        // inline style element
		regexp.MustCompile(`\sstyle=`),                      // style attribute
		regexp.MustCompile(`\son[a-z]+=`),                   // inline handler
	} {
		if m := bad.FindString(html); m != "" {
			t.Errorf("index.html has %q, which the CSP blocks", m)
		}
	}
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'", "javascript:"} {
		if strings.Contains(files["app.js"], sink) {
			t.Errorf("app.js uses %s", sink)
		}
	}
}
