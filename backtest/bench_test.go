package backtest_test

import (
	"bufio"
	"iter"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// binanceCandles reads the whole recorded Binance BTC/USDT minute file
// (header timestamp,open,high,low,close,volume) as BTC/USD candles.
func binanceCandles(b testing.TB) []streams.Candle {
	b.Helper()
	f, err := os.Open(datatest.Path(b, "binance_BTCUSDT_1m_2025-05_08.csv"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var out []streams.Candle
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ",")
		var v [6]float64
		for i, s := range fs {
			if v[i], err = strconv.ParseFloat(s, 64); err != nil {
				b.Fatal(err)
			}
		}
		out = append(out, streams.Candle{Symbol: symbol, Interval: streams.Interval1m, Start: time.Unix(int64(v[0]), 0).UTC(),
			Open: v[1], High: v[2], Low: v[3], Close: v[4], VWAP: v[4], Volume: v[5], Trades: 1, Quality: streams.QualityImported})
	}
	if len(out) != 130708 {
		b.Fatalf("%d candles, want 130,708", len(out))
	}
	return out
}

func benchConfig(cs []streams.Candle) backtest.Config {
	return backtest.Config{Symbol: symbol, Interval: streams.Interval1m, From: cs[0].Start, To: cs[len(cs)-1].Start, Model: &reversal, Warmup: -1}
}

// BenchmarkReplayMemory: the whole Binance file through the features and
// predictor stages, from memory, no JetStream. decoded hands the stages
// candles already decoded (Msg.Value): the cost of the stages alone; json
// gives them as MARKET stores them, to be decoded; json+report adds the
// report, as the benchmark of the first version measured.
func BenchmarkReplayMemory(b *testing.B) {
	cs := binanceCandles(b)
	for _, tc := range []struct {
		name   string
		ms     []pipeline.Msg
		report bool
	}{{"decoded", values(cs), false}, {"json", msgs(b, cs), false}, {"json+report", msgs(b, cs), true}} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu := cpuTime(b)
			for b.Loop() {
				run := replayAll(b, cs, pipeline.Msgs(tc.ms), nil)
				if tc.report {
					_ = run.Report(backtest.Strategy{Fees: 0.001})
				}
			}
			reportRate(b, len(cs), cpu)
		})
	}
}

// BenchmarkReport: the report of a backtest of the whole Binance file.
func BenchmarkReport(b *testing.B) {
	cs := binanceCandles(b)
	run := replayAll(b, cs, pipeline.Msgs(values(cs)), nil)
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		_ = run.Report(backtest.Strategy{Fees: 0.001})
	}
	reportRate(b, len(cs), cpu)
}

// replayAll is the backtest of cs read from candles, checked to have
// taken every candle.
func replayAll(b *testing.B, cs []streams.Candle, candles iter.Seq2[pipeline.Msg, error], hist pipeline.History) *backtest.Run {
	run, err := backtest.Replay(b.Context(), benchConfig(cs), candles, hist)
	if err != nil {
		b.Fatal(err)
	}
	if run.Counts.Candles != len(cs) {
		b.Fatalf("%d of %d candles", run.Counts.Candles, len(cs))
	}
	return run
}

// BenchmarkDecodeCandles: the JSON decode of the Binance file's candles
// alone, the ceiling of any backtest that reads them from MARKET.
func BenchmarkDecodeCandles(b *testing.B) {
	cs := binanceCandles(b)
	ms := msgs(b, cs)
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		for _, m := range ms {
			if _, err := streams.Decode[streams.Candle](m.Data); err != nil {
				b.Fatal(err)
			}
		}
	}
	reportRate(b, len(cs), cpu)
}

// values are the candles as MARKET messages carrying their decoded value
// and no data.
func values(cs []streams.Candle) []pipeline.Msg {
	out := make([]pipeline.Msg, len(cs))
	for i := range cs {
		out[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: cs[i].Subject(), Seq: uint64(i + 1), Value: &cs[i]}
	}
	return out
}

// cpuTime reads the process's CPU time (user and system) from the time it
// is called: a rate per CPU second holds on a machine busy with other
// work, where the wall-clock rate follows the load.
func cpuTime(b *testing.B) func() time.Duration {
	read := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := read()
	return func() time.Duration { return read() - start }
}

// reportRate reports candles per second of wall time and CPU nanoseconds
// per candle (all the process's threads: with -cpu 1, the one core and
// the runtime's own).
func reportRate(b *testing.B, n int, cpu func() time.Duration) {
	total := float64(n) * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds(), "candles/s")
	b.ReportMetric(float64(cpu().Nanoseconds())/total, "cpu-ns/candle")
}

// storedMarket is an embedded JetStream holding the whole Binance file in
// MARKET.
func storedMarket(b *testing.B, cs []streams.Candle) jetstream.JetStream {
	b.Helper()
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
		b.Fatal(err)
	}
	for i := range cs {
		data, err := streams.Encode(&cs[i])
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(cs[i].Subject())
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, cs[i].MsgID())
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 1023 { // below the client's 4,000 pending, which stalls a loaded machine
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	return js
}

// BenchmarkReplayMarket: the whole Binance file read back from MARKET
// with the backtest's ordered consumer, raw (read only: the reference),
// read and decoded (the backtest's reader alone), and through the
// features and predictor stages and the report; same server, same run.
func BenchmarkReplayMarket(b *testing.B) {
	cs := binanceCandles(b)
	js := storedMarket(b, cs)
	start := cs[0].Start.Add(-time.Hour)
	for _, tc := range []struct {
		name string
		read func() iter.Seq2[pipeline.Msg, error]
	}{
		{"raw", func() iter.Seq2[pipeline.Msg, error] {
			return backtest.ReadMarketRaw(b.Context(), js, streams.CandleSubject(streams.Interval1m, symbol), start)
		}},
		// The backtest's reader: the same consumer, each candle decoded on
		// a goroutine ahead of the loop.
		{"decoded", func() iter.Seq2[pipeline.Msg, error] {
			return backtest.Market(b.Context(), js, streams.Interval1m, symbol, start)
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			cpu := cpuTime(b)
			for b.Loop() {
				n := 0
				for _, err := range tc.read() {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != len(cs) {
					b.Fatalf("read %d of %d", n, len(cs))
				}
			}
			reportRate(b, len(cs), cpu)
		})
	}
	b.Run("backtest", func(b *testing.B) {
		cpu := cpuTime(b)
		for b.Loop() {
			run := replayAll(b, cs, backtest.Market(b.Context(), js, streams.Interval1m, symbol, start), pipeline.StreamHistory{JS: js})
			_ = run.Report(backtest.Strategy{Fees: 0.001})
		}
		reportRate(b, len(cs), cpu)
	})
}
