package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/streams"
)

// startLatest runs a Latest over the JetStream reader until the test ends.
func startLatest(t *testing.T, js jetstream.JetStream, inner readmodel.Reader) *readmodel.Latest {
	t.Helper()
	return startLatestWith(t, js, inner, readmodel.LatestConfig{})
}

func startLatestWith(t *testing.T, js jetstream.JetStream, inner readmodel.Reader, cfg readmodel.LatestConfig) *readmodel.Latest {
	t.Helper()
	if inner == nil {
		inner = readmodel.NewJetStream(js)
	}
	l := readmodel.NewLatest(js, inner, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// syncLatest waits until l has applied the last candle and the last
// prediction stored, and read its first delivery through.
func syncLatest(t *testing.T, js jetstream.JetStream, l *readmodel.Latest) {
	t.Helper()
	want := func(stream, filter string) uint64 {
		st, err := js.Stream(t.Context(), stream)
		if err != nil {
			t.Fatal(err)
		}
		m, err := st.GetLastMsgForSubject(t.Context(), filter)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return m.Sequence
	}
	wc, wp := want(streams.StreamMarket, streams.CandleFilter(0, "")), want(streams.StreamPredictions, streams.PredictionFilter())
	natstest.WaitProgress(t, 30*time.Second, "the latest cache to catch up", func() (bool, string) {
		c, p := l.Delivered()
		return l.Synced() && c >= wc && p >= wp, fmt.Sprintf("synced %v, candles %d of %d, predictions %d of %d", l.Synced(), c, wc, p, wp)
	})
}

// The contract: Latest in front of the JetStream reader answers exactly as
// the reader does, once it has delivered what was stored.
func TestLatestReaderContract(t *testing.T) {
	readmodeltest.Run(t, func(t *testing.T) readmodeltest.Setup {
		_, js := ensured(t)
		l := startLatest(t, js, nil)
		return readmodeltest.Setup{JS: js, Reader: l, Sync: func(t *testing.T) { syncLatest(t, js, l) }}
	})
}

// ensured is a server with the topology declared and a JetStream on it.
func ensured(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return s, js
}

func publish(t *testing.T, js jetstream.JetStream, cs ...streams.Candle) {
	t.Helper()
	for i := range cs {
		if _, err := streams.Publish(t.Context(), js, &cs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func latestClose(t *testing.T, r readmodel.Reader) (time.Time, float64) {
	t.Helper()
	c, err := r.LatestCandle(t.Context(), "BTC/USD", streams.Interval1m)
	if err != nil {
		t.Fatal(err)
	}
	return c.Start, c.Close
}

// A candle stored is served once delivered; a revision of the newest
// replaces it; a late backfill of an older minute never displaces the
// newest.
func TestLatestFollowsTheStream(t *testing.T) {
	_, js := ensured(t)
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 12)
	publish(t, js, btc[:5]...)
	l := startLatest(t, js, nil)
	syncLatest(t, js, l)
	if start, _ := latestClose(t, l); !start.Equal(btc[4].Start) {
		t.Fatalf("after the start: latest %s, want %s", start, btc[4].Start)
	}

	publish(t, js, btc[10])
	syncLatest(t, js, l)
	if start, _ := latestClose(t, l); !start.Equal(btc[10].Start) {
		t.Fatalf("after a newer candle: latest %s, want %s", start, btc[10].Start)
	}

	// A backfill of the minutes in between, stored after the newest.
	publish(t, js, btc[5:10]...)
	syncLatest(t, js, l)
	if start, _ := latestClose(t, l); !start.Equal(btc[10].Start) {
		t.Fatalf("after a backfill: latest %s, want %s still", start, btc[10].Start)
	}

	rev := btc[10]
	rev.Close += 1
	rev.Quality = streams.QualityBackfilled
	readmodeltest.PublishRevision(t, js, rev)
	syncLatest(t, js, l)
	if start, cl := latestClose(t, l); !start.Equal(rev.Start) || cl != rev.Close {
		t.Fatalf("after a revision: latest %s close %v, want %s close %v", start, cl, rev.Start, rev.Close)
	}
}

// When the last message stored on a subject is a backfill of an older
// minute, the last-per-subject start delivers it; the first answer must
// still be the newest minute, as the wrapped reader's is.
func TestLatestStartsOnTheNewestNotTheLastStored(t *testing.T) {
	_, js := ensured(t)
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 6)
	publish(t, js, btc[5])
	publish(t, js, btc[:5]...)
	l := startLatest(t, js, nil)
	syncLatest(t, js, l)
	for range 2 {
		if start, _ := latestClose(t, l); !start.Equal(btc[5].Start) {
			t.Fatalf("latest %s, want %s (the last stored is %s)", start, btc[5].Start, btc[4].Start)
		}
	}
}

// countingReader counts the questions that reach the wrapped reader.
type countingReader struct {
	readmodel.Reader
	n atomic.Int64
}

func (c *countingReader) LatestCandle(ctx context.Context, sym string, iv streams.Interval) (streams.Candle, error) {
	c.n.Add(1)
	return c.Reader.LatestCandle(ctx, sym, iv)
}

// Once synced, answers cost no message on the connection: the wrapped
// reader is asked once per series, and an unknown series is answered from
// memory too.
func TestLatestAnswersWithoutARoundTrip(t *testing.T) {
	s, js := ensured(t)
	nc, rjs := natstest.Connect(t, s)
	publish(t, js, datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 5)...)
	inner := &countingReader{Reader: readmodel.NewJetStream(rjs)}
	// No lag sample or sweep (a request each) during the count.
	l := startLatestWith(t, rjs, inner, readmodel.LatestConfig{SampleEvery: time.Hour})
	syncLatest(t, js, l)
	latestClose(t, l)
	before := nc.Stats().OutMsgs
	for range 100 {
		latestClose(t, l)
		if _, err := l.LatestCandle(t.Context(), "ETH/USD", streams.Interval1m); !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatalf("unknown series: %v", err)
		}
	}
	if n := nc.Stats().OutMsgs - before; n != 0 {
		t.Fatalf("200 answers sent %d messages", n)
	}
	if n := inner.n.Load(); n != 1 {
		t.Fatalf("the wrapped reader was asked %d times, want once", n)
	}
}

// A server restart loses the ordered consumer (it lives in memory); the
// cache must pick up what is stored after it, revisions included.
func TestLatestResyncsAfterARestart(t *testing.T) {
	dir := t.TempDir()
	s := natstest.ServerAt(t, dir)
	port := s.Addr().(*net.TCPAddr).Port
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 8)
	publish(t, js, btc[:4]...)
	l := startLatest(t, js, nil)
	syncLatest(t, js, l)
	latestClose(t, l)

	s.Shutdown()
	s.WaitForShutdown()
	natstest.Start(t, &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, JetStreamMaxStore: natstest.MaxStore})
	natstest.WaitFor(t, time.Minute, "the reconnect", func() bool {
		_, err := js.Stream(t.Context(), streams.StreamMarket)
		return err == nil
	})
	rev := btc[7]
	rev.Close += 1
	publish(t, js, btc[4:8]...)
	readmodeltest.PublishRevision(t, js, rev)
	syncLatest(t, js, l)
	if start, cl := latestClose(t, l); !start.Equal(rev.Start) || cl != rev.Close {
		t.Fatalf("after the restart: latest %s close %v, want %s close %v", start, cl, rev.Start, rev.Close)
	}
}

