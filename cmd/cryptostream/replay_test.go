package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

func streamCounts(t *testing.T, js jetstream.JetStream) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for name := range js.StreamNames(t.Context()).Name() {
		st, err := js.Stream(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out[name] = info.State.Msgs
	}
	return out
}

// TestReplayIntoSandbox: a replay fills its own streams under the prefix
// with the range's candles, leaves every live stream's message count as
// it was, and is gone once the command ends.
func TestReplayIntoSandbox(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 400)
	for i := range cs {
		if _, err := streams.Publish(ctx, js, &cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	before := streamCounts(t, js)
	from, to := cs[100].Start, cs[299].Start
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	e := testEnv(nil)
	go func() {
		done <- cmdReplay(rctx, []string{"--nats-url", s.ClientURL(), "--log-level", "error", "--prefix", "try-1",
			"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339)}, e)
	}()
	sandbox := streams.SandboxStream("try-1", streams.StreamMarket)
	natstest.WaitProgress(t, time.Minute, "the sandbox's candles", func() (bool, string) {
		select {
		case err := <-done:
			t.Fatalf("replay ended early: %v", err)
		default:
		}
		n := streamCounts(t, js)[sandbox]
		return n == 200, fmt.Sprint(n)
	})
	after := streamCounts(t, js)
	for name, n := range before {
		if after[name] != n {
			t.Errorf("live stream %s: %d messages, %d before the replay", name, after[name], n)
		}
	}
	st, _ := js.Stream(ctx, sandbox)
	m, err := st.GetLastMsgForSubject(ctx, streams.SandboxSubject("try-1", streams.CandleSubject(streams.Interval1m, "BTC/USD")))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := streams.Decode[streams.Candle](m.Data); err != nil || !c.Start.Equal(to) {
		t.Fatalf("last sandbox candle %+v (%v), want the one at %s", c, err, to)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{streams.StreamMarket, streams.StreamFeatures, streams.StreamPredictions, streams.StreamAlerts} {
		if _, err := js.Stream(ctx, streams.SandboxStream("try-1", name)); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("sandbox stream of %s after the replay: %v", name, err)
		}
	}
	if got := streamCounts(t, js); len(got) != len(before) {
		t.Errorf("streams after: %v, before: %v", got, before)
	}

	// A live root as a prefix is refused before anything is created.
	if err := cmdReplay(ctx, []string{"--nats-url", s.ClientURL(), "--prefix", "market", "--from", "2023-03-01", "--to", "2023-03-02", "--exit"}, testEnv(nil)); !errors.Is(err, streams.ErrBadPrefix) {
		t.Fatalf("prefix market: %v", err)
	}
}
