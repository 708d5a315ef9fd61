package notifier

import (
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/streams"
)

// The stretch of real data the tests replay: BTC/USD on Kraken from 22:00
// on 2 March 2023 to 04:00 the next day, with the 2.3% fall in 15 minutes
// of 01:14 to 01:29.
var (
	stretchFrom = time.Date(2023, 3, 2, 22, 0, 0, 0, time.UTC)
	stretchTo   = time.Date(2023, 3, 3, 4, 0, 0, 0, time.UTC)
)

// stretch returns the stretch's 1m candles, each with its line number in
// the file as a stand-in stream sequence.
func stretch(t testing.TB) []seqCandle {
	t.Helper()
	var out []seqCandle
	for i, c := range datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000) {
		if !c.Start.Before(stretchFrom) && c.Start.Before(stretchTo) {
			out = append(out, seqCandle{c, uint64(i + 1)})
		}
	}
	if len(out) < 300 {
		t.Fatalf("stretch has %d candles", len(out))
	}
	return out
}

type seqCandle struct {
	streams.Candle
	seq uint64
}

type event struct {
	candle *streams.Candle
	tick   *streams.Tick
	seq    uint64
}

// rollup turns 1m candles into the events a live feed of a longer interval
// gives: a tick of the running candle after each minute, a closed candle
// when the next one starts.
func rollup(in []seqCandle, iv streams.Interval) []event {
	var out []event
	var cur *streams.Candle
	for _, m := range in {
		start := iv.Floor(m.Start)
		if cur != nil && !cur.Start.Equal(start) {
			c := *cur
			out = append(out, event{candle: &c, seq: m.seq})
			cur = nil
		}
		if cur == nil {
			cur = &streams.Candle{Symbol: m.Symbol, Interval: iv, Start: start, Open: m.Open, High: m.High, Low: m.Low, Quality: m.Quality}
		}
		cur.High, cur.Low = max(cur.High, m.High), min(cur.Low, m.Low)
		cur.Close = m.Close
		cur.Volume += m.Volume
		cur.Trades += m.Trades
		c := *cur
		out = append(out, event{tick: &streams.Tick{Candle: c, ReceivedAt: m.End()}, seq: m.seq})
	}
	return out
}

func rules(t testing.TB, rs ...Rule) []Rule {
	t.Helper()
	for i := range rs {
		rs[i].Normalize()
		if err := rs[i].Validate(); err != nil {
			t.Fatalf("rule %s: %v", rs[i].ID, err)
		}
	}
	return rs
}
