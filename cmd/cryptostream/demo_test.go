package main

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// runUntil starts run's composition with args and waits until cond holds
// on the newest stored BTC/USD minute, then stops it.
func runUntil(t *testing.T, args []string, what string, cond func(streams.Candle) bool) {
	t.Helper()
	ctx := t.Context()
	sys, stop := startTestSystemArgs(t, args...)
	market, err := sys.bus.JS.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, what, func() bool {
		m, err := market.GetLastMsgForSubject(ctx, streams.CandleSubject(streams.Interval1m, "BTC/USD"))
		if err != nil {
			return false
		}
		c, err := streams.Decode[streams.Candle](m.Data)
		return err == nil && cond(c)
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
}

// TestDemoThenRealRestart (issue 11 item 15): after `run --demo
// --demo-speed 120`, a normal restart on the same data dir ingests again:
// the demo stored no candle from the future to block it. The "real"
// Kraken is krakensim in real time, shifted to the present.
func TestDemoThenRealRestart(t *testing.T) {
	dir := t.TempDir()
	// Twenty live minutes take ten seconds at 120x: a replay that started
	// at the present would be well ahead of the clock by then.
	var firstLive time.Time
	runUntil(t, []string{"--data-dir", dir, "--demo", "--demo-speed", "120"}, "twenty live demo minutes", func(c streams.Candle) bool {
		if c.Start.After(time.Now().Add(streams.MaxClockSkew)) {
			t.Fatalf("the demo stored a candle from the future: %s", c.Start)
		}
		if c.Quality != streams.QualityLive {
			return false
		}
		if firstLive.IsZero() {
			firstLive = c.Start
		}
		return c.Start.Sub(firstLive) >= 20*time.Minute
	})

	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 1, Shift: true})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim)
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { sim.Run(simCtx); close(simDone) }()
	t.Cleanup(func() { stopSim(); hs.CloseClientConnections(); hs.Close(); <-simDone })

	ws := "ws" + strings.TrimPrefix(hs.URL, "http") + "/v2"
	runUntil(t, []string{"--data-dir", dir, "--kraken-ws-url", ws, "--kraken-rest-url", hs.URL}, "candles of the present after the demo",
		func(c streams.Candle) bool { return time.Since(c.Start) < 10*time.Minute })
}
