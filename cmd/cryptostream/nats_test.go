package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"cryptostream/bus"
	"cryptostream/gateway/auth"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// readyz returns /readyz's status and its checks.
func readyz(t *testing.T, base string) (int, map[string]string) {
	t.Helper()
	code, body := get(t, base+"/readyz")
	var rep struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("/readyz body %q: %v", body, err)
	}
	return code, rep.Checks
}

// awaitReady waits for /readyz to answer 200 and returns its checks: a
// gateway is ready only once its latest view (asset_latest's memory) has
// caught up with the streams, which its workers start after the listener.
func awaitReady(t *testing.T, base string) map[string]string {
	t.Helper()
	var checks map[string]string
	natstest.WaitProgress(t, time.Minute, "/readyz", func() (bool, string) {
		var code int
		code, checks = readyz(t, base)
		return code == http.StatusOK, fmt.Sprint(code, checks)
	})
	return checks
}

// Issue 11 item 1: losing the AUDIT stream (stream rm AUDIT) makes the
// process not ready, not only a log line.
func TestReadyzFalseWithoutAudit(t *testing.T) {
	sys, _ := startTestSystem(t, t.TempDir())
	base := "http://" + sys.Addr()
	awaitReady(t, base)
	if err := sys.bus.JS.DeleteStream(t.Context(), streams.StreamAudit); err != nil {
		t.Fatal(err)
	}
	code, checks := readyz(t, base)
	if code != http.StatusServiceUnavailable || !strings.Contains(checks["jetstream"], streams.StreamAudit) {
		t.Fatalf("/readyz = %d %v after AUDIT was deleted, want 503 naming AUDIT", code, checks)
	}
}

// Issue 11 item 1: a listener off loopback takes no client without the
// credential.
func TestNATSListenAllInterfacesNeedsCredential(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--nats-listen", fmt.Sprintf("0.0.0.0:%d", port), "--data-dir", t.TempDir()}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"features"}
	sys, err := startSystem(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.bus.Close()
	defer sys.server.Close()
	nc, err := nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("0.0.0.0 took a client without the credential")
	}
}

// Issue 11 item 14: a second process on a data dir in use fails with a
// clear message, and `user` reaches the running system through its NATS
// (with the data dir's credential), so the running system sees the user.
func TestDataDirLockAndUserReachesRunningSystem(t *testing.T) {
	dataDir := t.TempDir()
	sys, _ := startTestSystem(t, dataDir)

	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--data-dir", dataDir}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := startSystem(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); !errors.Is(err, bus.ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second run on the data dir = %v, want ErrDataDirInUse naming the holder's pid", err)
	}

	e := testEnv(nil)
	if err := run(t.Context(), []string{"user", "add", "bob", "--data-dir", dataDir, "--bcrypt-cost", "10"}, e); err != nil {
		t.Fatalf("user add against a running system: %v", err)
	}
	kv, err := sys.bus.JS.KeyValue(t.Context(), streams.BucketUsers)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.NewUsers(kv, nil).Get(t.Context(), "bob"); err != nil {
		t.Fatalf("the running system does not see bob: %v", err)
	}
	audit, err := sys.bus.JS.Stream(t.Context(), streams.StreamAudit)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := audit.Info(t.Context()); err != nil || info.State.Msgs == 0 {
		t.Fatalf("no audit event of the shell's signup: %v", err)
	}
}

// lockedBuffer is a log sink that tests read while the process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Tail is the last n lines written.
func (l *lockedBuffer) Tail(n int) string {
	s := l.String()
	i := len(s)
	for ; n >= 0 && i > 0; n-- {
		i = strings.LastIndexByte(s[:i], '\n')
		if i < 0 {
			return s
		}
	}
	return s[i+1:]
}

// Issue 11 item 17: a malformed --nats-url fails at start.
func TestNATSURLValidated(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:4222", "nats://:4222", "nats://host:99999", "nats://host:4222/path", "nats://a,", "nats://exa mple:4222"} {
		if _, err := parseRunConfig([]string{"--nats-url", u}, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "--nats-url") {
			t.Errorf("--nats-url %q: %v, want an error naming the flag", u, err)
		}
	}
	if _, err := parseRunConfig([]string{"--nats-url", "nats://a:4222,nats://b:4222,tls://c"}, testEnv(nil)); err != nil {
		t.Errorf("a valid seed list was refused: %v", err)
	}
}

