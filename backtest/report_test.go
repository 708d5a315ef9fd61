package backtest

import (
	"math"
	"testing"
	"time"

	"cryptostream/streams"
)

func bars(closes ...float64) []Bar {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	out := make([]Bar, len(closes))
	for i, c := range closes {
		out[i] = Bar{Start: t0.Add(time.Duration(i) * time.Minute), Close: c}
	}
	return out
}

func near(t *testing.T, what string, got, want float64) {
	t.Helper()
	if math.Abs(got-want) > 1e-12*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

// TestSimulateByHand: the strategy maths against figures worked out on
// paper. Closes 100, 110, 99, 108.9, 120; long, long, flat, long; fees
// 0.1% and slippage 0.05%, so every change of position keeps 0.9985 of
// the equity.
//
//	close 100: enter            0.9985
//	to 110 (+10%)               0.9985 × 1.1            = 1.09835 (the peak)
//	to 99 (-10%)                1.09835 × 0.9           = 0.988515
//	close 99: exit              × 0.9985                = 0.98703222...
//	close 108.9: enter          × 0.9985                = 0.98555167...
//	    drawdown there: 1 - 0.9 × 0.9985² = 1 - 0.897302025 = 0.102697975
//	to 120, then exit           × 120/108.9 × 0.9985
//	total: 0.9985⁴ × 1.1 × 0.9 × 120/108.9 - 1 = 0.0843783489146...
//
// Four trades (enter, exit, enter, the closing exit), long three periods
// of four. Buy-and-hold: 0.9985 × 1.2 × 0.9985 - 1 = 0.1964027.
func TestSimulateByHand(t *testing.T) {
	b := bars(100, 110, 99, 108.9, 120)
	c := Simulate(b, []bool{true, true, false, true, false}, 0.001+0.0005, streams.Interval1m)
	near(t, "total return", c.TotalReturn, 0.08437834891461393)
	near(t, "max drawdown", c.MaxDrawdown, 0.102697975)
	if c.Trades != 4 || c.Periods != 4 {
		t.Errorf("%d trades over %d periods, want 4 over 4", c.Trades, c.Periods)
	}
	near(t, "exposure", c.Exposure, 0.75)
	// Per-period net returns: 0.9985×1.1-1, -0.1, -0.0015,
	// 0.9985²×120/108.9-1; mean 0.0242437672, sample sd 0.0942270...,
	// downside root mean square sqrt((0.01+0.00000225)/4) = 0.0500005625.
	rets := []float64{0.9985*1.1 - 1, -0.1, -0.0015, 0.9985*0.9985*120/108.9 - 1}
	mean := (rets[0] + rets[1] + rets[2] + rets[3]) / 4
	perYear := 365 * 24 * 60.0
	near(t, "sortino", *c.Sortino, mean/math.Sqrt((0.1*0.1+0.0015*0.0015)/4)*math.Sqrt(perYear))
	if c.Sharpe == nil || math.Abs(*c.Sharpe-181.99078424882092) > 1e-9 {
		t.Errorf("sharpe %v, want 181.990784...", c.Sharpe)
	}
	if len(c.Equity) != 5 {
		t.Fatalf("equity curve %v", c.Equity)
	}
	near(t, "equity after the first period", c.Equity[1], 1.09835)
	near(t, "equity after the exit", c.Equity[3], 0.988515*0.9985)
	h := Simulate(b, []bool{true, true, true, true, true}, 0.0015, streams.Interval1m)
	near(t, "buy and hold", h.TotalReturn, 0.9985*1.2*0.9985-1)
	if h.Trades != 2 || h.Exposure != 1 {
		t.Errorf("buy and hold: %d trades, exposure %v", h.Trades, h.Exposure)
	}
	flat := Simulate(b, make([]bool, 5), 0.0015, streams.Interval1m)
	if flat.TotalReturn != 0 || flat.Trades != 0 || flat.Sharpe != nil || flat.Sortino != nil || flat.MaxDrawdown != 0 {
		t.Errorf("never long: %+v", flat.Performance)
	}
}

// TestGapAndFilledPolicy: a target in a gap is priced at the last close,
// a target past the range is not scored, and the strategy does not trade
// on a filled candle's signal.
func TestGapAndFilledPolicy(t *testing.T) {
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Minute) }
	r := &Run{cfg: Config{Symbol: "BTC/USD", Interval: streams.Interval1m}, Bars: []Bar{
		{Start: at(0), Close: 100}, {Start: at(1), Close: 110}, // minute 2 has no trade
		{Start: at(3), Close: 99}, {Start: at(4), Close: 99, Filled: true}, {Start: at(5), Close: 120},
	}}
	for _, i := range []int{0, 1, 3, 4, 5} {
		lr := 0.01
		if i == 4 {
			lr = -0.01 // would sell, but nothing traded in that minute
		}
		close, _ := r.priceAt(at(i))
		r.Predictions = append(r.Predictions, &streams.Prediction{Interval: streams.Interval1m, Start: at(i), Target: at(i + 1),
			Horizon: 1, Close: close, LogReturn: lr})
	}
	pt, _, _ := r.score()
	// Minute 0 has no last return (nothing before it), minute 5's target
	// is past the range.
	if pt.Scored != 3 || pt.Unscored != 2 {
		t.Fatalf("scored %d, unscored %d; want 3 and 2", pt.Scored, pt.Unscored)
	}
	// Actuals: 1→2 priced through the gap at 110 (0), 3→4 (0), 4→5.
	near(t, "no-change MSE", pt.NoChange.MSE, math.Pow(math.Log(120.0/99), 2)/3)
	s, _ := r.Trade(Strategy{})
	near(t, "strategy return", s.TotalReturn, 0.2)
	if s.Trades != 2 || s.Exposure != 1 {
		t.Fatalf("%d trades, exposure %v: want 2 and 1 (held through the filled minute)", s.Trades, s.Exposure)
	}
}
