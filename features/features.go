// Package features owns the model inputs: the pure functions that turn a
// window of closed candles into a FeatureVector, the per-symbol rolling
// series that feeds them in order, and the worker that runs them on MARKET
// and publishes to FEATURES. The maths never touches NATS, so the backtester
// and the tests call exactly what the live worker calls.
//
// Every feature is computed on the interval grid, not on the list of candles:
// a minute with no trades is absent from Kraken's data (or present as a flat
// "filled" candle, when the ingester fills it), and both must give the same
// vector. The close at a grid point is the close of the last candle that
// started at or before it (no trade means the price did not move), and the
// volume at a grid point with no candle is zero. So a return over k
// intervals is always over k elapsed intervals, never over k candles.
package features

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"cryptostream/streams"
)

// ErrWarmup reports a window that does not yet reach back far enough to
// compute every feature: no vector rather than a vector of guesses.
var ErrWarmup = errors.New("features: window does not cover the lookback yet")

// Spec is the feature set. Its zero value is not useful: start from
// DefaultSpec.
type Spec struct {
	// Lags are the horizons, in intervals, of the log returns.
	Lags []int
	// SMA and EMA are the lengths of the moving averages whose ratio to the
	// close is a feature.
	SMA []int
	EMA []int
	// RSI is the length of Wilder's relative strength index (simple-average
	// form over the window).
	RSI int
	// Vol is the length of the realised volatility and of the volume
	// z-score's reference window and of the empty-interval fraction.
	Vol int
}

// DefaultSpec is the feature set the live system runs.
func DefaultSpec() Spec {
	return Spec{Lags: []int{1, 5, 15, 60}, SMA: []int{10, 30}, EMA: []int{12, 26}, RSI: 14, Vol: 30}
}

// Validate rejects a spec whose lengths cannot be computed.
func (s Spec) Validate() error {
	for _, n := range s.Lags {
		if n < 1 {
			return fmt.Errorf("features: lag %d", n)
		}
	}
	for _, n := range append(append([]int{}, s.SMA...), s.EMA...) {
		if n < 1 {
			return fmt.Errorf("features: moving average length %d", n)
		}
	}
	if s.RSI < 2 || s.Vol < 2 {
		return fmt.Errorf("features: rsi %d and vol %d must be at least 2", s.RSI, s.Vol)
	}
	return nil
}

// Lookback is how many intervals before t the features reach: the window
// must hold the price at t-Lookback.
func (s Spec) Lookback() int {
	lb := max(s.RSI, s.Vol)
	for _, n := range s.Lags {
		lb = max(lb, n)
	}
	for _, n := range s.SMA {
		lb = max(lb, n-1)
	}
	for _, n := range s.EMA {
		// The EMA runs over the whole window, seeded at its first point;
		// three lengths make the seed's weight small (about 0.5%).
		lb = max(lb, 3*n)
	}
	return lb
}

// Names lists the features in the order Compute returns them.
func (s Spec) Names() []string {
	var names []string
	for _, n := range s.Lags {
		names = append(names, "ret_"+strconv.Itoa(n))
	}
	for _, n := range s.SMA {
		names = append(names, "sma_ratio_"+strconv.Itoa(n))
	}
	for _, n := range s.EMA {
		names = append(names, "ema_ratio_"+strconv.Itoa(n))
	}
	v := strconv.Itoa(s.Vol)
	return append(names, "rsi_"+strconv.Itoa(s.RSI), "vol_"+v, "volume_z_"+v, "range", "tod_sin", "tod_cos", "empty_frac_"+v)
}

// Calculator computes vectors for one Spec, reusing its scratch space: one
// per goroutine.
type Calculator struct {
	spec  Spec
	names []string
	// The batch path's grid scratch space (Compute); a Series keeps its
	// own.
	close []float64
	vol   []float64
	ret   []float64
	diff  []float64
	empty []bool
}

// NewCalculator validates spec and returns a calculator for it.
func NewCalculator(spec Spec) (*Calculator, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	n := spec.Lookback() + 1
	return &Calculator{spec: spec, names: spec.Names(), close: make([]float64, n), vol: make([]float64, n),
		ret: make([]float64, n), diff: make([]float64, n), empty: make([]bool, n)}, nil
}

// Spec is the calculator's feature set.
func (c *Calculator) Spec() Spec { return c.spec }

// Names lists the features, shared: do not modify.
func (c *Calculator) Names() []string { return c.names }

// Compute returns the feature values at the last candle of window, which
// must be sorted by start, of one symbol and interval, and reach back to
// t-Lookback (a candle starting at or before that instant). Candles after the
// last are not looked at because there are none: that is the no-lookahead
// guarantee, and the test changes later candles to prove it.
//
// Compute resamples the whole window on every call; a Series steps the same
// grid one candle at a time and gives the same values to the last bit.
func (c *Calculator) Compute(window []streams.Candle) ([]float64, error) {
	if len(window) == 0 {
		return nil, ErrWarmup
	}
	last := window[len(window)-1]
	iv := last.Interval.Duration()
	lb := c.spec.Lookback()
	t0 := last.Start.Add(-time.Duration(lb) * iv)
	if window[0].Start.After(t0) {
		return nil, ErrWarmup
	}
	// Sample the grid t-lb .. t: close carried forward, volume zero and
	// the point marked empty where no candle started.
	j := 0
	for i := 0; i <= lb; i++ {
		g := t0.Add(time.Duration(i) * iv)
		for j+1 < len(window) && !window[j+1].Start.After(g) {
			j++
		}
		cd := &window[j]
		c.close[i] = cd.Close
		if cd.Start.Equal(g) {
			c.vol[i] = cd.Volume
			c.empty[i] = cd.Volume == 0
		} else {
			c.vol[i] = 0
			c.empty[i] = true
		}
	}
	// Only the points the statistics read: the log returns of the
	// volatility and the differences of the RSI.
	for i := lb - c.spec.Vol + 1; i <= lb; i++ {
		c.ret[i] = math.Log(c.close[i] / c.close[i-1])
	}
	for i := lb - c.spec.RSI + 1; i <= lb; i++ {
		c.diff[i] = c.close[i] - c.close[i-1]
	}
	empty := 0
	for i := lb - c.spec.Vol + 1; i <= lb; i++ {
		if c.empty[i] {
			empty++
		}
	}
	out := make([]float64, len(c.names))
	c.values(out, grid{close: c.close, vol: c.vol, ret: c.ret, diff: c.diff, empty: empty}, &last)
	return out, nil
}

