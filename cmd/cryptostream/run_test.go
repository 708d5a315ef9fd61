package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/bus"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// testEnv gives a command its own stdout and stderr: the logger writes to
// stderr from the connection's callback goroutines too (under its handler's
// lock), while the command prints its results to stdout.
func testEnv(vars map[string]string) *env {
	var out, errs bytes.Buffer
	return &env{stdout: &out, stderr: &errs, getenv: func(k string) string { return vars[k] }}
}

// startTestSystem starts run's composition on a random port and dataDir and
// returns it with a function that stops it and reports Run's error.
func startTestSystem(t *testing.T, dataDir string) (*system, func() error) {
	t.Helper()
	// The lowest bcrypt cost the gateway takes: the first admin's hash
	// is the slowest step of a start under -race.
	return startTestSystemArgs(t, "--data-dir", dataDir, "--bcrypt-cost", "10")
}

// startTestSystemArgs starts `run` with args on a random HTTP port; stop
// ends it and returns what Run returned.
func startTestSystemArgs(t *testing.T, args ...string) (*system, func() error) {
	t.Helper()
	cfg, err := parseRunConfig(append([]string{"--http-addr", "127.0.0.1:0"}, args...), testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	logs := testLog(t)
	sys, err := startSystem(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sys.Run(ctx) }()
	var stopped bool
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return awaitStopped(t, done, cfg.ShutdownTimeout)
	}
	t.Cleanup(func() { _ = stop() })
	return sys, stop
}

// awaitStopped waits for a stopped system's Run to return. The bound is the
// one `run` itself keeps (its watchdog exits the process past it), doubled
// for a loaded machine: a shutdown that overruns it is hung, and the test
// says where instead of sitting until go test's own timeout.
func awaitStopped(t testing.TB, done <-chan error, bound time.Duration) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * bound):
		t.Fatalf("Run did not return within %s of its stop; goroutines:\n%s", 2*bound, goroutines())
		return nil
	}
}

// goroutines is every goroutine's stack, for a test that found one stuck.
func goroutines() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// testLog is a system's log, shown when its test fails: a wait that gives
// up says what it waited for, and the log says what the system did.
func testLog(t testing.TB) *lockedBuffer {
	t.Helper()
	var logs lockedBuffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of the system:\n%s", logs.Tail(200))
		}
	})
	return &logs
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestRunComposition(t *testing.T) {
	dataDir := t.TempDir()
	sys, stop := startTestSystem(t, dataDir)
	base := "http://" + sys.Addr()

	if code, body := get(t, base+"/healthz"); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz = %d %q", code, body)
	}
	awaitReady(t, base)
	code, body := get(t, base+"/readyz")
	var rep struct {
		Ready  bool              `json:"ready"`
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	if code != http.StatusOK || !rep.Ready || rep.Checks["jetstream"] != "ok" {
		t.Fatalf("/readyz = %d %q", code, body)
	}
	code, body = get(t, base+"/metrics")
	if code != http.StatusOK || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "process_") {
		t.Fatalf("/metrics = %d, lacks the Go or process collectors", code)
	}

	js := sys.bus.JS
	var names []string
	lister := js.StreamNames(t.Context())
	for n := range lister.Name() {
		names = append(names, n)
	}
	for _, want := range []string{"MARKET", "TICKS", "FEATURES", "PREDICTIONS", "ALERTS", "JOBS", "AUDIT",
		"KV_assets", "KV_users", "KV_alert-rules", "KV_model-registry", "OBJ_models"} {
		if !slices.Contains(names, want) {
			t.Errorf("stream %s missing from %v", want, names)
		}
	}
	candle := streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: time.Unix(1677646800, 0).UTC(),
		Open: 23500, High: 23510, Low: 23490, Close: 23505, Volume: 1.5, Trades: 3, Quality: streams.QualityImported}
	if _, err := streams.Publish(t.Context(), js, &candle); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(t.Context(), "BTC-USD", []byte(`{"symbol":"BTC/USD"}`)); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("clean shutdown: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("HTTP still answers after shutdown")
	}

	// Restart on the same data dir: the candle and the asset are still there.
	sys2, stop2 := startTestSystem(t, dataDir)
	market, err := sys2.bus.JS.Stream(t.Context(), streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := market.GetLastMsgForSubject(t.Context(), candle.Subject())
	if err != nil {
		t.Fatalf("candle lost across restart: %v", err)
	}
	got, err := streams.Decode[streams.Candle](msg.Data)
	if err != nil || got.Close != candle.Close || !got.Start.Equal(candle.Start) {
		t.Fatalf("candle after restart = %+v, %v", got, err)
	}
	kv2, err := sys2.bus.JS.KeyValue(t.Context(), streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := kv2.Get(t.Context(), "BTC-USD"); err != nil || !strings.Contains(string(e.Value()), "BTC/USD") {
		t.Fatalf("asset lost across restart: %v", err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("clean shutdown after restart: %v", err)
	}
}

func TestRunConfig(t *testing.T) {
	t.Run("env fallback and flag precedence", func(t *testing.T) {
		e := testEnv(map[string]string{"HTTP_ADDR": "127.0.0.1:9999", "DATA_DIR": "/env/dir", "NATS_URL": "nats://u:secret@h:4222"})
		cfg, err := parseRunConfig([]string{"--data-dir", "/flag/dir"}, e)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.HTTPAddr != "127.0.0.1:9999" || cfg.DataDir != "/flag/dir" || cfg.NATSURL != "nats://u:secret@h:4222" {
			t.Fatalf("cfg = %+v", cfg)
		}
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("cfg", "config", cfg.commonConfig)
		if strings.Contains(logged.String(), "secret") {
			t.Fatalf("logged config leaks a password: %s", logged.String())
		}
		// A cluster's seed list, and the password as its own setting.
		e = testEnv(map[string]string{"NATS_URL": "nats://u:hunter2@a:4222,nats://u:hunter2@b:4222", "NATS_USER": "u", "NATS_PASSWORD": "hunter2"})
		cfg, err = parseRunConfig(nil, e)
		if err != nil {
			t.Fatal(err)
		}
		logged.Reset()
		slog.New(slog.NewTextHandler(&logged, nil)).Info("cfg", "config", cfg)
		if strings.Contains(logged.String(), "hunter2") || !strings.Contains(logged.String(), "b:4222") {
			t.Fatalf("logged config of a seed list: %s", logged.String())
		}
	})
	for name, args := range map[string][]string{
		"bad log format":      {"--log-format", "xml"},
		"bad log level":       {"--log-level", "loud"},
		"listen with url":     {"--nats-url", "nats://x:4222", "--nats-listen", "127.0.0.1:1"},
		"replicas":            {"--replicas", "0"},
		"stray argument":      {"extra"},
		"unknown flag":        {"--nope"},
		"timeout negative":    {"--shutdown-timeout", "-1s"},
		"tls embedded":        {"--nats-tls-ca", "ca.pem"},
		"tls cert no key":     {"--nats-url", "nats://x:4222", "--nats-tls-cert", "c.pem"},
		"data key with url":   {"--nats-url", "nats://x:4222", "--data-key-file", "k"},
		"listen tls with url": {"--nats-url", "nats://x:4222", "--nats-listen-tls-cert", "c.pem", "--nats-listen-tls-key", "k.pem"},
		"listen tls no key":   {"--nats-listen-tls-cert", "c.pem"},
		"listen tls ca alone": {"--nats-listen-tls-ca", "ca.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseRunConfig(args, testEnv(nil)); err == nil {
				t.Fatalf("parseRunConfig(%q) accepted", args)
			}
		})
	}
	t.Run("bad env value", func(t *testing.T) {
		if _, err := parseRunConfig(nil, testEnv(map[string]string{"SHUTDOWN_TIMEOUT": "soon"})); err == nil {
			t.Fatal("an unparseable SHUTDOWN_TIMEOUT was accepted")
		}
	})
	t.Run("help", func(t *testing.T) {
		e := testEnv(nil)
		err := run(t.Context(), []string{"run", "--help"}, e)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("run --help = %v", err)
		}
		out := e.stderr.(*bytes.Buffer).String()
		for _, want := range []string{"-nats-url", "(env NATS_URL)", "-data-dir", "-http-addr"} {
			if !strings.Contains(out, want) {
				t.Errorf("--help lacks %q:\n%s", want, out)
			}
		}
	})
}

