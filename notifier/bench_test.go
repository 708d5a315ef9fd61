package notifier

import (
	"fmt"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/streams"
)

// benchSymbols is 100 symbols, each the real BTC/USD stretch scaled so that
// they are different series with real moves.
func benchSymbols(b *testing.B) (syms []string, candles [][]streams.Candle) {
	b.Helper()
	base := datatest.KrakenCandles(b, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000)
	for i := range 100 {
		sym := fmt.Sprintf("C%03d/USD", i)
		k := 1 + float64(i)/100
		cs := make([]streams.Candle, len(base))
		for j, c := range base {
			c.Symbol = sym
			c.Open, c.High, c.Low, c.Close = c.Open*k, c.High*k, c.Low*k, c.Close*k
			cs[j] = c
		}
		syms = append(syms, sym)
		candles = append(candles, cs)
	}
	return syms, candles
}

// BenchRules is 100 rules per symbol: crosses at levels around the price,
// moves over 5 to 60 minutes, volatility spikes; every kind of state the
// engine keeps per candle.
func BenchRules(syms []string, price func(sym string) float64) []Rule {
	var rs []Rule
	for _, sym := range syms {
		p := price(sym)
		for j := range 100 {
			r := Rule{ID: fmt.Sprintf("%s-%d", streams.AssetKey(sym), j), Owner: fmt.Sprintf("u%d", j%50), OwnerID: fmt.Sprintf("id-u%d", j%50), Symbol: sym, Interval: streams.Interval1m,
				Direction: Either, Trigger: TriggerOncePerClose, Cooldown: Duration(10 * time.Minute), Hysteresis: 0.2}
			switch j % 3 {
			case 0:
				r.Kind, r.Threshold = KindPriceCross, p*(0.97+0.0006*float64(j))
			case 1:
				r.Kind, r.Threshold, r.Window = KindPercentMove, 0.3+0.02*float64(j), Duration(time.Duration(5+j%12*5)*time.Minute)
			default:
				r.Kind, r.Threshold, r.Window, r.Count = KindVolatilitySpike, 2+0.05*float64(j), Duration(15*time.Minute), 4
			}
			r.Normalize()
			rs = append(rs, r)
		}
	}
	return rs
}

// BenchmarkEngine10kRules: 10,000 rules over 100 symbols, one closed
// candle per symbol per step; the reference is decoding the candles' JSON
// (what the worker does before evaluating). evals/s counts rule
// evaluations.
func BenchmarkEngine10kRules(b *testing.B) {
	syms, candles := benchSymbols(b)
	first := map[string]float64{}
	for i, s := range syms {
		first[s] = candles[i][0].Close
	}
	rules := BenchRules(syms, func(s string) float64 { return first[s] })
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			b.Fatal(err)
		}
	}
	n := len(candles[0])
	b.Run("engine", func(b *testing.B) {
		e := NewEngine(EngineConfig{UserRateCap: 60})
		e.SetRules(rules)
		fired, steps := 0, 0
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			// Wrap around with a fresh engine, outside the timer, so every
			// step is a new candle.
			if steps == n {
				b.StopTimer()
				e = NewEngine(EngineConfig{UserRateCap: 60})
				e.SetRules(rules)
				steps = 0
				b.StartTimer()
			}
			for s := range candles {
				fired += len(e.Candle(candles[s][steps], Source{streams.StreamMarket, uint64(i)}))
			}
			steps++
		}
		b.ReportMetric(float64(b.N)*float64(len(rules))/b.Elapsed().Seconds(), "evals/s")
		b.ReportMetric(float64(fired)/float64(b.N), "alerts/step")
	})
	b.Run("reference-decode", func(b *testing.B) {
		raw := make([][]byte, len(candles))
		for s := range candles {
			c := candles[s][0]
			c.Quality = streams.QualityImported
			enc, err := streams.Encode(&c)
			if err != nil {
				b.Fatal(err)
			}
			raw[s] = enc
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for s := range raw {
				if _, err := streams.Decode[streams.Candle](raw[s]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
