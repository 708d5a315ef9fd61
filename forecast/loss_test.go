package forecast_test

import (
	"errors"
	"math"
	"testing"

	"cryptostream/forecast"
)

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol*math.Max(1, math.Abs(b)) }

func TestQLIKE(t *testing.T) {
	for _, c := range []struct{ f, y, want float64 }{
		{1, 1, 0},
		{2, 1, 0.5 + math.Ln2 - 1}, // x = 1/2: 0.5 − ln 0.5 − 1
		{1, 2, 2 - math.Ln2 - 1},   // x = 2
		{4e-6, 1e-6, 0.25 + math.Log(4) - 1},
	} {
		if got := forecast.QLIKE(c.f, c.y); !near(got, c.want, 1e-12) {
			t.Errorf("QLIKE(%v, %v) = %v, want %v", c.f, c.y, got, c.want)
		}
	}
	// Over-forecasting by a factor costs less than under-forecasting by
	// it: the asymmetry that makes QLIKE the loss for variances.
	if forecast.QLIKE(2, 1) >= forecast.QLIKE(0.5, 1) {
		t.Error("QLIKE should punish under-forecasting more")
	}
	if !math.IsInf(forecast.QLIKE(1, 0), 1) {
		t.Error("QLIKE of a zero proxy is +Inf")
	}
	// The differential stays finite on a zero proxy: ln(f1/f2).
	if got := forecast.QLIKEDiff(2, 1, 0); !near(got, math.Ln2, 1e-12) {
		t.Errorf("QLIKEDiff(2, 1, 0) = %v, want ln 2", got)
	}
	if got, want := forecast.QLIKEDiff(2, 1, 1), forecast.QLIKE(2, 1)-forecast.QLIKE(1, 1); !near(got, want, 1e-12) {
		t.Errorf("QLIKEDiff = %v, want %v", got, want)
	}
}

func TestIntervalScore(t *testing.T) {
	for _, c := range []struct{ lo, up, level, y, want float64 }{
		{-1, 1, 0.8, 0, 2},
		{-1, 1, 0.8, 2, 2 + 10*1},      // 2/(1−0.8) = 10 per unit outside
		{-1, 1, 0.8, -1.5, 2 + 10*0.5}, // below
		{-1, 1, 0.95, 3, 2 + 40*2},
		{-1, 1, 0.8, 1, 2}, // on the bound is inside
	} {
		if got := forecast.IntervalScore(c.lo, c.up, c.level, c.y); !near(got, c.want, 1e-12) {
			t.Errorf("IntervalScore(%v, %v, %v, %v) = %v, want %v", c.lo, c.up, c.level, c.y, got, c.want)
		}
	}
	if !near(forecast.Brier(0.7, true), 0.09, 1e-12) {
		t.Error("Brier(0.7, up)")
	}
	if !near(forecast.Brier(0.7, false), 0.49, 1e-12) {
		t.Error("Brier(0.7, down)")
	}
}

// TestDieboldMariano checks the statistic on a four-row example worked by
// hand: d = 1, −1, 2, 0 has mean 0.5 and deviations 0.5, −1.5, 1.5, −0.5.
func TestDieboldMariano(t *testing.T) {
	d := []float64{1, -1, 2, 0}
	// t with 3 degrees of freedom: F(x) = 1/2 + (x/(√3(1+x²/3)) + atan(x/√3))/π.
	t3 := func(x float64) float64 {
		return 0.5 + (x/(math.Sqrt(3)*(1+x*x/3))+math.Atan(x/math.Sqrt(3)))/math.Pi
	}
	t.Run("lag 0", func(t *testing.T) {
		// γ0 = (0.25+2.25+2.25+0.25)/4 = 1.25; DM = 0.5/√(1.25/4) =
		// 0.894427; HLN with h = 1: √((4+1−2)/4) = √0.75.
		res, err := forecast.DieboldMariano(d, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := 0.5 / math.Sqrt(1.25/4) * math.Sqrt(0.75)
		if !near(res.Stat, want, 1e-12) || !near(res.Stat, 0.7745967, 1e-6) {
			t.Errorf("stat %v, want %v", res.Stat, want)
		}
		if !near(res.P, t3(want), 1e-9) || !near(res.P, 0.752487, 1e-5) {
			t.Errorf("p %v, want %v", res.P, t3(want))
		}
		if res.Mean != 0.5 || res.N != 4 {
			t.Errorf("%+v", res)
		}
	})
	t.Run("lag 1", func(t *testing.T) {
		// γ1 = (−0.75 − 2.25 − 0.75)/4 = −0.9375; Bartlett weight 1/2:
		// LRV = 1.25 − 0.9375 = 0.3125; DM = 0.5/√(0.3125/4) = 1.788854;
		// HLN with h = 2: √((4+1−4+2/4)/4) = √0.375.
		res, err := forecast.DieboldMariano(d, 1)
		if err != nil {
			t.Fatal(err)
		}
		want := 0.5 / math.Sqrt(0.3125/4) * math.Sqrt(0.375)
		if !near(res.Stat, want, 1e-12) || !near(res.Stat, 1.0954451, 1e-6) {
			t.Errorf("stat %v, want %v", res.Stat, want)
		}
		if !near(res.P, t3(want), 1e-9) {
			t.Errorf("p %v, want %v", res.P, t3(want))
		}
	})
	t.Run("one-sided", func(t *testing.T) {
		neg := []float64{-1, 1, -2, 0}
		res, _ := forecast.DieboldMariano(neg, 0)
		if !near(res.P, 1-t3(0.7745967), 1e-6) {
			t.Errorf("a better candidate has p %v, want %v", res.P, 1-t3(0.7745967))
		}
	})
	t.Run("no difference", func(t *testing.T) {
		res, err := forecast.DieboldMariano([]float64{0, 0, 0, 0, 0}, 1)
		if err != nil || res.Stat != 0 || res.P != 0.5 {
			t.Errorf("%+v %v: identical forecasts are no evidence", res, err)
		}
	})
	t.Run("too few rows", func(t *testing.T) {
		if _, err := forecast.DieboldMariano(d, 2); !errors.Is(err, forecast.ErrTooFewRows) {
			t.Errorf("lag 2 on 4 rows: %v", err)
		}
	})
}

func TestDMLag(t *testing.T) {
	if got := forecast.DMLag(100, 1); got != 4 {
		t.Errorf("DMLag(100, 1) = %d, want Newey-West's 4", got)
	}
	if got := forecast.DMLag(100, 60); got != 59 {
		t.Errorf("DMLag(100, 60) = %d, want the overlap, 59", got)
	}
	if got := forecast.Bonferroni(0.01, 10); !near(got, 0.1, 1e-12) {
		t.Errorf("Bonferroni(0.01, 10) = %v", got)
	}
	if got := forecast.Bonferroni(0.2, 10); got != 1 {
		t.Errorf("Bonferroni caps at 1, got %v", got)
	}
}
