package ingest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

// TestAssetWatch: putting an asset into the bucket starts its candles in
// the running ingester, and deleting it stops its subscription, without a
// restart.
func TestAssetWatch(t *testing.T) {
	btc, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	// A second pair from the same recording, under another name.
	eth := btc
	eth.Symbol, eth.PairKey, eth.Altname, eth.WSName, eth.Base, eth.Quote = "ETH/USD", "XETHZUSD", "ETHUSD", "ETH/USD", "XETH", "ZUSD"
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{btc, eth}, Speed: 600, MaxUpdatesPerCandle: 2, Heartbeat: 100 * time.Millisecond})
	h.addAsset(t, "BTC/USD")
	reg := h.startWorker(t, ingest.Config{SubscribePace: 10 * time.Millisecond, RESTInterval: time.Millisecond,
		HealRetry: 50 * time.Millisecond, BackoffMin: 20 * time.Millisecond})
	natstest.WaitAtLeast(t, time.Minute, "live BTC/USD candles", 3, func() float64 {
		return opstest.Value(t, reg, "cryptostream_ingest_candles_published_total", map[string]string{"quality": "live"})
	})
	if _, ok := h.lastStored(t, streams.Interval1m, "ETH/USD"); ok {
		t.Fatal("ETH/USD stored before it was added")
	}

	h.addAsset(t, "ETH/USD")
	natstest.WaitFor(t, time.Minute, "ETH/USD candles after adding the asset", func() bool {
		c, ok := h.lastStored(t, streams.Interval1m, "ETH/USD")
		return ok && c.Quality == streams.QualityLive
	})
	acked := func() float64 {
		return opstest.Value(t, reg, "cryptostream_ingest_subscriptions", map[string]string{"state": "acked"})
	}
	if got := acked(); got != 2 {
		t.Errorf("acked subscriptions %v, want 2", got)
	}

	if err := h.kv.Delete(t.Context(), streams.AssetKey("BTC/USD")); err != nil {
		t.Fatal(err)
	}
	natstest.WaitFor(t, time.Minute, "BTC/USD unsubscribed", func() bool { return acked() == 1 })
	before, _ := h.lastStored(t, streams.Interval1m, "BTC/USD")
	ethBefore, _ := h.lastStored(t, streams.Interval1m, "ETH/USD")
	natstest.WaitProgress(t, time.Minute, "ETH/USD still flowing", func() (bool, string) {
		c, _ := h.lastStored(t, streams.Interval1m, "ETH/USD")
		return c.Start.Sub(ethBefore.Start) >= 3*time.Minute, c.Start.String()
	})
	if after, _ := h.lastStored(t, streams.Interval1m, "BTC/USD"); !after.Start.Equal(before.Start) {
		t.Errorf("BTC/USD still stored after removal: %s then %s", before.Start, after.Start)
	}
}

// TestImportTwice imports the 1-minute Kraken file twice: the grid holds
// 29,940 minutes from 2023-03-01 05:00 to 2023-03-21 23:59, of which 29,881
// are the file's rows and 59 are filled by the empty-interval policy, and
// the second import stores nothing new.
func TestImportTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("imports 30k candles")
	}
	h := newHarness(t, krakensim.Config{})
	raw := embeddedCSV(t)
	im := &ingest.Importer{Pub: h.js, Stored: ingest.StoredStarts(h.js)}
	var bad []error
	read, err := ingest.ReadFile("kraken_BTCUSD_1m_2023-03.csv", bytes.NewReader(raw), "BTC/USD", streams.Interval1m, time.Now(),
		func(err *ingest.BadRowError) { bad = append(bad, err) })
	if err != nil || len(bad) > 0 || len(read.Candles) != 29881 {
		t.Fatalf("read %d candles, bad %v, err %v", len(read.Candles), bad, err)
	}
	candles := read
	st, err := im.Import(t.Context(), candles)
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 29940 || st.Filled != 59 || st.Skipped != 0 {
		t.Fatalf("first import: %+v", st)
	}
	st, err = im.Import(t.Context(), candles)
	if err != nil {
		t.Fatal(err)
	}
	if st.Published != 0 || st.Skipped != 29940 {
		t.Fatalf("second import: %+v", st)
	}
	// Without the stored-starts check the server's deduplication still
	// holds within its window.
	st, err = (&ingest.Importer{Pub: h.js}).Import(t.Context(), ingest.Series{Candles: candles.Candles[:100]})
	if err != nil {
		t.Fatal(err)
	}
	if st.Duplicates != st.Published {
		t.Fatalf("third import: %+v", st)
	}
	got := h.stored(t, streams.Interval1m, "BTC/USD")
	if len(got) != 29940 {
		t.Fatalf("MARKET holds %d candles, want 29940", len(got))
	}
	q := map[streams.Quality]int{}
	for i, c := range got {
		q[c.Quality]++
		if i > 0 && !c.Start.Equal(got[i-1].Start.Add(time.Minute)) {
			t.Fatalf("candle %d at %s after %s", i, c.Start, got[i-1].Start)
		}
	}
	if q[streams.QualityImported] != 29881 || q[streams.QualityFilled] != 59 {
		t.Errorf("qualities %v", q)
	}
}

