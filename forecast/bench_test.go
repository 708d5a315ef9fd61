package forecast_test

import (
	"testing"
	"time"

	"cryptostream/features"
	"cryptostream/forecast"
	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

func benchCandles() []streams.Candle {
	var out []streams.Candle
	for _, c := range garchCandles(9, 6) {
		out = append(out, streams.Candle{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: c.start,
			Open: c.close, High: c.close, Low: c.close, Close: c.close, Volume: 1})
	}
	return out
}

// perCandle runs step over candles after a warm-up of two days, moving the
// series forward in time when it wraps so that candles stay in order.
func perCandle(b *testing.B, candles []streams.Candle, warm func(streams.Candle), step func(streams.Candle)) {
	const warmup = 2 * 1440
	for _, c := range candles[:warmup] {
		warm(c)
	}
	span := candles[len(candles)-1].Start.Sub(candles[0].Start) + time.Minute
	shift := time.Duration(0)
	b.ReportAllocs()
	b.ResetTimer()
	j := warmup
	for range b.N {
		if j == len(candles) {
			j, shift = 0, shift+span
		}
		c := candles[j]
		c.Start = c.Start.Add(shift)
		step(c)
		j++
	}
}

// BenchmarkVolatilityStep is the volatility model and the intervals of
// three horizons, per candle.
func BenchmarkVolatilityStep(b *testing.B) {
	s, err := forecast.NewSeries(forecast.DefaultConfig(time.Minute))
	if err != nil {
		b.Fatal(err)
	}
	add := func(c streams.Candle) {
		if _, err := s.Add(c.Start, c.Close, nil); err != nil {
			b.Fatal(err)
		}
	}
	perCandle(b, benchCandles(), add, add)
}

// BenchmarkFeaturesPredictVolatility is the live path after: the
// predictor's per-candle work (BenchmarkFeaturesPredict in ./predictor:
// window update, features, forecast, scoring) plus the volatility step.
// With vol=false it is that benchmark's loop, measured in the same run as
// the reference.
func BenchmarkFeaturesPredictVolatility(b *testing.B) {
	for _, vol := range []bool{false, true} {
		name := "before"
		if vol {
			name = "after"
		}
		b.Run(name, func(b *testing.B) {
			calc, err := features.NewCalculator(features.DefaultSpec())
			if err != nil {
				b.Fatal(err)
			}
			names := calc.Names()
			coef := make([]float64, len(names)+1)
			for i := range coef {
				coef[i] = 1e-4 * float64(i%5-2)
			}
			rec := streams.ModelRecord{ID: "bench", Symbol: "BTC/USD", Interval: streams.Interval1m, Horizon: 1,
				Features: names, Coefficients: coef, ResidualStd: 0.001}
			m, _ := trainer.FromRecord(rec)
			bound, err := m.Bind(names)
			if err != nil {
				b.Fatal(err)
			}
			series := features.NewSeries(calc)
			scorer := predictor.NewScorer(time.Time{}, 0, nil)
			vs, err := forecast.NewSeries(forecast.DefaultConfig(time.Minute))
			if err != nil {
				b.Fatal(err)
			}
			centers := make([]float64, 3)
			step := func(c streams.Candle) {
				v, o := series.Add(c, 0)
				if o != features.Computed {
					return
				}
				scorer.Observe(v.Start, v.Close)
				p := predictor.Forecast(rec, bound, v, 1.96)
				scorer.Await(p)
				if vol {
					centers[0] = p.LogReturn
					if _, err := vs.Add(c.Start, c.Close, centers); err != nil {
						b.Fatal(err)
					}
				}
			}
			perCandle(b, benchCandles(), step, step)
		})
	}
}
