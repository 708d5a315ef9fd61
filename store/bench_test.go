package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/pgtest"
	"cryptostream/readmodel"
	"cryptostream/store"
	"cryptostream/streams"
)

// BenchmarkSink replays the real 1-minute file (29,881 candles on MARKET)
// into an emptied candles table per iteration: fetch, decode, COPY into a
// staging table, upsert, commit, ack. rows/s is the figure.
func BenchmarkSink(b *testing.B) {
	js := bus(b)
	db := testDB(b, pgtest.AdminURL())
	candles := realFile(b)
	publishAll(b, js, candles)
	ctx := context.Background()
	b.ResetTimer()
	var elapsed time.Duration
	var writing float64
	for range b.N {
		b.StopTimer()
		if _, err := db.Exec(ctx, "TRUNCATE candles"); err != nil {
			b.Fatal(err)
		}
		if err := store.Rewind(ctx, js); err != nil {
			b.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		sink, err := store.New(store.Config{}, store.Deps{Bus: js, DB: db, Metrics: reg})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if err := sink.RunUntilSynced(ctx, 5*time.Millisecond, nil); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		writing += histogramSum(b, reg, "cryptostream_sink_batch_duration_seconds")
	}
	b.ReportMetric(float64(len(candles)*b.N)/elapsed.Seconds(), "rows/s")
	// The share of the time spent in PostgreSQL transactions: the rest is
	// fetching, decoding and acking.
	b.ReportMetric(writing/elapsed.Seconds(), "db-share")
}

func histogramSum(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	return 0
}

// BenchmarkRawCopy is the reference for BenchmarkSink: the same rows
// COPYed straight into the emptied table in one transaction, no bus.
func BenchmarkRawCopy(b *testing.B) {
	db := testDB(b, pgtest.AdminURL())
	candles := realFile(b)
	rows := make([][]any, len(candles))
	for i, c := range candles {
		rows[i] = []any{c.Symbol, int32(c.Interval), c.Start, c.Open, c.High, c.Low, c.Close, c.VWAP, c.Volume, c.Trades, string(c.Quality), int64(i + 1)}
	}
	cols := []string{"symbol", "interval", "start", "open", "high", "low", "close", "vwap", "volume", "trades", "quality", "stream_seq"}
	ctx := context.Background()
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		if _, err := db.Exec(ctx, "TRUNCATE candles"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		if _, err := db.CopyFrom(ctx, pgx.Identifier{"candles"}, cols, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(len(candles)*b.N)/elapsed.Seconds(), "rows/s")
}

// BenchmarkAssetHistory reads 10,000 candles of one series the way the
// gateway's asset_history pages through them (the cap, 1,000 a page), from
// PostgreSQL and from JetStream, on the same data in the same run. The
// JetStream reader keeps an index per series once asked: "warm" reuses one
// reader, "cold" makes a new one per read (a fresh process, or the first
// query of a series).
func BenchmarkAssetHistory(b *testing.B) {
	js := bus(b)
	db := testDB(b, pgtest.AdminURL())
	candles := datatest.KrakenCandles(b, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 10000)
	publishAll(b, js, candles)
	sink, err := store.New(store.Config{}, store.Deps{Bus: js, DB: db, Metrics: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	if err := sink.RunUntilSynced(context.Background(), 10*time.Millisecond, nil); err != nil {
		b.Fatal(err)
	}
	readAll := func(b *testing.B, r readmodel.Reader) {
		q := readmodel.CandleQuery{Symbol: "BTC/USD", Interval: streams.Interval1m, Limit: readmodel.MaxLimit}
		n := 0
		for {
			page, err := r.Candles(context.Background(), q)
			if err != nil {
				b.Fatal(err)
			}
			n += len(page.Candles)
			if page.Next == "" {
				break
			}
			q.After = page.Next
		}
		if n != len(candles) {
			b.Fatalf("read %d candles, want %d", n, len(candles))
		}
	}
	b.Run("postgres", func(b *testing.B) {
		r := store.NewReader(db)
		for range b.N {
			readAll(b, r)
		}
	})
	b.Run("jetstream-warm", func(b *testing.B) {
		r := readmodel.NewJetStream(js)
		readAll(b, r)
		b.ResetTimer()
		for range b.N {
			readAll(b, r)
		}
	})
	b.Run("jetstream-cold", func(b *testing.B) {
		for range b.N {
			readAll(b, readmodel.NewJetStream(js))
		}
	})
}
