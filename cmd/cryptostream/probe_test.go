package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Issue 16: the compose health checks run `cryptostream probe`; it passes
// on 200 only.
func TestProbe(t *testing.T) {
	status := http.StatusServiceUnavailable
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(status) }))
	defer srv.Close()
	if err := run(t.Context(), []string{"probe", srv.URL + "/readyz"}, testEnv(nil)); err == nil {
		t.Fatal("probe passed on 503")
	}
	status = http.StatusOK
	if err := run(t.Context(), []string{"probe", srv.URL + "/readyz"}, testEnv(nil)); err != nil {
		t.Fatalf("probe failed on 200: %v", err)
	}
	for _, bad := range [][]string{{"probe"}, {"probe", "file:///etc/passwd"}, {"probe", srv.URL, srv.URL}} {
		if err := run(t.Context(), bad, testEnv(nil)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
