package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cryptostream/bus"
)

// Issue 16: with --tls-cert and --tls-key the HTTP server serves HTTPS
// only: a client that trusts the certificate's CA gets /healthz, a plain
// HTTP request is refused.
func TestHTTPServesTLS(t *testing.T) {
	dir := t.TempDir()
	if err := bus.WriteTLS(dir, []string{"localhost"}, false); err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "server", bus.TLSCertFile), filepath.Join(dir, "server", bus.TLSKeyFile)
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--tls-cert", cert, "--tls-key", key}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"features"}
	sys, err := startSystem(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.bus.Close()
	defer sys.server.Close()

	pem, err := os.ReadFile(filepath.Join(dir, "tls", bus.TLSCAFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get("https://" + sys.Addr() + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS with the CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS /healthz = %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + sys.Addr() + "/healthz")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatalf("plain HTTP was served: %s", body)
		}
	}

	for name, args := range map[string][]string{
		"cert without key": {"--tls-cert", cert},
	} {
		if _, err := parseRunConfig(args, testEnv(nil)); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	cfg.TLSKey = filepath.Join(dir, bus.RoleGateway, bus.TLSKeyFile)
	cfg.DataDir = t.TempDir()
	if _, err := startSystem(t.Context(), cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--tls-cert") {
		t.Fatalf("a key of another certificate: %v", err)
	}
}
