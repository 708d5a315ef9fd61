// Package web owns the browser dashboard: its sources (src/, built with
// esbuild by build.mjs) and the built assets in dist/, embedded in the
// binary so that the gateway serves them with no Node at run time. Handler
// serves them with a strict Content-Security-Policy.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed all:dist
var dist embed.FS

// CSP allows scripts, styles and connections from the page's own origin
// only: no inline script, no eval, nothing third-party. The icon is a data
// URL so that no request for /favicon.ico ends in a 404 in the console.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func secure(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}

// Index serves the page shell. It is never cached, so that a new build's
// asset names are picked up at once; the assets themselves are immutable.
func Index(w http.ResponseWriter, r *http.Request) {
	serve(w, r, "index.html", "no-cache")
}

// Static serves /static/<name>, content-addressed build outputs.
func Static(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/")
	if name != path.Clean(name) || !strings.HasPrefix(name, "static/") || strings.HasSuffix(name, ".gz") {
		notFound(w)
		return
	}
	serve(w, r, name, "public, max-age=31536000, immutable")
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(`{"error":{"code":"not_found","message":"no such file"}}` + "\n"))
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".map":  "application/json",
}

// serve answers with the precompressed copy build.mjs wrote when the
// client takes gzip: the bundle is compressed once at build time, not per
// request.
func serve(w http.ResponseWriter, r *http.Request, name, cache string) {
	h := w.Header()
	secure(h)
	body, err := fs.ReadFile(dist, "dist/"+name)
	if err != nil {
		notFound(w)
		return
	}
	h.Set("Content-Type", types[path.Ext(name)])
	h.Set("Cache-Control", cache)
	h.Add("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		if gz, err := fs.ReadFile(dist, "dist/"+name+".gz"); err == nil {
			h.Set("Content-Encoding", "gzip")
			body = gz
		}
	}
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// Built reports whether dist holds a build (the page shell and its assets).
func Built() bool {
	_, err := fs.Stat(dist, "dist/index.html")
	return err == nil
}
