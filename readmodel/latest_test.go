package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/readmodel/readmodeltest"
	"cryptostream/streams"
)

// startLatest runs a Latest over the JetStream reader until the test ends.
func startLatest(t *testing.T, js jetstream.JetStream, inner readmodel.Reader) *readmodel.Latest {
	t.Helper()
	if inner == nil {
		inner = readmodel.NewJetStream(js)
	}
	l := readmodel.NewLatest(js, inner, nil)
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
	l := startLatest(t, rjs, inner)
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