// Issue 11 item 17: with NATS unreachable, HTTP comes up at once, /readyz
// says not ready and why, each failed attempt is logged with its cause, and
// the process gets ready when NATS appears.
func TestUnreachableNATSServesHealth(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port)}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"features"}
	var logged lockedBuffer
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	started := make(chan error, 1)
	var sys *system
	go func() {
		var err error
		sys, err = startSystem(ctx, cfg, slog.New(slog.NewTextHandler(&logged, nil)))
		started <- err
	}()
	// The address appears in the log once HTTP listens.
	var base string
	natstest.WaitFor(t, time.Minute, "http listening", func() bool {
		for _, line := range strings.Split(logged.String(), "\n") {
			if strings.Contains(line, "http listening") {
				base = "http://" + line[strings.Index(line, "addr=")+len("addr="):]
				return true
			}
		}
		return false
	})
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d while NATS is unreachable", code)
	}
	natstest.WaitAtLeast(t, time.Minute, "two failed attempts logged with their cause", 2, func() int {
		return strings.Count(logged.String(), "connection refused")
	})
	code, checks := readyz(t, base)
	if code != http.StatusServiceUnavailable || !strings.Contains(checks["jetstream"], "connection refused") {
		t.Fatalf("/readyz = %d %v, want 503 with the cause", code, checks)
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if err := <-started; err != nil {
		t.Fatalf("start-up once NATS appeared: %v", err)
	}
	defer sys.bus.Close()
	defer sys.server.Close()
	awaitReady(t, base) // once connected
}

// Issue 11 item 2: run on a small store (--nats-max-store) starts with every
// stream bounded within it, and /metrics exports each stream's size and
// bound: every metric the alert rules name.
func TestStreamsBoundedOnSmallStoreAndMetered(t *testing.T) {
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--nats-max-store", "2G"}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"features"}
	sys, err := startSystem(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("run on a 2 GiB store: %v", err)
	}
	defer sys.bus.Close()
	defer sys.server.Close()
	var total int64
	for _, name := range sys.bus.Topology.StreamNames() {
		st, err := sys.bus.JS.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		c := st.CachedInfo().Config
		if c.MaxBytes <= 0 {
			t.Errorf("%s has no MaxBytes", name)
		}
		if c.Storage == 0 { // file
			total += c.MaxBytes
		}
	}
	if total > 2<<30 {
		t.Errorf("the file streams reserve %d bytes of a 2 GiB store", total)
	}
	_, body := get(t, "http://"+sys.Addr()+"/metrics")
	for _, want := range []string{`cryptostream_stream_bytes{stream="AUDIT"}`, `cryptostream_stream_max_bytes{stream="AUDIT"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	rules, err := os.ReadFile("../../deploy/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The stream metrics, which every process exports from its bus; the
	// other roles' metrics are checked against the code in
	// deploy.TestDashboardAndAlertsQueryRegisteredMetrics.
	names := regexp.MustCompile(`cryptostream_stream_[a-z_]+`).FindAllString(string(rules), -1)
	if len(names) == 0 {
		t.Fatal("the alert rules name no stream metric")
	}
	for _, n := range names {
		if !strings.Contains(body, n+"{") {
			t.Errorf("alert rule metric %s is not exported", n)
		}
	}
}

// Issue 9: restarting ingest (alone, with its default of one replica)
// against a cluster whose streams were created with three leaves them at
// three.
func TestIngestRestartKeepsReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster start-up is slow")
	}
	_, urls := natstest.Cluster(t, 3)
	_, js := natstest.ConnectURL(t, urls)
	natstest.WaitProgress(t, time.Minute, "R3 topology", func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		err := streams.Ensure(ctx, js, streams.Declare(3))
		return err == nil, fmt.Sprint(err)
	})
	var r role
	for _, x := range roles() {
		if x.name == "ingest" {
			r = x
		}
	}
	cfg, err := parseRoleConfig(r.name, r.synopsis, r.httpAddr, []role{r}, []string{"--nats-url", urls, "--http-addr", "127.0.0.1:0", "--demo"}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"ingest"}
	var logged lockedBuffer
	sys, err := startSystem(t.Context(), cfg, slog.New(slog.NewJSONHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer sys.bus.Close()
	defer sys.server.Close()
	for _, name := range sys.bus.Topology.StreamNames() {
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("%s has %d replicas after ingest started with one, want 3", name, got)
		}
	}
	if !strings.Contains(logged.String(), `"msg":"topology differs from the declaration","stream":"MARKET","limit":"replicas"`) {
		t.Errorf("no log line says MARKET keeps its replicas:\n%s", logged.String())
	}
}
