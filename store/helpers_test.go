package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/store"
	"cryptostream/streams"
)

// testDB creates a fresh, migrated database on the server at adminURL and
// drops it when the test ends.
func testDB(t testing.TB, adminURL string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), pgtest.Database(t, adminURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(context.Background(), pool); err != nil {
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
	// Synced reports no progress to wait on, so a bound, generous for a
	// busy machine: it guards against a hung test, not the sink's speed.
	natstest.WaitFor(t, 3*time.Minute, "sink caught up", func() bool {
		ok, err := s.Synced(context.Background())
		return err == nil && ok
	})
}
