// Package pgtest owns the PostgreSQL servers tests run against: a fresh
// database per test on the shared server (the one scripts/test.sh found or
// started), and a private server of a test's own that it may stop and start
// to stage an outage without disturbing anyone else.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// AdminURL is the shared server: $CRYPTOSTREAM_TEST_DATABASE_URL, set by
// scripts/test.sh, or the local trust-auth default.
func AdminURL() string {
	if u := os.Getenv("CRYPTOSTREAM_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Database creates a fresh database on the server at adminURL, returns its
// URL, and drops it when the test ends, so parallel packages never collide.
// A server that does not answer fails the test: the suite must not pass by
// skipping what it cannot reach.
func Database(t testing.TB, adminURL string) string {
	t.Helper()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL at %s (scripts/test.sh starts or installs one): %v", redact(adminURL), err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("cs_test_%d_%x", os.Getpid(), rand.Uint64())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), adminURL)
		if err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("pgtest: admin url: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(unparseable url)"
}

// Server is a private PostgreSQL in a temp dir on a free loopback port.
type Server struct {
	bin, dir, log string
	port          int
}

// PrivateServer initialises and starts a server of the test's own; it is
// stopped when the test ends. The binaries come from $CRYPTOSTREAM_PG_BIN or
// the newest /usr/lib/postgresql/*/bin.
func PrivateServer(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv("CRYPTOSTREAM_PG_BIN")
	if bin == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		if len(dirs) > 0 {
			bin = dirs[len(dirs)-1]
		}
	}
	if _, err := os.Stat(filepath.Join(bin, "pg_ctl")); bin == "" || err != nil {
		t.Fatal("pgtest: no PostgreSQL server binaries (initdb, pg_ctl); scripts/test.sh installs them")
	}
	dir, err := os.MkdirTemp("", "cs-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// As root, initdb must run as postgres, which must own the directory.
	if os.Geteuid() == 0 {
		if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
			t.Fatalf("pgtest: chown: %v: %s", err, out)
		}
	}
	s := &Server{bin: bin, dir: filepath.Join(dir, "data"), log: filepath.Join(dir, "log"), port: freePort(t)}
	s.run(t, "initdb", "-D", s.dir, "-A", "trust", "-U", "postgres", "--no-sync")
	s.Start(t)
	t.Cleanup(func() { s.ctl(t, "stop", "-m", "immediate") })
	return s
}

// URL is the server's postgres database.
func (s *Server) URL() string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(s.port) + "/postgres?sslmode=disable"
}

// Start starts the server (again) and waits until it accepts connections.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	s.ctl(t, "start", "-l", s.log, "-o",
		fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", s.port, filepath.Dir(s.dir)))
}

// Stop stops the server, closing every connection to it.
func (s *Server) Stop(t testing.TB) { s.ctl(t, "stop", "-m", "fast") }

func (s *Server) ctl(t testing.TB, args ...string) {
	t.Helper()
	s.run(t, "pg_ctl", append([]string{"-D", s.dir, "-w", "-t", "60"}, args...)...)
}

func (s *Server) run(t testing.TB, cmd string, args ...string) {
	t.Helper()
	c := exec.Command(filepath.Join(s.bin, cmd), args...)
	if os.Geteuid() == 0 { // initdb and pg_ctl refuse to run as root
		c = exec.Command("runuser", append([]string{"-u", "postgres", "--", c.Path}, args...)...)
	}
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: %s %s: %v: %s", cmd, strings.Join(args, " "), err, out)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
