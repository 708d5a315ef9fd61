package predictor

import (
	"math"
	"reflect"
	"testing"
	"time"

	"cryptostream/forecast"
	"cryptostream/streams"
)

// TestPredictionParts: a prediction built in its inline parts is the one
// built with every part in an array of its own (nil parts), for counts of horizons, levels and hops
// within the parts and past them; and no part runs into another (an
// append to one horizon's intervals leaves the next one's alone).
func TestPredictionParts(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	v := streams.FeatureVector{Symbol: "BTC/USD", Interval: streams.Interval1m, Start: t0, Close: 100, CandleSeq: 7}
	for _, tc := range []struct{ horizons, levels, hops int }{{3, 2, 1}, {1, 1, 0}, {5, 3, 6}, {2, 4, 3}} {
		var fs []forecast.Forecast
		for h := range tc.horizons {
			f := forecast.Forecast{Horizon: h + 1, Start: t0, Target: t0.Add(time.Duration(h+1) * time.Minute), Center: 1e-4 * float64(h),
				Sigma: 1e-3, Model: "ewma-30", Ready: h != 1}
			for l := range tc.levels {
				cov := 0.5 + 0.1*float64(l)
				if l == 0 {
					cov = math.NaN()
				}
				f.Intervals = append(f.Intervals, forecast.Interval{Level: 0.5 + 0.1*float64(l), Coverage: cov, Covered: l,
					Lower: -1e-3 * float64(l+1), Upper: 1e-3 * float64(l+1)})
			}
			fs = append(fs, f)
		}
		for range tc.hops {
			v.Trace = append(v.Trace, streams.Hop{Stage: "ingest", At: t0})
		}
		var inline predictionParts
		got := prediction(v, fs, 0, "m", &inline)
		got.Trace = inline.stamp(v.Trace, Stage, t0)
		want := prediction(v, fs, 0, "m", nil) // every part in an array of its own
		want.Trace = (*predictionParts)(nil).stamp(v.Trace, Stage, t0)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%+v: inline parts give\n%+v\nwant\n%+v", tc, got, want)
		}
		if len(got.Forecasts) > 2 && len(got.Forecasts[0].Intervals) > 0 {
			next := got.Forecasts[2].Intervals[0]
			_ = append(got.Forecasts[0].Intervals, streams.ForecastInterval{Level: 9})
			if got.Forecasts[2].Intervals[0] != next {
				t.Fatalf("%+v: an append to one horizon's intervals changed another's", tc)
			}
		}
		v.Trace = nil
	}
}
