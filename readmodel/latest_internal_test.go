package readmodel

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// Ready counts what the consumer delivered but Latest has not applied: the
// ordered consumer pulls hundreds of messages at a time, so with the
// callback behind, the server's NumPending is 0 while the view is 50
// candles old. Held here at the callback, deterministically.
func TestLatestNotReadyWhileDeliveriesWait(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 51)
	if _, err := streams.Publish(t.Context(), js, &btc[0]); err != nil {
		t.Fatal(err)
	}
	var hold atomic.Bool
	release := make(chan struct{})
	testHookDeliver = func(stream string) {
		if stream == streams.StreamMarket && hold.Load() {
			<-release
		}
	}
	reg := prometheus.NewRegistry()
	l := NewLatest(js, NewJetStream(js), LatestConfig{MaxLag: 10, SampleEvery: time.Hour, Metrics: reg})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	t.Cleanup(func() {
		hold.Store(false)
		select {
		case <-release:
		default:
			close(release)
		}
		cancel()
		<-done
		testHookDeliver = nil
	})
	natstest.WaitFor(t, 30*time.Second, "the view to be ready", func() bool { return l.Ready(t.Context()) == nil })

	hold.Store(true)
	var last uint64
	for i := 1; i <= 50; i++ {
		ack, err := streams.Publish(t.Context(), js, &btc[i])
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	l.candles.mu.RLock()
	cons := l.candles.cons
	l.candles.mu.RUnlock()
	natstest.WaitFor(t, 30*time.Second, "the server to deliver every candle", func() bool {
		info, err := cons.Info(t.Context())
		return err == nil && info.NumPending == 0 && info.Delivered.Stream == last
	})
	err := l.Ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "not yet applied") {
		t.Fatalf("Ready with 50 candles delivered and none applied: %v", err)
	}
	if lag := testutil.ToFloat64(l.candles.met.pending); lag < 49 {
		t.Fatalf("lag gauge %v, want at least 49", lag)
	}
	hold.Store(false)
	close(release)
	natstest.WaitFor(t, 30*time.Second, "the view to be ready again", func() bool { return l.Ready(t.Context()) == nil })
	if c, _ := l.Delivered(); c != last {
		t.Fatalf("ready with candles applied up to %d, want %d", c, last)
	}
	if n := testutil.ToFloat64(l.candles.met.updates); n != 51 {
		t.Fatalf("%v updates counted, want 51", n)
	}
}
