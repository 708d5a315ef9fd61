package forecast

import "math"

// QLIKE is the loss of a variance forecast f against a realised variance
// proxy y, in the normalised form y/f − log(y/f) − 1: zero for a perfect
// forecast, never negative, and robust to a noisy but unbiased proxy
// (Patton 2011), which is why volatility forecasts are ranked by it. It is
// +Inf for y = 0 (a horizon with no move at all), where only differences
// between forecasts (QLIKEDiff) are defined.
func QLIKE(f, y float64) float64 {
	x := y / f
	return x - math.Log(x) - 1
}

// QLIKEDiff is QLIKE(f1, y) − QLIKE(f2, y), finite also when y = 0: the
// loss differential a Diebold–Mariano test of two variance forecasts uses.
func QLIKEDiff(f1, f2, y float64) float64 {
	return y/f1 - y/f2 + math.Log(f1/f2)
}

// SquaredError is (f − y)², the loss of a point forecast and, on
// variances, the MSE loss of a variance forecast.
func SquaredError(f, y float64) float64 { return (f - y) * (f - y) }

// IntervalScore is the Winkler (interval) score of the central interval
// [lower, upper] of nominal coverage level for the outcome y: its width,
// plus 2/(1−level) times the distance by which y falls outside. Lower is
// better; it rewards narrow intervals only as long as they cover.
func IntervalScore(lower, upper, level, y float64) float64 {
	s := upper - lower
	a := 1 - level
	if y < lower {
		s += 2 / a * (lower - y)
	}
	if y > upper {
		s += 2 / a * (y - upper)
	}
	return s
}

// Brier is the squared error of a probability p for an event that
// happened (1) or not (0).
func Brier(p float64, happened bool) float64 {
	o := 0.0
	if happened {
		o = 1
	}
	return (p - o) * (p - o)
}
