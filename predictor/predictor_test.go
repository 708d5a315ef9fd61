package predictor_test

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/features"
	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

func at(min int) time.Time { return time.Date(2024, 1, 1, 0, min, 0, 0, time.UTC) }

func TestScorerUsesLastPriceAtTarget(t *testing.T) {
	s := predictor.NewScorer(at(0), 100, nil)
	// Made at minute 1 for minute 3 (horizon 2), at close 101.
	s.Await(streams.Prediction{ModelID: "m", Start: at(1), Target: at(3), Close: 101, LogReturn: 0.01})
	if got := s.Observe(at(2), 102); len(got) != 0 {
		t.Fatalf("scored before the target: %+v", got)
	}
	// Minute 3 had no trade: the vector at 4 settles it at minute 2's close.
	got := s.Observe(at(4), 110)
	if len(got) != 1 || math.Abs(got[0].Actual-math.Log(102.0/101)) > 1e-15 || !got[0].Hit || s.Pending() != 0 {
		t.Fatalf("scores %+v, pending %d", got, s.Pending())
	}
	s.Await(streams.Prediction{ModelID: "m", Start: at(4), Target: at(5), Close: 110, LogReturn: 0.01})
	got = s.Observe(at(5), 100)
	if len(got) != 1 || got[0].Hit || math.Abs(got[0].AbsError-(0.01-math.Log(100.0/110))) > 1e-15 {
		t.Fatalf("scores %+v", got)
	}
}

func TestLiveWindow(t *testing.T) {
	l := predictor.NewLive(3)
	for _, s := range []predictor.Score{
		{Predicted: 1, Actual: -1}, {Predicted: 1, Actual: 1}, {Predicted: -1, Actual: -1}, {Predicted: 1, Actual: 1},
	} {
		l.Add(s)
	}
	// The first (a miss) has left the window.
	if m := l.Metrics(); m.N != 3 || m.DirectionAccuracy != 1 {
		t.Fatalf("%+v", m)
	}
}

// TestLiveMetricsMatchEvaluate: the running figures are trainer.Evaluate
// over the same window of scores (to rounding), and the gauges are theirs,
// after every score through several turns of the window, with flat minutes
// and a stretch of identical actuals (no spread: no R²).
func TestLiveMetricsMatchEvaluate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const size = 50
	l := predictor.NewLive(size)
	var all []predictor.Score
	for i := range 460 {
		s := predictor.Score{Predicted: r.NormFloat64() * 1e-3, Actual: 1e-4 + r.NormFloat64()*1e-3}
		switch {
		case i >= 300 && i < 360:
			s.Actual = 2e-4 // the window ends up all equal
		case i%7 == 0:
			s.Actual = 0 // a flat minute: no move
		}
		l.Add(s)
		all = append(all, s)
		win := all[max(0, len(all)-size):]
		pred, actual := make([]float64, len(win)), make([]float64, len(win))
		for j, w := range win {
			pred[j], actual[j] = w.Predicted, w.Actual
		}
		want, got := trainer.Evaluate(pred, actual), l.Metrics()
		near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b) }
		if got.N != want.N || got.DirectionAccuracy != want.DirectionAccuracy || !near(got.MSE, want.MSE) ||
			!near(got.MAE, want.MAE) || math.Abs(got.R2-want.R2) > 1e-9*math.Max(1, math.Abs(want.R2)) || (want.R2 == 0) != (got.R2 == 0) {
			t.Fatalf("after %d scores: %+v, Evaluate gives %+v", i+1, got, want)
		}
		if mae, hit := l.Gauges(); mae != got.MAE || hit != got.DirectionAccuracy {
			t.Fatalf("after %d scores: gauges %v %v, metrics %v %v", i+1, mae, hit, got.MAE, got.DirectionAccuracy)
		}
	}
}

// TestNoLookaheadPrediction: rewriting every candle after t leaves the
// vector and the prediction made at t unchanged.
func TestNoLookaheadPrediction(t *testing.T) {
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 7000)[5500:]
	rec := streams.ModelRecord{ID: "m", Horizon: 3, ResidualStd: 0.001,
		Features: []string{"ret_1", "ret_5", "rsi_14", "volume_z_30", "empty_frac_30"}, Coefficients: []float64{1e-5, -0.1, 0.05, -1e-4, 1e-6, 1e-4}}
	m, err := trainer.FromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	predictAt := func(cs []streams.Candle, at time.Time) streams.Prediction {
		calc, err := features.NewCalculator(features.DefaultSpec())
		if err != nil {
			t.Fatal(err)
		}
		s := features.NewSeries(calc)
		for i, c := range cs {
			v, o := s.Add(c, uint64(i+1))
			if o == features.Computed && c.Start.Equal(at) {
				b, err := m.Bind(v.Names)
				if err != nil {
					t.Fatal(err)
				}
				return predictor.Forecast(rec, b, v, 1.96)
			}
		}
		t.Fatalf("no vector at %s", at)
		return streams.Prediction{}
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, cut := range []int{300, 900} {
		changed := slices.Clone(candles)
		for i := cut + 1; i < len(changed); i++ {
			f := 0.8 + 0.4*rng.Float64()
			c := &changed[i]
			c.Open, c.High, c.Low, c.Close, c.Volume = c.Open*f, c.High*f*1.01, c.Low*f*0.99, c.Close*f, c.Volume*2
		}
		a, b := predictAt(candles, candles[cut].Start), predictAt(changed, candles[cut].Start)
		if a.LogReturn != b.LogReturn || a.PredictedClose != b.PredictedClose || a.Lower != b.Lower || a.Upper != b.Upper {
			t.Fatalf("prediction at %s changed with later candles: %+v vs %+v", candles[cut].Start, a, b)
		}
		if a2, b2 := predictAt(candles, candles[cut+1].Start), predictAt(changed, candles[cut+1].Start); a2.LogReturn == b2.LogReturn {
			t.Fatal("the prediction after the cut did not change: the test is blind")
		}
	}
}
