package forecast_test

import (
	"fmt"
	"math"
	"time"

	"cryptostream/forecast"
)

// A predictor stage keeps one Series per symbol, replays history into it
// at warm-up, then calls Add on every closed candle with the champion's
// point forecast per horizon (nil: no-change) and publishes what is Ready.
func ExampleSeries() {
	s, err := forecast.NewSeries(forecast.DefaultConfig(time.Minute))
	if err != nil {
		panic(err)
	}
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	price := 50000.0
	var last forecast.Step
	for i := range 3 * 1440 {
		price *= math.Exp(1e-4 * math.Sin(float64(i)*0.7)) // a deterministic wiggle
		if last, err = s.Add(t0.Add(time.Duration(i)*time.Minute), price, nil); err != nil {
			panic(err)
		}
	}
	f := last.Forecasts[1]
	fmt.Println(f.Horizon, f.Ready, f.Intervals[0].Level, f.Intervals[1].Level)
	fmt.Println(f.Intervals[0].Lower < f.Center && f.Center < f.Intervals[0].Upper)
	// Output:
	// 15 true 0.8 0.95
	// true
}

// The trainer asks the rule before it swaps the champion key.
func ExampleRule_Decide() {
	n := 1000
	tr := forecast.Trial{Horizon: 1, Interval: time.Minute, Tried: 12}
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		a := 1e-3 * math.Sin(float64(i)*1.3)
		tr.Starts = append(tr.Starts, t0.Add(time.Duration(i)*time.Minute))
		tr.Actual = append(tr.Actual, a)
		tr.Candidate = append(tr.Candidate, 0.9*a) // a model that sees it coming
	}
	v, err := forecast.DefaultRule().Decide(tr)
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Promote)
	// Output: true
}
