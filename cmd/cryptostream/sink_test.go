package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/pgtest"
	"cryptostream/streams"
)

// testDatabase creates a database for this test on the shared PostgreSQL
// and returns its URL; it is dropped when the test ends.
func testDatabase(t *testing.T) string {
	t.Helper()
	return pgtest.Database(t, pgtest.AdminURL())
}

func countCandles(t *testing.T, url string) int {
	t.Helper()
	db, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM candles").Scan(&n); err != nil {
		return -1
	}
	return n
}

func TestSinkRebuild(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	for _, c := range datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 500) {
		if _, err := streams.Publish(t.Context(), js, &c); err != nil {
			t.Fatal(err)
		}
	}
	dbURL := testDatabase(t)
	for range 2 { // a second rebuild starts from empty again
		// The connection's callbacks log from their own goroutine while
		// the progress bar writes: the buffer must take both.
		var out lockedBuffer
		e := &env{stdout: &out, stderr: &out, getenv: func(string) string { return "" }}
		args := []string{"sink", "--rebuild", "--nats-url", s.ClientURL(), "--database-url", dbURL, "--http-addr", "127.0.0.1:0", "--log-format", "text"}
		if err := run(t.Context(), args, e); err != nil {
			t.Fatalf("sink --rebuild: %v\n%s", err, out.String())
		}
		if n := countCandles(t, dbURL); n != 500 {
			t.Fatalf("after rebuild: %d candles, want 500", n)
		}
		if !strings.Contains(out.String(), "replaying streams into PostgreSQL") {
			t.Fatalf("no progress bar in the output:\n%s", out.String())
		}
	}
}

func TestRunWithDatabaseRunsTheSink(t *testing.T) {
	dbURL := testDatabase(t)
	cfg, err := parseRunConfig([]string{"--http-addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--database-url", dbURL}, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Roles = []string{"sink"}
	ctx, cancel := context.WithCancel(t.Context())
	sys, err := startSystem(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sys.Run(ctx) }()
	defer func() {
		cancel()
		if err := awaitStopped(t, done, cfg.ShutdownTimeout); err != nil {
			t.Error(err)
		}
	}()
	if _, ok := sys.workers["sink"]; !ok || sys.reader == nil {
		t.Fatal("--database-url did not add the sink and the SQL reader")
	}
	c := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 1)[0]
	if _, err := streams.Publish(t.Context(), sys.bus.JS, &c); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "candle projected", func() bool { return countCandles(t, dbURL) == 1 })
	got, err := sys.reader.LatestCandle(t.Context(), "BTC/USD", streams.Interval1m)
	if err != nil || !got.Start.Equal(c.Start) {
		t.Fatalf("LatestCandle from PostgreSQL = %+v, %v", got, err)
	}
}
