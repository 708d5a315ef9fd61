package backtest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

const symbol = "BTC/USD"

// msgs are candles as MARKET stores them (the ingester publishes them in
// JSON: a candle has no binary form).
func msgs(t testing.TB, cs []streams.Candle) []pipeline.Msg {
	t.Helper()
	out := make([]pipeline.Msg, len(cs))
	for i := range cs {
		data, err := streams.Encode(&cs[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: cs[i].Subject(), Seq: uint64(i + 1), Data: data}
	}
	return out
}

func config(cs []streams.Candle) backtest.Config {
	return backtest.Config{Symbol: symbol, Interval: streams.Interval1m, From: cs[0].Start, To: cs[len(cs)-1].Start, Warmup: -1}
}

// TestReplayRealData: the real Kraken minutes, with their gaps, a filled
// minute, a duplicate and an invalid message, give one prediction per
// accepted candle once the features' window is full, and counts that say
// what the policy did with each.
func TestReplayRealData(t *testing.T) {
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 6500)
	gaps := 0
	at := -1
	for i := 1; i < len(cs); i++ {
		missing := int(cs[i].Start.Sub(cs[i-1].Start)/time.Minute) - 1
		gaps += missing
		if missing > 0 && at < 0 && i > 5000 {
			at = i
		}
	}
	if at < 0 || gaps == 0 {
		t.Fatal("the recorded minutes have no gap to fill")
	}
	// Fill the first missing minute after 5000 as the ingester does: flat
	// at the last close.
	prev := cs[at-1]
	filled := streams.Candle{Symbol: symbol, Interval: streams.Interval1m, Start: prev.Start.Add(time.Minute),
		Open: prev.Close, High: prev.Close, Low: prev.Close, Close: prev.Close, VWAP: prev.Close, Quality: streams.QualityFilled}
	cs = append(cs[:at], append([]streams.Candle{filled}, cs[at:]...)...)
	ms := msgs(t, cs)
	ms = append(ms[:500], append([]pipeline.Msg{ms[499], {Stream: streams.StreamMarket, Subject: ms[0].Subject, Data: []byte("{")}}, ms[500:]...)...)
	for i := range ms {
		ms[i].Seq = uint64(i + 1) // each stored under its own sequence
	}
	run, err := backtest.Replay(t.Context(), config(cs), pipeline.Msgs(ms), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := backtest.Counts{Read: len(cs) + 2, Candles: len(cs), Filled: 1, Skipped: 1, Rejected: 1, Gaps: gaps - 1}
	got := run.Counts
	got.Predictions = 0
	if got != want {
		t.Fatalf("counts %+v, want %+v", got, want)
	}
	if n := len(run.Predictions); n == 0 || n > len(cs) || !run.Predictions[n-1].Start.Equal(cs[len(cs)-1].Start) {
		t.Fatalf("%d predictions for %d candles", n, len(cs))
	}
	first := len(cs) - len(run.Predictions)
	for i, p := range run.Predictions {
		if !p.Start.Equal(cs[first+i].Start) || p.Close != cs[first+i].Close {
			t.Fatalf("prediction %d at %s (close %v), candle %s (close %v)", i, p.Start, p.Close, cs[first+i].Start, cs[first+i].Close)
		}
	}
	rep := run.Report(backtest.Strategy{Fees: 0.001})
	if rep.Point.Scored+rep.Point.Unscored != len(run.Predictions) || rep.Point.Unscored == 0 {
		t.Fatalf("scored %d, unscored %d of %d", rep.Point.Scored, rep.Point.Unscored, len(run.Predictions))
	}
}

// TestReplayBadInput: the errors a caller can fix are told apart.
func TestReplayBadInput(t *testing.T) {
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 100)
	ms := pipeline.Msgs(msgs(t, cs))
	cfg := config(cs)
	for _, tc := range []struct {
		name   string
		change func(*backtest.Config)
		want   error
	}{
		{"from after to", func(c *backtest.Config) { c.From, c.To = c.To, c.From }, backtest.ErrBadRange},
		{"empty range", func(c *backtest.Config) { c.From, c.To = c.To.Add(time.Hour), c.To.Add(2*time.Hour) }, backtest.ErrEmptyRange},
		{"other asset", func(c *backtest.Config) { c.Symbol = "ETH/USD" }, backtest.ErrEmptyRange},
		{"bad asset", func(c *backtest.Config) { c.Symbol = "BTC USD" }, backtest.ErrSettings},
		{"model of another series", func(c *backtest.Config) {
			c.Model = &streams.ModelRecord{ID: "m", Symbol: "ETH/USD", Interval: streams.Interval1m}
		}, backtest.ErrSettings},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			tc.change(&c)
			if _, err := backtest.Replay(t.Context(), c, ms, nil); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

// TestReportDeterministic: the same run twice gives the same bytes.
func TestReportDeterministic(t *testing.T) {
	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 1500)
	var out [2][]byte
	for i := range out {
		run, err := backtest.Replay(t.Context(), config(cs), pipeline.Msgs(msgs(t, cs)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = json.Marshal(run.Report(backtest.Strategy{Fees: 0.001, Slippage: 0.0005})); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(out[0], out[1]) {
		t.Fatalf("two runs differ:\n%s\n%s", out[0], out[1])
	}
}
