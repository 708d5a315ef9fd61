package ingest_test

import (
	"testing"
	"time"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// TestSeveralIntervals runs 1m and 5m on their own connections (Kraken
// allows one ohlc interval per symbol per connection) and checks every 5m
// candle against the 1m recording rolled up, as Kraken's own 5m file is.
func TestSeveralIntervals(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 3000, MaxUpdatesPerCandle: 3, Heartbeat: 100 * time.Millisecond})
	h.addAsset(t, "BTC/USD")
	h.startWorker(t, ingest.Config{Intervals: []streams.Interval{streams.Interval1m, streams.Interval5m},
		SubscribePace: 10 * time.Millisecond, RESTInterval: time.Millisecond, HealRetry: 50 * time.Millisecond})
	natstest.WaitProgress(t, time.Minute, "an hour of live 5m candles", func() (bool, string) {
		c, ok := h.lastStored(t, streams.Interval5m, "BTC/USD")
		return ok && c.Start.After(h.sim.Start().Add(time.Hour)), c.Start.String()
	})
	if h.sim.Connections() != 2 {
		t.Errorf("%d connections, want one per interval", h.sim.Connections())
	}
	one := expectedGrid(t, feed)
	got := h.stored(t, streams.Interval5m, "BTC/USD")
	live := 0
	for _, c := range got {
		var want streams.Candle
		n := 0
		for m := 0; m < 5; m++ {
			r, ok := one[c.Start.Add(time.Duration(m)*time.Minute)]
			if !ok || r.Quality == streams.QualityFilled {
				continue
			}
			if n == 0 {
				want = r
			} else {
				want.High, want.Low = max(want.High, r.High), min(want.Low, r.Low)
				want.Close, want.Volume, want.Trades = r.Close, want.Volume+r.Volume, want.Trades+r.Trades
			}
			n++
		}
		if n == 0 {
			if c.Quality != streams.QualityFilled {
				t.Errorf("5m %s has no trades in the recording but is %s", c.Start, c.Quality)
			}
			continue
		}
		if c.Open != want.Open || c.High != want.High || c.Low != want.Low || c.Close != want.Close || c.Trades != want.Trades ||
			c.Volume-want.Volume > 1e-9 || want.Volume-c.Volume > 1e-9 {
			t.Errorf("5m %s (%s) = %+v, rolled-up 1m = %+v", c.Start, c.Quality, c, want)
		}
		if c.Quality == streams.QualityLive {
			live++
		}
	}
	if live < 10 {
		t.Errorf("only %d live 5m candles of %d", live, len(got))
	}
}
