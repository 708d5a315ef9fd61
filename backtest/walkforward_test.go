package backtest_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cryptostream/backtest"
	"cryptostream/forecast"
	"cryptostream/pipeline"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// meanReverting is 1-minute candles whose log returns follow
// r[t] = -0.4 r[t-1] + noise: a pattern ret_1 exposes.
func meanReverting(n int, seed uint64) []streams.Candle {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	price, r := 40000.0, 0.0
	out := make([]streams.Candle, 0, n)
	for i := range n {
		r = -0.4*r + 0.001*rng.NormFloat64()
		open := price
		price *= math.Exp(r)
		hi, lo := math.Max(open, price)*1.0002, math.Min(open, price)*0.9998
		out = append(out, streams.Candle{Symbol: symbol, Interval: streams.Interval1m, Start: start.Add(time.Duration(i) * time.Minute),
			Open: open, High: hi, Low: lo, Close: price, Volume: 1, Trades: 10, Quality: streams.QualityImported})
	}
	return out
}

// TestWalkForward: retrained every 300 vectors on the past only, a model
// that sees the mean reversion is promoted by the trainer's rule, and
// every prediction comes from the champion its decisions left in place
// (no-change before the first promotion and after a demotion).
func TestWalkForward(t *testing.T) {
	cs := meanReverting(3000, 7)
	cfg := backtest.Config{Symbol: symbol, Interval: streams.Interval1m, From: cs[0].Start, To: cs[len(cs)-1].Start, Warmup: -1,
		RetrainEvery: 300, Split: trainer.Split{Features: []string{"ret_1"}, TrainSize: 400, TestSize: 150, Folds: 2, Gap: 2},
		// The trainer's rule, on the 300 rows this split holds out.
		Rule: forecast.Rule{Alpha: 0.05, Margin: 0.005, MinRows: 300}}
	run, err := backtest.Replay(t.Context(), cfg, pipeline.Msgs(msgs(t, cs)), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The champion each prediction must come from, by the decisions.
	champ, k, promotions := streams.ModelNoChange, 0, 0
	for _, p := range run.Predictions {
		for ; k < len(run.Retrains) && !run.Retrains[k].At.After(p.Start); k++ {
			switch r := run.Retrains[k]; {
			case r.Promoted:
				champ = r.ModelID
				promotions++
				if !strings.HasPrefix(r.Decision, "promoted") {
					t.Fatalf("promoted with decision %q", r.Decision)
				}
			case r.Demoted != "":
				champ = streams.ModelNoChange
			}
		}
		if p.ModelID != champ {
			t.Fatalf("prediction at %s by %s, want %s (retrains %+v)", p.Start, p.ModelID, champ, run.Retrains[:k])
		}
	}
	if promotions == 0 || len(run.Retrains) < 5 {
		t.Fatalf("%d promotions in %+v", promotions, run.Retrains)
	}
	rep := run.Report(backtest.Strategy{})
	if rep.Model != "walk-forward" || rep.Point.Model.MSE >= rep.Point.NoChange.MSE || rep.Point.Model.R2 < 0.05 {
		t.Fatalf("walk-forward model: %+v against no change %+v", rep.Point.Model, rep.Point.NoChange)
	}
}
