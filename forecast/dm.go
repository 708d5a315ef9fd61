package forecast

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/stat/distuv"
)

// ErrTooFewRows reports a test on fewer rows than it can be computed on.
var ErrTooFewRows = errors.New("forecast: too few rows for the test")

// DM is a Diebold–Mariano test of equal predictive accuracy on the loss
// differentials d = loss(candidate) − loss(reference).
type DM struct {
	N int
	// Mean is the mean loss differential: negative when the candidate
	// does better.
	Mean float64
	// Stat is Mean over its HAC standard error, with the Harvey, Leybourne
	// and Newbold small-sample correction; P is the one-sided p-value of
	// "the candidate is better" (Stat far below zero gives P near 0), from
	// Student's t with N−1 degrees of freedom.
	Stat, P float64
	// Lag is the number of autocovariances in the Newey–West variance.
	Lag int
}

// DMLag is the Newey–West truncation lag for h-step forecasts on n rows:
// the h−1 autocovariances that overlapping horizons create, or Newey and
// West's automatic rule 4(n/100)^(2/9) when that is larger, because losses
// at these intervals stay autocorrelated beyond the overlap (volatility
// clusters).
func DMLag(n, horizon int) int {
	auto := int(math.Floor(4 * math.Pow(float64(n)/100, 2.0/9)))
	return max(horizon-1, auto)
}

// DieboldMariano tests d (one differential per forecast origin, in time
// order) with a Newey–West (Bartlett kernel) long-run variance truncated at
// lag. A differential that is zero on every row gives Stat 0 and P 0.5: no
// evidence either way.
func DieboldMariano(d []float64, lag int) (DM, error) {
	n := len(d)
	if lag < 0 {
		return DM{}, fmt.Errorf("forecast: lag %d", lag)
	}
	if n < 2 || n <= 2*lag {
		return DM{}, fmt.Errorf("%w: %d rows for lag %d", ErrTooFewRows, n, lag)
	}
	var mean float64
	for _, x := range d {
		mean += x
	}
	mean /= float64(n)
	acov := func(k int) float64 {
		var s float64
		for i := k; i < n; i++ {
			s += (d[i] - mean) * (d[i-k] - mean)
		}
		return s / float64(n)
	}
	lrv := acov(0)
	for k := 1; k <= lag; k++ {
		lrv += 2 * (1 - float64(k)/float64(lag+1)) * acov(k)
	}
	res := DM{N: n, Mean: mean, Lag: lag, P: 0.5}
	if !(lrv > 0) {
		if mean < 0 {
			res.Stat, res.P = math.Inf(-1), 0
		} else if mean > 0 {
			res.Stat, res.P = math.Inf(1), 1
		}
		return res, nil
	}
	stat := mean / math.Sqrt(lrv/float64(n))
	// Harvey, Leybourne and Newbold (1997), with h = lag+1.
	h := float64(lag + 1)
	nf := float64(n)
	if c := (nf + 1 - 2*h + h*(h-1)/nf) / nf; c > 0 {
		stat *= math.Sqrt(c)
	}
	res.Stat = stat
	res.P = distuv.StudentsT{Mu: 0, Sigma: 1, Nu: nf - 1}.CDF(stat)
	return res, nil
}

// Bonferroni is the p-value of the best of tried candidates: the
// probability bound that any of them looks this good by chance.
func Bonferroni(p float64, tried int) float64 {
	return min(1, p*float64(max(tried, 1)))
}
