// Package natstest owns the embedded NATS servers that tests run against: a
// single JetStream server on a random port and a temp dir, or a three-node
// JetStream cluster in one process.
package natstest

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxStore is the test servers' JetStream store limit. The topology's
// MaxBytes bounds are reservations that a single server checks against
// its limit, which by default is three quarters of the free disk: fixed
// here so that a test does not fail on a machine with a small disk.
// Tests store little.
const MaxStore = 1 << 40

// Server starts a JetStream server on a random loopback port with its store
// in a temp dir, and shuts it down when the test ends.
func Server(t testing.TB) *server.Server {
	t.Helper()
	return ServerAt(t, t.TempDir())
}

// ServerAt starts a server on storeDir, so that a test can restart a server
// on the same data.
func ServerAt(t testing.TB, storeDir string) *server.Server {
	t.Helper()
	return Start(t, &server.Options{
		Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: storeDir, JetStreamMaxStore: MaxStore,
	})
}

// Start starts a server with opts, such as those a config file gives
// (server.ProcessConfigFile), quiet and without signal handlers, and
// shuts it down when the test ends.
func Start(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("natstest: new server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("natstest: server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// Connect opens a connection and a JetStream context to s, closed when the
// test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, s.ClientURL())
}

// ConnectURL is Connect for any URL (a cluster's seed list, say).
func ConnectURL(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("natstest: connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	return nc, js
}

// Cluster starts n JetStream servers clustered on loopback random ports and
// waits until they have a meta leader. It returns the servers and a client
// URL list naming all of them.
func Cluster(t testing.TB, n int) ([]*server.Server, string) {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	servers := make([]*server.Server, n)
	var urls string
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), JetStreamMaxStore: MaxStore,
			NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("natstest: cluster server %d: %v", i, err)
		}
		go s.Start()
		servers[i] = s
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
	}
	for i, s := range servers {
		if !s.ReadyForConnections(20 * time.Second) {
			t.Fatalf("natstest: cluster server %d not ready", i)
		}
		if urls != "" {
			urls += ","
		}
		urls += s.ClientURL()
	}
	// A meta leader alone is not enough: until it has heard every peer's
	// stats it refuses R3 placements with "no suitable peers", which a
	// busy machine made tests trip on.
	WaitFor(t, 30*time.Second, "cluster meta leader with every peer online", func() bool {
		for _, s := range servers {
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == n {
				return true
			}
		}
		return false
	})
	return servers, urls
}

// WaitFor polls cond until it holds or the bound passes. The bound is a
// guard against a hung test, not an assertion about speed. It is for a
// single state flip that has nothing to measure on the way; where the
// condition has a count or a state that moves, WaitProgress or
// WaitAtLeast fail only when it stops moving, which a busy machine does not
// mistake for a failure.
func WaitFor(t testing.TB, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("natstest: gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// WaitProgress polls until cond reports done, and fails only when the
// progress it reports (a count of messages, a state) has not changed for
// stall: a busy machine slows a test down, which a wall-clock deadline
// takes for a failure; only a stalled test is one.
//
// The progress must measure the way towards done: a count that grows
// without bringing done closer (the last stored sequence, while what is
// stored is never what cond wants) never stalls, and the wait would sit
// until go test's -timeout killed the binary with nothing said but every
// goroutine's stack. So a wait still going close to the test's deadline
// fails, naming what it waited for and where it got to, while the test's
// cleanups still have time to run and say what the system did.
func WaitProgress(t testing.TB, stall time.Duration, what string, cond func() (done bool, progress string)) {
	t.Helper()
	deadline, bounded := Deadline(t)
	last, since := "", time.Now()
	for {
		done, progress := cond()
		if done {
			return
		}
		if progress != last {
			last, since = progress, time.Now()
		} else if time.Since(since) > stall {
			t.Fatalf("natstest: no progress towards %s for %s (stuck at %q)", what, stall, progress)
		}
		if bounded && time.Now().After(deadline) {
			t.Fatalf("natstest: %s not reached before the test's deadline, though the progress kept changing (last %q, for %s): it does not measure the way to the goal",
				what, progress, time.Since(since).Round(time.Millisecond))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// deadlineMargin is what a wait leaves of go test's -timeout when it gives
// up: time for the test's cleanups (stopping its system, printing its log)
// before the binary is killed.
const deadlineMargin = time.Minute

// Deadline is when a wait gives up for the test's deadline: a margin
// before go test's -timeout, if it has one. A wait with nothing to measure
// (a read that blocks, a command that waits for its job) takes it as its
// bound, so that it fails with what it waited for instead of hanging.
func Deadline(t testing.TB) (time.Time, bool) {
	d, ok := t.(interface{ Deadline() (time.Time, bool) })
	if !ok {
		return time.Time{}, false
	}
	deadline, ok := d.Deadline()
	return deadline.Add(-deadlineMargin), ok
}

// WaitAtLeast waits until get reaches want, and fails only when the value
// has not changed for stall: for a count of messages or outputs that grows
// as the code under test works, however slowly a busy machine lets it.
func WaitAtLeast[N cmp.Ordered](t testing.TB, stall time.Duration, what string, want N, get func() N) {
	t.Helper()
	WaitProgress(t, stall, what, func() (bool, string) {
		n := get()
		return n >= want, fmt.Sprint(n)
	})
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("natstest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StreamLeader waits until stream has a leader on the cluster of servers
// and returns its server, for a test that stops it.
func StreamLeader(t testing.TB, js jetstream.JetStream, servers []*server.Server, stream string) *server.Server {
	t.Helper()
	var leader string
	WaitFor(t, time.Minute, stream+"'s leader", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		info, err := st.Info(ctx)
		if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
			return false
		}
		leader = info.Cluster.Leader
		return true
	})
	for _, s := range servers {
		if s.Name() == leader {
			return s
		}
	}
	t.Fatalf("natstest: no server named %q", leader)
	return nil
}