func TestImportBadRows(t *testing.T) {
	csv := "timestamp,open,high,low,close,volume\n" +
		"1677646800,23797.6,23819.4,23797.6,23799.7,10.4\n" +
		"1677646860,abc,23798.9,23775.2,23777.6,0.95\n" +
		"1677646920,23777.6,23701.2,23777.6,23783.5,21.9\n" +
		"\n" +
		"1677646980,23783.4,23785.1,23769.9,23769.9,-4\n" +
		"1677647040,23769.8,23769.9,23748.9,23759.3,19.3\n"
	var bad []string
	read, err := ingest.ReadFile("x.csv", bytes.NewReader([]byte(csv)), "BTC/USD", streams.Interval1m, time.Now(),
		func(err *ingest.BadRowError) { bad = append(bad, err.Error()) })
	if cs := read.Candles; err != nil || len(cs) != 2 || cs[0].Trades != 1 {
		t.Fatalf("candles %+v, err %v", cs, err)
	}
	want := []string{"x.csv:3:", "x.csv:4:", "x.csv:6:"}
	if len(bad) != len(want) {
		t.Fatalf("bad rows %q", bad)
	}
	for i, w := range want {
		if len(bad[i]) < len(w) || bad[i][:len(w)] != w {
			t.Errorf("bad row %d = %q, want prefix %q", i, bad[i], w)
		}
	}
}

func embeddedCSV(t testing.TB) []byte {
	t.Helper()
	f, err := os.Open("krakensim/data/kraken_BTCUSD_1m_2023-03.csv.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestAssetWatchResumes: deleting the assets bucket ends the watch (its
// ordered consumer cannot be made again on a stream that is gone); once
// the bucket is declared again the ingester watches it again and follows
// the new bucket's assets, instead of keeping the old set for as long as
// the process lives.
func TestAssetWatchResumes(t *testing.T) {
	h := newHarness(t, krakensim.Config{})
	h.addAsset(t, "BTC/USD")
	warnings := make(chan string, 64)
	ch, err := (&ingest.KVAssets{KV: h.kv, Log: slog.New(recorder(warnings))}).WatchAssets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	deadline, _ := natstest.Deadline(t)
	next := func(what string) []string {
		t.Helper()
		select {
		case set, ok := <-ch:
			if !ok {
				t.Fatalf("the assets channel closed before %s: the watch ended and was not made again", what)
			}
			return set
		case <-time.After(time.Until(deadline)):
			t.Fatalf("no %s before the test's deadline", what)
		}
		return nil
	}
	if got := next("the first set"); !slices.Equal(got, []string{"BTC/USD"}) {
		t.Fatalf("first set %q, want BTC/USD", got)
	}

	if err := h.js.DeleteKeyValue(t.Context(), streams.BucketAssets); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-warnings:
		t.Logf("after the delete: %s", msg)
	case set, ok := <-ch:
		if !ok {
			t.Fatal("the assets channel closed when the bucket was deleted: the watch was not made again")
		}
		t.Fatalf("a set %q from a deleted bucket", set)
	case <-time.After(time.Until(deadline)):
		t.Fatal("the watch of a deleted bucket did not end before the test's deadline")
	}
	if err := streams.Ensure(t.Context(), h.js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	h.addAsset(t, "ETH/USD")
	if got := next("the new bucket's set"); !slices.Equal(got, []string{"ETH/USD"}) {
		t.Fatalf("set after the bucket came back %q, want ETH/USD alone", got)
	}
}

// recorder is a log handler that passes each message on, dropping what its
// reader has no room for.
type recorder chan string

func (r recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r recorder) WithGroup(string) slog.Handler            { return r }
func (r recorder) Handle(_ context.Context, rec slog.Record) error {
	select {
	case r <- rec.Message:
	default:
	}
	return nil
}
