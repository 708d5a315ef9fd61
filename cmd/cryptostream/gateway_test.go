package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"cryptostream/natstest"
)

// The gateway is mounted in run beside /metrics, /healthz and /readyz, the
// first admin is created from the flags, and a shutdown closes websockets.
func TestRunServesGateway(t *testing.T) {
	dataDir := t.TempDir()
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--data-dir", dataDir, "--bcrypt-cost", "10",
		"--admin-username", "boss", "--kraken-rest-url", "http://127.0.0.1:1"}, testEnv(map[string]string{"ADMIN_PASSWORD": "boss-password"}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sys, err := startSystem(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sys.Run(ctx) }()
	base := "http://" + sys.Addr()
	// Ready once the latest view (asset_latest's memory) follows the
	// streams, which the workers start after the listener.
	if checks := awaitReady(t, base); checks["latest"] != "ok" {
		t.Fatalf("/readyz checks %v, want latest ok", checks)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json", "/"} {
		if code, _ := get(t, base+p); code != http.StatusOK {
			t.Fatalf("GET %s = %d", p, code)
		}
	}
	resp, err := http.Post(base+"/auth/login", "application/json", strings.NewReader(`{"username":"boss","password":"boss-password"}`))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("login = %d, %v", resp.StatusCode, err)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "jwt.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated key: %v, %v", fi, err)
	}
	if code, body := get(t, base+"/metrics"); code != http.StatusOK || !strings.Contains(body, "cryptostream_gateway_requests_total") {
		t.Fatalf("/metrics lacks the gateway's metrics")
	}
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok.AccessToken}}
	conn, _, err := d.DialContext(t.Context(), "ws://"+sys.Addr()+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.WriteJSON(map[string]string{"op": "subscribe", "channel": "ticks:BTC-USD"}); err != nil {
		t.Fatal(err)
	}
	// The subscription's answer comes when a busy machine gets to it:
	// the read is bounded by the test's deadline alone.
	readAnswer(t, conn, "the subscription's answer")
	cancel()
	// The close comes within the shutdown's bound, or never.
	conn.SetReadDeadline(time.Now().Add(2 * cfg.ShutdownTimeout))
	for {
		_, _, err := conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("websocket ended with %v, want close 1001", err)
		}
		break
	}
	if err := awaitStopped(t, done, cfg.ShutdownTimeout); err != nil {
		t.Fatalf("clean shutdown: %v", err)
	}
}

// readAnswer reads one message from conn by the test's deadline.
func readAnswer(t *testing.T, conn *websocket.Conn, what string) {
	t.Helper()
	if d, ok := natstest.Deadline(t); ok {
		conn.SetReadDeadline(d)
	}
	if _, _, err := conn.ReadMessage(); err != nil {
		t.Fatalf("websocket: reading %s: %v", what, err)
	}
	conn.SetReadDeadline(time.Time{})
}

func TestUserCommand(t *testing.T) {
	dataDir := t.TempDir()
	e := testEnv(nil)
	runUser := func(in string, args ...string) (string, error) {
		stdin = strings.NewReader(in)
		t.Cleanup(func() { stdin = os.Stdin })
		e.stdout.(*bytes.Buffer).Reset()
		err := run(t.Context(), append([]string{"user"}, append(args[:1:1], append([]string{"--data-dir", dataDir, "--bcrypt-cost", "10"}, args[1:]...)...)...), e)
		return e.stdout.(*bytes.Buffer).String(), err
	}
	if _, err := runUser("", "add", "--role", "admin", "--password-stdin", "ops"); err == nil {
		t.Fatal("an empty password was accepted")
	}
	if _, err := runUser("ops-password\n", "add", "--role", "admin", "--password-stdin", "ops"); err != nil {
		t.Fatal(err)
	}
	out, err := runUser("", "add", "eve")
	if err != nil || !strings.Contains(out, "with password ") {
		t.Fatalf("add with a generated password = %q, %v", out, err)
	}
	if _, err := runUser("", "add", "eve"); err == nil {
		t.Fatal("a duplicate was accepted")
	}
	if _, err := runUser("", "set-role", "ops", "user"); err == nil {
		t.Fatal("the last admin was demoted")
	}
	if _, err := runUser("", "set-role", "eve", "admin"); err != nil {
		t.Fatal(err)
	}
	if _, err := runUser("", "delete", "ops"); err != nil {
		t.Fatal(err)
	}
	out, err = runUser("", "list")
	if err != nil || !strings.Contains(out, "eve") || !strings.Contains(out, "admin") || strings.Contains(out, "ops ") {
		t.Fatalf("list = %q, %v", out, err)
	}
	for _, args := range [][]string{{"frobnicate"}, {"add"}, {"set-role", "eve"}, {"delete", "nobody"}} {
		if _, err := runUser("", args...); err == nil {
			t.Errorf("user %v succeeded", args)
		}
	}
}

// --metrics-addr moves /metrics off the public API port (issue 11 item 8):
// the API port answers 404 for it, the metrics address serves it with the
// gateway's metrics, and health stays on the API port.
func TestMetricsAddr(t *testing.T) {
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--bcrypt-cost", "10",
		"--kraken-rest-url", "http://127.0.0.1:1"}, testEnv(map[string]string{"ADMIN_PASSWORD": "boss-password"}))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"gateway"}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	sys, err := startSystem(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sys.Run(ctx) }()
	if sys.MetricsAddr() == "" || sys.MetricsAddr() == sys.Addr() {
		t.Fatalf("metrics at %q, API at %q", sys.MetricsAddr(), sys.Addr())
	}
	if code, _ := get(t, "http://"+sys.Addr()+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("/metrics on the API port = %d", code)
	}
	if code, _ := get(t, "http://"+sys.Addr()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz on the API port = %d", code)
	}
	if code, body := get(t, "http://"+sys.MetricsAddr()+"/metrics"); code != http.StatusOK || !strings.Contains(body, "cryptostream_gateway_requests_total") {
		t.Fatalf("/metrics on the metrics address = %d", code)
	}
	cancel()
	if err := awaitStopped(t, done, cfg.ShutdownTimeout); err != nil {
		t.Fatal(err)
	}
}
