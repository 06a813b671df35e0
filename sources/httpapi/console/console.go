// Package console is Sluice's operator console: a few static pages, embedded in the binary and
// served by the HTTP API at /ui/, that read and act only through the API itself with the
// operator's token (kept in the browser tab's session storage). Nothing is loaded from any
// other origin: the Content-Security-Policy allows only the console's own scripts and styles
// and connections back to the API.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed assets
var assets embed.FS

// Prefix is the path the console is served under.
const Prefix = "/ui/"

// ContentSecurityPolicy is sent with every console response: scripts, styles and connections
// from the API's own origin only, no inline script or style, no plugins, no framing, no form
// posted elsewhere.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console's files under Prefix (GET and HEAD only; the API's mux routes
// the methods). A path that names no file answers 404; "/ui/" is the page itself.
func Handler() http.Handler {
	sub := Assets()
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		// The files change only with the binary; revalidate so an upgrade shows at once.
		h.Set("Cache-Control", "no-cache")
		name := strings.TrimPrefix(path.Clean("/"+strings.TrimPrefix(r.URL.Path, Prefix)), "/")
		if name == "" {
			name = "index.html"
		}
		if _, err := fs.Stat(sub, name); err != nil || name == "index.html" && r.URL.Path != Prefix {
			http.NotFound(w, r)
			return
		}
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path = "/" + name
		if name == "index.html" {
			u.Path = "/"
		}
		r2.URL = &u
		files.ServeHTTP(w, r2)
	})
}

// Assets returns the console's files: index.html, app.js and app.css.
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // "assets" is a valid path in a tree fixed at build time
	}
	return sub
}