// Ready says the view is current only while it follows both streams with
// their first delivery read through: not before Run, and not after it
// stopped (asset_latest then reads through the wrapped reader).
func TestLatestReadiness(t *testing.T) {
	_, js := ensured(t)
	publish(t, js, datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 5)...)
	reg := prometheus.NewRegistry()
	l := readmodel.NewLatest(js, readmodel.NewJetStream(js), readmodel.LatestConfig{Metrics: reg})
	if err := l.Ready(t.Context()); err == nil {
		t.Fatal("ready before following")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	natstest.WaitProgress(t, 30*time.Second, "the view to be ready", func() (bool, string) {
		err := l.Ready(t.Context())
		return err == nil, fmt.Sprint(err)
	})
	if c, _ := l.Delivered(); c != 5 {
		t.Fatalf("ready with candles applied up to %d, want 5", c)
	}
	if n := metric(t, reg, "cryptostream_readmodel_latest_updates_total", streams.StreamMarket); n != 1 {
		t.Fatalf("%v updates counted, want 1 (the last per subject)", n)
	}
	latestClose(t, l)
	if _, _, ok := l.CachedCandle("BTC/USD", streams.Interval1m); !ok {
		t.Fatal("a synced view does not answer from memory")
	}
	cancel()
	<-done
	if err := l.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "not following") {
		t.Fatalf("Ready after Run ended: %v", err)
	}
	if _, _, ok := l.CachedCandle("BTC/USD", streams.Interval1m); ok {
		t.Fatal("a view that no longer follows still answers from memory")
	}
}

