package store_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/store"
	"cryptostream/streams"
)

// sharedPostgres is the server every test database is created on.
const sharedPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// testDB creates a fresh, migrated database on the server at adminURL and
// drops it when the test ends, so parallel packages never collide.
func testDB(t testing.TB, adminURL string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin, err := pgxpool.New(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	name := fmt.Sprintf("cs_store_%d_%x", os.Getpid(), rand.Uint64())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Skipf("no PostgreSQL at %s (%v): start one, e.g. scripts or apt's postgresql", adminURL, err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", name, err)
		}
	})
	cfg, err := pgxpool.ParseConfig(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// bus starts an embedded JetStream with the topology.
func bus(t testing.TB) jetstream.JetStream {
	t.Helper()
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(context.Background(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return js
}

// runSink starts a sink in the background and stops it when the test ends.
func runSink(t testing.TB, js jetstream.JetStream, db *pgxpool.Pool, reg prometheus.Registerer) *store.Sink {
	t.Helper()
	s, err := store.New(store.Config{RetryMax: 500 * time.Millisecond}, store.Deps{Bus: js, DB: db, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sink: %v", err)
		}
	})
	return s
}

// waitSynced waits until the sink has settled everything published so far.
func waitSynced(t testing.TB, s *store.Sink) {
	t.Helper()
	natstest.WaitFor(t, 3*time.Minute, "sink caught up", func() bool {
		ok, err := s.Synced(context.Background())
		return err == nil && ok
	})
}

// privatePostgres is a PostgreSQL server of the test's own, which the test
// may stop and start without disturbing anyone else's.
type privatePostgres struct {
	bin, dir, log string
	port          int
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: the outage test needs initdb and pg_ctl")
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		t.Skip("runuser not found: initdb refuses to run as root")
	}
	dir, err := os.MkdirTemp("", "cs-store-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &privatePostgres{bin: filepath.Dir(bins[0]), dir: filepath.Join(dir, "data"), log: filepath.Join(dir, "log"), port: freePort(t)}
	if out, err := exec.Command("chown", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	p.run(t, "initdb", "-D", p.dir, "-A", "trust", "-U", "postgres", "--no-sync")
	p.start(t)
	t.Cleanup(func() { p.ctl(t, "stop", "-m", "immediate") })
	return p
}

func (p *privatePostgres) url() string {
	return "postgres://postgres@127.0.0.1:" + strconv.Itoa(p.port) + "/postgres?sslmode=disable"
}

func (p *privatePostgres) run(t testing.TB, cmd string, args ...string) {
	t.Helper()
	out, err := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, cmd)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", cmd, args, err, out)
	}
}

func (p *privatePostgres) ctl(t testing.TB, args ...string) {
	t.Helper()
	p.run(t, "pg_ctl", append([]string{"-D", p.dir, "-w", "-t", "60"}, args...)...)
}

func (p *privatePostgres) start(t testing.TB) {
	t.Helper()
	p.ctl(t, "start", "-l", p.log, "-o",
		fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", p.port, filepath.Dir(p.dir)))
}

func (p *privatePostgres) stop(t testing.TB) { p.ctl(t, "stop", "-m", "fast") }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
