package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/bus"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// lockedRole is one role started alone as its own NATS user, with its log.
type lockedRole struct {
	sys *system
	log *lockedBuffer
}

// Issue 16: every role runs as its own NATS user, with only its
// permissions, over mutual TLS, against a server that admits those users
// alone: the
// pipeline works end to end (demo candles in, features, forecasts, the
// read model, the gateway's login, history and websocket), and no request
// of any role is refused.
func TestRolesRunAsTheirOwnNATSUsers(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	authDir := t.TempDir()
	if err := run(ctx, []string{"nats-auth", "--out", authDir, "--tls-hosts", "localhost"}, testEnv(nil)); err != nil {
		t.Fatal(err)
	}
	// The server as an operator configures it: the roles' users from
	// auth.conf, and clients on mutual TLS with the files nats-auth issued.
	conf := filepath.Join(authDir, "server", "nats.conf")
	sdir := filepath.Join(authDir, "server")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("include ./auth.conf\ntls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }\n",
		filepath.Join(sdir, bus.TLSCertFile), filepath.Join(sdir, bus.TLSKeyFile), filepath.Join(authDir, "tls", bus.TLSCAFile))), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir = "127.0.0.1", -1, true, t.TempDir()
	opts.JetStreamMaxStore = natstest.MaxStore
	url := natstest.Start(t, opts).ClientURL()
	as := func(role string) []string {
		return []string{"--nats-url", url, "--nats-nkey", filepath.Join(authDir, role, bus.KeyFileName), "--nats-role", role,
			"--nats-tls-ca", filepath.Join(authDir, "tls", bus.TLSCAFile),
			"--nats-tls-cert", filepath.Join(authDir, role, bus.TLSCertFile), "--nats-tls-key", filepath.Join(authDir, role, bus.TLSKeyFile)}
	}
	// Nobody but the admin may create the topology.
	if err := run(ctx, append([]string{"topology"}, as(bus.RoleAdmin)...), testEnv(nil)); err != nil {
		t.Fatalf("topology: %v", err)
	}

	env := testEnv(map[string]string{"ADMIN_PASSWORD": "boss-password"})
	roleArgs := map[string][]string{
		bus.RoleIngest:    {"--demo", "--demo-speed", "120"},
		bus.RoleFeatures:  nil,
		bus.RolePredictor: nil,
		bus.RoleTrainer:   {"--train-every", "0"},
		bus.RoleNotifier:  nil,
		bus.RoleSink:      {"--database-url", testDatabase(t)},
		bus.RoleGateway:   {"--bcrypt-cost", "10", "--admin-username", "boss", "--kraken-rest-url", "http://127.0.0.1:1"},
	}
	started := map[string]lockedRole{}
	done := make(chan error, len(roleArgs))
	for _, r := range roles() {
		extra, ok := roleArgs[r.name]
		if !ok {
			t.Fatalf("role %s has no NATS user in this test", r.name)
		}
		args := append(append(as(r.name), "--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--log-level", "warn", "--log-format", "text"), extra...)
		cfg, err := parseRoleConfig(r.name, r.synopsis, r.httpAddr, []role{r}, args, env)
		if err != nil {
			t.Fatalf("%s: %v", r.name, err)
		}
		cfg.Roles = []string{r.name}
		var logs lockedBuffer
		sys, err := startSystem(ctx, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
		if err != nil {
			t.Fatalf("%s: %v\n%s", r.name, err, logs.String())
		}
		go func() { done <- sys.Run(ctx) }()
		started[r.name] = lockedRole{sys, &logs}
	}
	if len(started) != len(roleArgs) {
		t.Fatalf("started %d roles, the test names %d", len(started), len(roleArgs))
	}

	_, js := adminConn(t, url, authDir)
	// Candles from the demo, their vectors and their forecasts, and the
	// read model's copy: wait while what leads to the missing ones grows
	// (the demo's candles alone grow whether or not a forecast or a row
	// will ever come of them).
	natstest.WaitProgress(t, 2*time.Minute, "forecasts and the read model", func() (bool, string) {
		n := map[string]uint64{}
		for _, name := range []string{streams.StreamMarket, streams.StreamFeatures, streams.StreamPredictions} {
			st, err := js.Stream(ctx, name)
			if err != nil {
				return false, err.Error()
			}
			// Without the partition owners' fence markers, which
			// are there before any forecast is.
			if n[name], err = streams.DataMsgs(ctx, st); err != nil {
				return false, err.Error()
			}
		}
		rows := countCandles(t, roleArgs[bus.RoleSink][1])
		// The way to a forecast is the vectors, and to them the
		// candles; the way to a row is the candles.
		forecasts := "forecasts"
		switch {
		case n[streams.StreamPredictions] > 0:
		case n[streams.StreamFeatures] > 0:
			forecasts = "vectors " + strconv.FormatUint(n[streams.StreamFeatures], 10)
		default:
			forecasts = "candles " + strconv.FormatUint(n[streams.StreamMarket], 10)
		}
		stored := "rows"
		if rows <= 0 {
			stored = "candles " + strconv.FormatUint(n[streams.StreamMarket], 10)
		}
		return n[streams.StreamPredictions] > 0 && rows > 0, forecasts + ", " + stored
	})
	// The partition owners wrote their fence markers as their own users.
	for _, name := range []string{streams.StreamFeatures, streams.StreamPredictions} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(streams.FenceFilter(name)))
		if err != nil {
			t.Fatal(err)
		}
		if len(info.State.Subjects) == 0 {
			t.Errorf("%s holds no fence marker: its owners publish unfenced", name)
		}
	}
	for _, r := range started {
		awaitReady(t, "http://"+r.sys.Addr())
	}

	base := "http://" + started[bus.RoleGateway].sys.Addr()
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
		t.Fatalf("login as the gateway's user = %d, %v", resp.StatusCode, err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/crypto/asset_latest/BTC-USD", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("asset_latest through the gateway's user = %d", resp.StatusCode)
	}
	d := websocket.Dialer{Subprotocols: []string{"bearer", tok.AccessToken}}
	conn, _, err := d.DialContext(ctx, "ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.WriteJSON(map[string]string{"op": "subscribe", "channel": "candles:BTC-USD:1m"}); err != nil {
		t.Fatal(err)
	}
	readAnswer(t, conn, "the subscription's answer")
	conn.Close()

	cancel()
	for range started {
		// Each role at its default --shutdown-timeout.
		if err := awaitStopped(t, done, 20*time.Second); err != nil {
			t.Error(err)
		}
	}
	for name, r := range started {
		if l := r.log.String(); strings.Contains(strings.ToLower(l), "permissions violation") {
			t.Errorf("%s was refused a request its role needs:\n%s", name, l)
		}
	}
}

// adminConn connects with the admin's seed and TLS files from authDir.
func adminConn(t *testing.T, url, authDir string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	dir := filepath.Join(authDir, bus.RoleAdmin)
	opts, err := bus.ClientAuth(bus.Config{NKeyFile: filepath.Join(dir, bus.KeyFileName),
		TLSCA: filepath.Join(authDir, "tls", bus.TLSCAFile), TLSCert: filepath.Join(dir, bus.TLSCertFile), TLSKey: filepath.Join(dir, bus.TLSKeyFile)})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