// metric is the value of name{stream=stream} in reg.
func metric(t *testing.T, reg *prometheus.Registry, name, stream string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "stream" && lp.GetValue() == stream {
					if m.Counter != nil {
						return m.Counter.GetValue()
					}
					return m.Gauge.GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{stream=%q}", name, stream)
	return 0
}

// A series whose messages the stream no longer holds (aged or pushed out by
// its limits, or purged) is dropped at the next sweep and answered
// ErrNotFound, as the JetStream reader answers it: it used to be served
// from memory for as long as the process ran. A series stored on again
// comes back.
func TestLatestDropsWhatTheStreamDeleted(t *testing.T) {
	_, js := ensured(t)
	sym := func(c []streams.Candle, s string) []streams.Candle {
		for i := range c {
			c[i].Symbol = s
		}
		return c
	}
	btc := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 4)
	publish(t, js, btc[:3]...)
	publish(t, js, sym(datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 2), "ETH/USD")...)
	publish(t, js, sym(datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 2), "SOL/USD")...)
	reg := prometheus.NewRegistry()
	l := startLatestWith(t, js, nil, readmodel.LatestConfig{SampleEvery: time.Hour, Metrics: reg})
	syncLatest(t, js, l)
	jsr := readmodel.NewJetStream(js)
	answers := func(r readmodel.Reader, s string) bool {
		t.Helper()
		_, err := r.LatestCandle(t.Context(), s, streams.Interval1m)
		if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	for _, s := range []string{"BTC/USD", "ETH/USD", "SOL/USD"} {
		if !answers(l, s) {
			t.Fatalf("%s not answered", s)
		}
	}

	// The stream's limits keep the last 2 messages: both SOL candles.
	st, err := js.Stream(t.Context(), streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.MaxMsgs = 2
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if answers(jsr, "BTC/USD") || answers(jsr, "ETH/USD") || !answers(jsr, "SOL/USD") {
		t.Fatal("the JetStream reader, the reference, does not see the limit")
	}
	l.Sample(t.Context())
	for s, want := range map[string]bool{"BTC/USD": false, "ETH/USD": false, "SOL/USD": true} {
		if got := answers(l, s); got != want {
			t.Fatalf("after the stream deleted BTC and ETH: %s answered %v, want %v", s, got, want)
		}
	}
	if n := metric(t, reg, "cryptostream_readmodel_latest_evicted_total", streams.StreamMarket); n != 2 {
		t.Fatalf("%v series evicted, want 2", n)
	}
	if n := metric(t, reg, "cryptostream_readmodel_latest_series", streams.StreamMarket); n != 1 {
		t.Fatalf("%v series held, want 1", n)
	}

	// Stored on again, BTC is back; a purge drops SOL.
	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	publish(t, js, btc[3])
	if err := st.Purge(t.Context(), jetstream.WithPurgeSubject(streams.CandleSubject(streams.Interval1m, "SOL/USD"))); err != nil {
		t.Fatal(err)
	}
	syncLatest(t, js, l)
	l.Sample(t.Context())
	if start, _ := latestClose(t, l); !start.Equal(btc[3].Start) {
		t.Fatalf("BTC stored on again: latest %s, want %s", start, btc[3].Start)
	}
	if answers(l, "SOL/USD") {
		t.Fatal("SOL answered after its subject was purged")
	}
}