func TestRunExternalAndListen(t *testing.T) {
	t.Run("external nats", func(t *testing.T) {
		external := natstest.Server(t)
		cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--bcrypt-cost", "10", "--nats-url", external.ClientURL(), "--data-dir", t.TempDir()}, testEnv(nil))
		if err != nil {
			t.Fatal(err)
		}
		sys, err := startSystem(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sys.Run(ctx) }()
		if sys.bus.Embedded() {
			t.Fatal("--nats-url started an embedded server")
		}
		_, js := natstest.Connect(t, external)
		if _, err := js.Stream(t.Context(), streams.StreamMarket); err != nil {
			t.Fatalf("topology not ensured on the external server: %v", err)
		}
		cancel()
		if err := awaitStopped(t, done, cfg.ShutdownTimeout); err != nil {
			t.Fatal(err)
		}
		if !external.Running() {
			t.Fatal("shutting down run stopped the external server")
		}
	})
	// Issue 11 item 1: the exposed port admits the generated credential
	// (0600 under the data dir) and nobody without it.
	t.Run("nats-listen exposes the embedded server with a credential", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		dataDir := t.TempDir()
		var logged lockedBuffer
		cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--bcrypt-cost", "10", "--nats-listen", addr, "--data-dir", dataDir}, testEnv(nil))
		if err != nil {
			t.Fatal(err)
		}
		sys, err := startSystem(t.Context(), cfg, slog.New(slog.NewTextHandler(&logged, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- sys.Run(ctx) }()
		if nc, err := nats.Connect("nats://"+addr, nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Fatal("the embedded server admitted a client with no credential")
		}
		keyFile := filepath.Join(dataDir, bus.KeyFileName)
		if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("generated credential %s: %v, %v", keyFile, fi, err)
		}
		if !strings.Contains(logged.String(), "nats --server nats://"+addr+" --nkey ") {
			t.Errorf("the log does not say how to use the nats CLI:\n%s", logged.String())
		}
		key, err := nats.NkeyOptionFromSeed(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect("nats://"+addr, key)
		if err != nil {
			t.Fatalf("connect with the generated credential: %v", err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Stream(t.Context(), streams.StreamMarket); err != nil {
			t.Fatalf("the stock client cannot see the streams on %s: %v", addr, err)
		}
		cancel()
		if err := awaitStopped(t, done, cfg.ShutdownTimeout); err != nil {
			t.Fatal(err)
		}
	})
}
