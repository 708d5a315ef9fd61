package main

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"testing"
)

// helpOf runs `cryptostream <args> --help` and returns what it printed.
func helpOf(t *testing.T, args ...string) string {
	t.Helper()
	e := testEnv(nil)
	if err := run(t.Context(), append(args, "--help"), e); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("%v --help = %v", args, err)
	}
	return e.stderr.(*bytes.Buffer).String()
}

var httpAddrDefault = regexp.MustCompile(`-http-addr string\n[^\n]*\(default "([^"]*)"\)`)

// Issue 9: every role has its own default HTTP port (predictor and sink
// both took :8083), so roles run side by side on one host.
func TestRoleDefaultPortsDistinct(t *testing.T) {
	seen := map[string]string{}
	for _, name := range []string{"ingest", "gateway", "sink", "features", "trainer", "predictor"} {
		m := httpAddrDefault.FindStringSubmatch(helpOf(t, name))
		if m == nil {
			t.Fatalf("%s --help names no --http-addr default", name)
		}
		if other, ok := seen[m[1]]; ok {
			t.Errorf("%s and %s both default to %s", name, other, m[1])
		}
		seen[m[1]] = name
	}
}

// Issue 9: --replicas is one setting for every role and tool that opens
// the bus (ingest and import hard-coded one replica).
func TestReplicasEverywhere(t *testing.T) {
	for _, name := range []string{"run", "ingest", "gateway", "sink", "features", "trainer", "predictor", "import", "user"} {
		if out := helpOf(t, name); !strings.Contains(out, "-replicas int") || !strings.Contains(out, "(env NATS_REPLICAS)") {
			t.Errorf("%s --help has no --replicas (env NATS_REPLICAS)", name)
		}
	}
}

// Issue 11 item 19: `user` takes flags after the name, as its help shows,
// and prints its usage once.
func TestUserFlagsAfterName(t *testing.T) {
	dataDir := t.TempDir()
	e := testEnv(nil)
	stdin = strings.NewReader("ops-password\n")
	t.Cleanup(func() { stdin = os.Stdin })
	if err := run(t.Context(), []string{"user", "add", "ops", "--role", "admin", "--password-stdin", "--data-dir", dataDir, "--bcrypt-cost", "10"}, e); err != nil {
		t.Fatalf("user add NAME --flags: %v", err)
	}
	e.stdout.(*bytes.Buffer).Reset()
	if err := run(t.Context(), []string{"user", "list", "--data-dir", dataDir}, e); err != nil {
		t.Fatal(err)
	}
	if out := e.stdout.(*bytes.Buffer).String(); !regexp.MustCompile(`ops\s+admin`).MatchString(out) {
		t.Fatalf("list = %q, want ops as admin", out)
	}
	for _, args := range [][]string{{"user", "--help"}, {"user", "add", "--help"}} {
		e := testEnv(nil)
		_ = run(t.Context(), args, e)
		if n := strings.Count(e.stderr.(*bytes.Buffer).String(), "Usage: cryptostream user"); n != 1 {
			t.Errorf("%v printed its usage %d times", args, n)
		}
	}
}

// Issue 11 item 19: --demo-speed has an environment variable and the same
// default as krakensim, the demo's start-up log names no real Kraken URL,
// and only a process with the gateway promises a dashboard.
func TestDemoNamingAndHelp(t *testing.T) {
	cfg, err := parseRunConfig([]string{"--demo"}, testEnv(map[string]string{"DEMO_SPEED": "30"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Ingest.DemoSpeed != 30 {
		t.Errorf("DEMO_SPEED=30 gave --demo-speed %v", cfg.Ingest.DemoSpeed)
	}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("starting", "config", cfg)
	if strings.Contains(logged.String(), "kraken.com") {
		t.Errorf("the demo's start-up log names the real Kraken: %s", logged.String())
	}
	speedDefault := regexp.MustCompile(`-(?:demo-)?speed float\n[^\n]*\(default ([0-9.]+)\)`)
	runSpeed := speedDefault.FindStringSubmatch(helpOf(t, "run"))
	simSpeed := speedDefault.FindStringSubmatch(helpOf(t, "krakensim"))
	if runSpeed == nil || simSpeed == nil || runSpeed[1] != simSpeed[1] {
		t.Errorf("run --demo-speed default %v, krakensim --speed default %v: want one default", runSpeed, simSpeed)
	}
	if !strings.Contains(helpOf(t, "run"), "(env DEMO_SPEED)") {
		t.Error("run --help names no DEMO_SPEED")
	}
	for _, name := range []string{"features", "trainer", "predictor", "sink", "ingest"} {
		if strings.Contains(helpOf(t, name), "dashboard") {
			t.Errorf("%s --help promises a dashboard it does not serve", name)
		}
	}
	if !strings.Contains(helpOf(t, "gateway"), "dashboard") {
		t.Error("gateway --help does not say it serves the dashboard")
	}
}