// grid is a window sampled on the interval grid, oldest first, its last
// point at the candle the vector is for; every slice has Lookback+1 points.
type grid struct {
	close []float64
	vol   []float64 // zero where no candle started
	ret   []float64 // log(close[i]/close[i-1])
	diff  []float64 // close[i]-close[i-1]
	empty int       // empty points among the last Vol
}

// values writes the features of g into out, in Names order. The batch and
// the incremental paths both end here, so they agree by construction on
// everything but the sampling; each sum runs over its points oldest first,
// which is what keeps a flat window's sums exactly zero (RSI 0.5, volume
// z-score 0) where a running sum would leave a rounding residue.
func (c *Calculator) values(out []float64, g grid, last *streams.Candle) {
	lb := len(g.close) - 1
	closes := g.close
	now := closes[lb]
	k := 0
	for _, n := range c.spec.Lags {
		out[k] = math.Log(now / closes[lb-n])
		k++
	}
	for _, n := range c.spec.SMA {
		var sum float64
		for i := lb - n + 1; i <= lb; i++ {
			sum += closes[i]
		}
		out[k] = now/(sum/float64(n)) - 1
		k++
	}
	// The EMAs run two at a time: each step waits on the one before, so
	// two independent chains in one loop take the time of one. Each
	// keeps its own order of operations, so the values do not change.
	emas := c.spec.EMA
	for ; len(emas) >= 2; emas = emas[2:] {
		a1, a2 := 2/(float64(emas[0])+1), 2/(float64(emas[1])+1)
		e1, e2 := closes[0], closes[0]
		for _, p := range closes[1 : lb+1] {
			e1 += a1 * (p - e1)
			e2 += a2 * (p - e2)
		}
		out[k], out[k+1] = now/e1-1, now/e2-1
		k += 2
	}
	for _, n := range emas {
		alpha := 2 / (float64(n) + 1)
		ema := closes[0]
		for _, p := range closes[1 : lb+1] {
			ema += alpha * (p - ema)
		}
		out[k] = now/ema - 1
		k++
	}
	var gain, loss float64
	for i := lb - c.spec.RSI + 1; i <= lb; i++ {
		d := g.diff[i]
		if d > 0 {
			gain += d
		} else {
			loss -= d
		}
	}
	rsi := 0.5 // no movement at all: neither side has strength
	if gain+loss > 0 {
		rsi = gain / (gain + loss)
	}
	out[k] = rsi
	k++

	nv := c.spec.Vol
	var sq float64
	for i := lb - nv + 1; i <= lb; i++ {
		r := g.ret[i]
		sq += r * r
	}
	out[k] = math.Sqrt(sq / float64(nv))
	k++

	// The volume z-score compares this interval with the ones before it,
	// not including itself, so a spike is not diluted by its own weight.
	var mean, m2 float64
	for i := lb - nv; i < lb; i++ {
		mean += g.vol[i]
	}
	mean /= float64(nv)
	for i := lb - nv; i < lb; i++ {
		d := g.vol[i] - mean
		m2 += d * d
	}
	z := 0.0
	if sd := math.Sqrt(m2 / float64(nv)); sd > 0 {
		z = (g.vol[lb] - mean) / sd
	}
	out[k] = z
	k++

	out[k] = (last.High - last.Low) / last.Close
	secs := last.Start.UTC().Sub(last.Start.UTC().Truncate(24 * time.Hour)).Seconds()
	angle := 2 * math.Pi * secs / 86400
	out[k+1], out[k+2] = math.Sin(angle), math.Cos(angle)
	out[k+3] = float64(g.empty) / float64(nv)
}

// Vector builds the FeatureVector of the last candle of window; seq is that
// candle's MARKET sequence, kept as provenance.
func (c *Calculator) Vector(window []streams.Candle, seq uint64) (streams.FeatureVector, error) {
	values, err := c.Compute(window)
	if err != nil {
		return streams.FeatureVector{}, err
	}
	last := window[len(window)-1]
	return streams.FeatureVector{
		Symbol: last.Symbol, Interval: last.Interval, Start: last.Start, Close: last.Close,
		Names: c.names, Values: values, CandleSeq: seq, Window: c.quality(window),
	}, nil
}

// quality counts the candles the vector was computed from by quality, so a
// prediction can say whether it stood on live, repaired or synthetic data.
func (c *Calculator) quality(window []streams.Candle) map[streams.Quality]int {
	last := window[len(window)-1]
	t0 := last.Start.Add(-time.Duration(c.spec.Lookback()) * last.Interval.Duration())
	q := map[streams.Quality]int{}
	for i := len(window) - 1; i >= 0; i-- {
		q[window[i].Quality]++
		// The candle at or before t0 is the one carried into the window;
		// anything older was not used.
		if !window[i].Start.After(t0) {
			break
		}
	}
	return q
}
