package predictor_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// TestPredictionsCarryFailing: every prediction carries, per horizon, the
// live score's "model failing" condition as it stood when the prediction
// was made, the very flag the registry's copy of the score holds. A random
// walk whose price then stops moving leaves the 80% interval covering
// every outcome, so the series goes from not failing to failing.
func TestPredictionsCarryFailing(t *testing.T) {
	candles := randomWalk(3000, 11)
	last := candles[len(candles)-1]
	for i := 1; i <= 3000; i++ {
		c := last
		c.Start = last.Start.Add(time.Duration(i) * time.Minute)
		c.Open, c.High, c.Low = last.Close, last.Close, last.Close
		candles = append(candles, c)
	}
	vs := vectorsOf(t, candles)
	msgs := featureMsgs(t, vs)
	stage := predictor.NewPredictions(predictor.PredictionsConfig{}, nil, discard, prometheus.NewRegistry())
	series := streams.Interval1m.String() + "." + "BTC-USD"
	seen := map[bool]int{}
	for out, err := range pipeline.Replay(t.Context(), stage, pipeline.Msgs(msgs), pipeline.ReplayConfig{}) {
		if err != nil {
			t.Fatal(err)
		}
		p, ok := out.Event.(*streams.Prediction)
		if !ok {
			continue
		}
		rec, ok := stage.ForecastScore(series)
		if !ok || len(rec.Horizons) != len(p.Forecasts) {
			t.Fatalf("score of %s: %+v", series, rec)
		}
		for i, f := range p.Forecasts {
			h := rec.Horizons[i]
			if f.Horizon != h.Horizon || f.Failing != h.Failing || f.FailingReason != h.FailingReason {
				t.Fatalf("prediction of %s horizon %d: failing %v (%q), the live score says %v (%q)",
					p.Start, f.Horizon, f.Failing, f.FailingReason, h.Failing, h.FailingReason)
			}
			seen[f.Failing]++
		}
	}
	if seen[true] == 0 || seen[false] == 0 {
		t.Fatalf("horizons failing / not: %d / %d; the test needs both", seen[true], seen[false])
	}
	t.Logf("horizons failing / not: %d / %d", seen[true], seen[false])
}
