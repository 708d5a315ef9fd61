package main

import (
	"bytes"
	"errors"
	"flag"
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
