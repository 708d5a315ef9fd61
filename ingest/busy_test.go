package ingest_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

// stallingSink makes some publishes take longer than the worker's
// ReadTimeout, as a loaded bus does.
type stallingSink struct {
	ingest.Sink
	stall time.Duration
	// after publishes, every third of the next 3*stallings stalls.
	after, stallings int64
	n                atomic.Int64
}

func (s *stallingSink) PublishCandle(ctx context.Context, c streams.Candle) error {
	if n := s.n.Add(1) - s.after; n > 0 && n%3 == 0 && n/3 <= s.stallings {
		select {
		case <-time.After(s.stall):
		case <-ctx.Done():
		}
	}
	return s.Sink.PublishCandle(ctx, c)
}

// A session whose loop is busy publishing for longer than ReadTimeout, while
// the server keeps sending, keeps its connection: the frames waiting to be
// handled prove the server alive. Judged by the last frame handled, each
// stall was taken for a dead connection, and under load the reconnect's
// heal stalled the next session again (TestDemoThenRealRestart waited for
// live minutes that never came).
func TestBusySessionKeepsItsConnection(t *testing.T) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 120, MaxUpdatesPerCandle: 2, Heartbeat: 50 * time.Millisecond})
	h.addAsset(t, "BTC/USD")
	sink := &stallingSink{Sink: &ingest.JetStreamSink{JS: h.js}, stall: time.Second, after: 720, stallings: 4}
	reg := h.startWorkerWith(t, ingest.Config{ReadTimeout: 250 * time.Millisecond, SubscribePace: 10 * time.Millisecond,
		RESTInterval: time.Millisecond, HealRetry: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond}, sink)

	natstest.WaitAtLeast(t, time.Minute, "candles published past the stalls", sink.after+3*sink.stallings+3, func() int64 { return sink.n.Load() })
	if n := opstest.Value(t, reg, "cryptostream_ingest_reconnects_total", map[string]string{"interval": "1m"}); n != 0 || h.sim.Connections() != 1 {
		t.Fatalf("%v reconnects, %d connections to the exchange: a busy loop was taken for a silent server", n, h.sim.Connections())
	}
}
