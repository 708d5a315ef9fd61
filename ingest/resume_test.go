package ingest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

// TestResumeAfterFutureCandle (issue 11 item 9): MARKET holds, after a
// valid candle, a candle dated 2031 and a message that does not decode, as
// an import before future candles were refused left them. The ingester
// must resume after the valid candle and store live candles again, not
// wait for 2031 in silence.
func TestResumeAfterFutureCandle(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 600, MaxUpdatesPerCandle: 2, Heartbeat: 100 * time.Millisecond})
	ctx := t.Context()
	subj := streams.CandleSubject(streams.Interval1m, "BTC/USD")
	good := expectedGrid(t, feed)[h.sim.Start().Add(-10*time.Minute)]
	good.Schema.V, good.Quality = streams.SchemaVersion, streams.QualityImported
	if good.Start.IsZero() {
		t.Fatal("no recorded candle ten minutes before the replay start")
	}
	future := good
	future.Start = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range []any{good, future} {
		b, err := json.Marshal(v) // past validation, as an old import wrote it
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: []byte("{not json")}); err != nil {
		t.Fatal(err)
	}
	last, ok := h.lastStored(t, streams.Interval1m, "BTC/USD")
	if !ok || !last.Start.Equal(good.Start) {
		t.Fatalf("resume point %v (found %v), want the valid candle at %s", last.Start, ok, good.Start)
	}

	h.addAsset(t, "BTC/USD")
	reg := h.startWorker(t, ingest.Config{SubscribePace: 10 * time.Millisecond, RESTInterval: time.Millisecond,
		HealRetry: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond})
	natstest.WaitAtLeast(t, time.Minute, "live candles after the future one", 3, func() float64 {
		return opstest.Value(t, reg, "cryptostream_ingest_candles_published_total", map[string]string{"quality": "live"})
	})
	last, _ = h.lastStored(t, streams.Interval1m, "BTC/USD")
	if !last.Start.After(h.sim.Start()) || last.Start.Year() != h.sim.Start().Year() {
		t.Errorf("newest stored candle %s, want one of the replay after %s", last.Start, h.sim.Start())
	}
}

// TestStreamBehindStored (issue 11 item 15): when the stored series is far
// ahead of what the exchange streams (a demo replay restarted on its own
// data), the ingester stores nothing new until the stream passes it, and
// says so instead of staying silent.
func TestStreamBehindStored(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 600, MaxUpdatesPerCandle: 2, Heartbeat: 100 * time.Millisecond})
	ahead := expectedGrid(t, feed)[h.sim.Start().Add(5*24*time.Hour)]
	if ahead.Start.IsZero() {
		t.Fatal("no recorded candle five days after the replay start")
	}
	ahead.Schema.V, ahead.Quality = streams.SchemaVersion, streams.QualityLive
	msg, err := streams.NewMsg(&ahead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.PublishMsg(t.Context(), msg); err != nil {
		t.Fatal(err)
	}
	h.addAsset(t, "BTC/USD")
	reg := h.startWorker(t, ingest.Config{SubscribePace: 10 * time.Millisecond, RESTInterval: time.Millisecond,
		HealRetry: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond})
	natstest.WaitFor(t, time.Minute, "the stream reported behind the stored series", func() bool {
		return opstest.Value(t, reg, "cryptostream_ingest_rejected_total", map[string]string{"reason": "stale"}) >= 1
	})
	if last, _ := h.lastStored(t, streams.Interval1m, "BTC/USD"); !last.Start.Equal(ahead.Start) {
		t.Errorf("stored %s behind the newest candle %s", last.Start, ahead.Start)
	}
}
