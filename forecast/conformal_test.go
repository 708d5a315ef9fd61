package forecast_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"cryptostream/forecast"
)

// TestCalibrationQuantile: the split-conformal rank ⌈(n+1)(1−α)⌉ on the
// scores 1..9.
func TestCalibrationQuantile(t *testing.T) {
	c := forecast.NewCalibration(9)
	for _, s := range []float64{5, 9, 1, 7, 3, 8, 2, 6, 4} {
		c.Add(s)
	}
	for _, tc := range []struct{ alpha, want float64 }{
		{0.2, 8},  // ⌈10·0.8⌉ = 8th smallest
		{0.5, 5},  // ⌈5⌉ = 5th
		{0.05, 9}, // ⌈9.5⌉ = 10 > n: the largest
		{0.6, 4},  // ⌈4⌉ = 4th
		{1, 0},
	} {
		if got := c.Quantile(tc.alpha); got != tc.want {
			t.Errorf("Quantile(%v) = %v, want %v", tc.alpha, got, tc.want)
		}
	}
	// The window keeps the last 9: adding 10 and 11 drops 5 and 9.
	c.Add(10)
	c.Add(11)
	if got := c.Quantile(0.2); got != 10 {
		t.Errorf("after the window moved: Quantile(0.2) = %v, want 10, the 8th of 1 2 3 4 6 7 8 10 11", got)
	}
	if got := c.Quantile(0.05); got != 11 {
		t.Errorf("Quantile(0.05) = %v, want 11", got)
	}
	if !math.IsNaN(forecast.NewCalibration(3).Quantile(0.2)) {
		t.Error("no scores: NaN")
	}
}

// TestACI: the working miscoverage moves by step·(α − miss).
func TestACI(t *testing.T) {
	a := forecast.NewACI(0.8, 0.1)
	steps := []struct {
		missed bool
		want   float64
	}{
		{true, 0.2 + 0.1*(0.2-1)}, // 0.12
		{false, 0.12 + 0.1*0.2},   // 0.14
		{false, 0.16},
		{true, 0.16 - 0.08},
	}
	for i, s := range steps {
		a.Observe(s.missed)
		if !near(a.Alpha(), s.want, 1e-12) {
			t.Fatalf("step %d: alpha %v, want %v", i, a.Alpha(), s.want)
		}
	}
}

// TestACIFloor: the working miscoverage stops at Min, and the first hit
// moves it up from there, not from where the misses would have taken it.
func TestACIFloor(t *testing.T) {
	a := forecast.NewACI(0.8, 0.1)
	a.Min = 0.09
	for i, want := range []float64{0.12, 0.09, 0.09, 0.09 + 0.1*0.2} {
		a.Observe(i < 3)
		if !near(a.Alpha(), want, 1e-12) {
			t.Fatalf("step %d: alpha %v, want %v", i, a.Alpha(), want)
		}
	}
}

// TestConformalCoverage: on exchangeable scores the split-conformal
// multiplier covers at its nominal level, and adaptive conformal inference
// restores the coverage after the scale of the errors jumps.
func TestConformalCoverage(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	run := func(step float64) (before, after float64) {
		c := forecast.NewCalibration(500)
		a := forecast.NewACI(0.8, step)
		scale := 1.0
		var hit [2]int
		var n [2]int
		for i := range 40000 {
			if i == 20000 {
				scale = 2 // the market changes: errors twice the forecast
			}
			s := math.Abs(rng.NormFloat64()) * scale
			if i >= 500 {
				q := c.Quantile(a.Alpha())
				k := 0
				if i >= 20000 {
					k = 1
				}
				n[k]++
				// After the jump, measure only once the 500-score
				// window has turned over.
				if s <= q {
					if k == 0 || i >= 20500 {
						hit[k]++
					}
				}
				a.Observe(s > q)
			}
			c.Add(s)
		}
		return float64(hit[0]) / float64(n[0]), float64(hit[1]) / float64(n[1]-500)
	}
	before, _ := run(0)
	if before < 0.79 || before > 0.81 {
		t.Errorf("split conformal covers %.3f of exchangeable scores, want 0.80", before)
	}
	_, after := run(0.01)
	if after < 0.78 || after > 0.82 {
		t.Errorf("with ACI, coverage after the change %.3f, want 0.80", after)
	}
}
