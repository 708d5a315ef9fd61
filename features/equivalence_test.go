package features_test

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/features"
	"cryptostream/features/featurestest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// feed is the real file as a live series can receive it: mixed qualities,
// half of the gaps filled with flat candles, one outage longer than the
// window, and redeliveries (duplicates, late minutes, candles older than the
// window) among the new candles.
func feed(t *testing.T, name string, iv streams.Interval, rows int) []streams.Candle {
	t.Helper()
	candles := datatest.KrakenCandles(t, name, "BTC/USD", iv, rows)
	// The outage: 300 intervals gone, more than the 79 of the window.
	candles = append(candles[:len(candles)/3:len(candles)/3], candles[len(candles)/3+300:]...)
	rng := rand.New(rand.NewPCG(9, 9))
	qs := []streams.Quality{streams.QualityLive, streams.QualityLive, streams.QualityBackfilled, streams.QualityImported}
	var out []streams.Candle
	step := iv.Duration()
	for i, c := range candles {
		c.Quality = qs[rng.IntN(len(qs))]
		if i > 0 && rng.IntN(2) == 0 {
			prev := candles[i-1]
			for g := prev.Start.Add(step); g.Before(c.Start); g = g.Add(step) {
				out = append(out, streams.Candle{Symbol: c.Symbol, Interval: iv, Start: g,
					Open: prev.Close, High: prev.Close, Low: prev.Close, Close: prev.Close, Quality: streams.QualityFilled})
			}
		}
		out = append(out, c)
		if len(out) > 2 && rng.IntN(20) == 0 {
			// A redelivery of something already seen: the last one, one
			// a few back, one far behind, or a minute between two.
			switch rng.IntN(4) {
			case 0:
				out = append(out, c)
			case 1:
				out = append(out, out[max(0, len(out)-1-rng.IntN(100))])
			case 2:
				out = append(out, out[max(0, len(out)-200-rng.IntN(200))])
			case 3:
				late := out[len(out)-2]
				late.Start = late.Start.Add(step / 2)
				if gap := c.Start.Sub(out[len(out)-2].Start); gap > step {
					late.Start = out[len(out)-2].Start.Add(step)
				}
				out = append(out, late)
			}
		}
	}
	return out
}

// TestSeriesEqualsBatch: the incremental series gives, on every candle of
// the real files, the outcome, the values to the last bit, the window
// quality and the length of the batch window that recomputes everything.
func TestSeriesEqualsBatch(t *testing.T) {
	small := features.Spec{Lags: []int{1, 2}, SMA: []int{2}, EMA: []int{1}, RSI: 2, Vol: 3}
	tests := []struct {
		name string
		file string
		iv   streams.Interval
		spec features.Spec
	}{
		{"1m default", datatest.KrakenBTCUSD1m, streams.Interval1m, features.DefaultSpec()},
		{"5m default", datatest.KrakenXBTUSD5m, streams.Interval5m, features.DefaultSpec()},
		{"1m volatility over the whole lookback", datatest.KrakenBTCUSD1m, streams.Interval1m, small},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			candles := feed(t, tt.file, tt.iv, 0)
			calc, err := features.NewCalculator(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			inc, batch := features.NewSeries(calc), featurestest.NewBatch(calc)
			seen := map[features.Outcome]int{}
			for i, c := range candles {
				seq := uint64(i + 1)
				got, gotOut := inc.Add(c, seq)
				want, wantOut := batch.Add(c, seq)
				seen[wantOut]++
				if gotOut != wantOut {
					t.Fatalf("candle %d at %s: outcome %s, batch %s", i, c.Start, gotOut, wantOut)
				}
				if inc.Len() != batch.Len() {
					t.Fatalf("candle %d at %s: %d candles held, batch %d", i, c.Start, inc.Len(), batch.Len())
				}
				if gotOut != features.Computed {
					continue
				}
				if !slices.EqualFunc(got.Values, want.Values, func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }) {
					t.Fatalf("candle %d at %s:\nseries %v\nbatch  %v", i, c.Start, got.Values, want.Values)
				}
				if !maps.Equal(got.Window, want.Window) {
					t.Fatalf("candle %d at %s: window %v, batch %v", i, c.Start, got.Window, want.Window)
				}
				if !slices.Equal(got.Names, want.Names) || got.Start != want.Start || got.Close != want.Close ||
					got.CandleSeq != seq || got.Symbol != want.Symbol || got.Interval != want.Interval {
					t.Fatalf("candle %d: %+v, batch %+v", i, got, want)
				}
			}
			// The feed must have gone through every path.
			for _, o := range []features.Outcome{features.Computed, features.Warmup, features.Duplicate, features.Late, features.TooOld} {
				if seen[o] == 0 {
					t.Fatalf("no %s candle in the feed: %v", o, seen)
				}
			}
			longest := time.Duration(0)
			for i := 1; i < len(candles); i++ {
				longest = max(longest, candles[i].Start.Sub(candles[i-1].Start))
			}
			if longest <= time.Duration(tt.spec.Lookback())*tt.iv.Duration() {
				t.Fatalf("no gap longer than the window in the feed (longest %s)", longest)
			}
			t.Logf("%v", seen)
		})
	}
}

// TestSeriesAllocatesTheValuesOnly: a steady series allocates the values it
// hands out and nothing else per candle.
func TestSeriesAllocatesTheValuesOnly(t *testing.T) {
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000)
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	s := features.NewSeries(calc)
	for i, c := range candles[:200] {
		s.Add(c, uint64(i))
	}
	next := candles[200].Start
	i := 200
	allocs := testing.AllocsPerRun(1000, func() {
		c := candles[i]
		c.Start = next // every minute present: the window's counts stay the same
		next = next.Add(time.Minute)
		i++
		if _, o := s.Add(c, uint64(i)); o != features.Computed {
			t.Fatalf("outcome %s", o)
		}
	})
	if allocs > 1 {
		t.Fatalf("%v allocations per candle, want 1 (the values)", allocs)
	}
}

// TestStepAllocatesTwice: a steady series' Step allocates the values and
// one block for the vector, its trace and the slice returning it.
func TestStepAllocatesTwice(t *testing.T) {
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 3000)
	vs, err := features.NewVectors(features.DefaultSpec(), nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// The inputs are made first, every minute present (the window's
	// counts stay the same), each with ingest's hop as a live candle.
	const warm, runs = 200, 1000
	msgs := make([]pipeline.Msg, warm+runs+1)
	for i := range msgs {
		c := candles[i]
		c.Start = candles[0].Start.Add(time.Duration(i) * time.Minute)
		c.Trace = streams.Trace{{Stage: "ingest", At: c.Start}}
		msgs[i] = pipeline.Msg{Stream: streams.StreamMarket, Subject: c.Subject(), Seq: uint64(i + 1), Value: &c}
	}
	for _, m := range msgs[:warm] {
		if _, err := vs.Step(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	i := warm
	allocs := testing.AllocsPerRun(runs, func() {
		if _, err := vs.Step(t.Context(), msgs[i]); err != nil {
			t.Fatal(err)
		}
		i++
	})
	if allocs > 2 {
		t.Fatalf("%v allocations per candle, want 2 (the values, the vector with its trace)", allocs)
	}
}
