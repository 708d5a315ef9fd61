package web_test

import (
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"cryptostream/gateway/web"
)

func get(t *testing.T, h http.HandlerFunc, path, enc string) *http.Response {
	t.Helper()
	r := httptest.NewRequest("GET", path, nil)
	if enc != "" {
		r.Header.Set("Accept-Encoding", enc)
	}
	w := httptest.NewRecorder()
	h(w, r)
	return w.Result()
}

// The shell and its assets come from the embedded build, with the strict
// CSP on every answer, gzip when asked, and nothing outside static/.
func TestServe(t *testing.T) {
	if !web.Built() {
		t.Fatal("dist/ holds no build: (cd gateway/web && npm ci && npm run build)")
	}
	resp := get(t, web.Index, "/", "")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != web.CSP || !strings.Contains(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("index: %d %v", resp.StatusCode, resp.Header)
	}
	if !strings.Contains(web.CSP, "script-src 'self';") || strings.Contains(web.CSP, "unsafe") {
		t.Fatalf("CSP %q is not strict", web.CSP)
	}
	// No inline script: every <script> names a file.
	for _, m := range regexp.MustCompile(`(?s)<script([^>]*)>(.*?)</script>`).FindAllStringSubmatch(string(body), -1) {
		if !strings.Contains(m[1], `src="/static/`) || strings.TrimSpace(m[2]) != "" {
			t.Fatalf("inline script in the shell: %s", m[0])
		}
	}
	js := regexp.MustCompile(`/static/app-[A-Z0-9]+\.js`).FindString(string(body))
	if js == "" {
		t.Fatalf("the shell names no script: %s", body)
	}
	plain := get(t, web.Static, js, "")
	raw, _ := io.ReadAll(plain.Body)
	if plain.StatusCode != 200 || plain.Header.Get("Content-Encoding") != "" || !strings.Contains(plain.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("script: %d %v", plain.StatusCode, plain.Header)
	}
	gz := get(t, web.Static, js, "br, gzip;q=0.8")
	if gz.Header.Get("Content-Encoding") != "gzip" || gz.Header.Get("Content-Security-Policy") != web.CSP {
		t.Fatalf("gzip not served: %v", gz.Header)
	}
	zr, err := gzip.NewReader(gz.Body)
	if err != nil {
		t.Fatal(err)
	}
	unz, _ := io.ReadAll(zr)
	if string(unz) != string(raw) {
		t.Fatal("the gzip copy is not the script")
	}
	if get(t, web.Static, js, "gzip;q=0").Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip sent to a client that refuses it")
	}
	for _, p := range []string{"/static/../index.html", "/static/nope.js", "/static/", js + ".gz", "/index.html"} {
		if r := get(t, web.Static, p, ""); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s = %d, want 404", p, r.StatusCode)
		}
	}
}
