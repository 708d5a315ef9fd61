package backtest_test

import (
	"context"
	"testing"
	"time"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestRepublishSpeed: at 100 times market speed the replay waits a
// hundredth of the time between two candles' starts, a gap included, on
// the clock it is given; a second sandbox under the same prefix is
// refused.
func TestRepublishSpeed(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 5800)[5740:]
	for i := range cs {
		if _, err := streams.Publish(ctx, js, &cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := backtest.CreateSandbox(ctx, js, "speed", 1); err != nil {
		t.Fatal(err)
	}
	var waited []time.Duration
	n, err := backtest.Republish{From: cs[0].Start, To: cs[len(cs)-1].Start, Prefix: "speed", Speed: 100,
		Sleep: func(_ context.Context, d time.Duration) error { waited = append(waited, d); return nil }}.Run(ctx, js)
	if err != nil || n != len(cs) || len(waited) != len(cs)-1 {
		t.Fatalf("%d of %d republished, %d waits: %v", n, len(cs), len(waited), err)
	}
	for i, d := range waited {
		if want := cs[i+1].Start.Sub(cs[i].Start) / 100; d != want {
			t.Fatalf("wait %d: %s, want %s", i, d, want)
		}
	}
	if err := backtest.CreateSandbox(ctx, js, "speed", 1); err == nil {
		t.Fatal("a second sandbox under the same prefix was created")
	}
	if err := backtest.RemoveSandbox(ctx, js, "speed"); err != nil {
		t.Fatal(err)
	}
}
