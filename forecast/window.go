package forecast

import "math"

// ring holds the last values pushed; at(0) is the newest.
type ring struct {
	buf   []float64
	pos   int
	count int
}

func newRing(n int) ring { return ring{buf: make([]float64, n), pos: -1} }

func (r *ring) push(v float64) {
	r.pos++
	if r.pos == len(r.buf) {
		r.pos = 0
	}
	r.buf[r.pos] = v
	r.count++
}

// at is the value k pushes ago; k < len(buf).
func (r *ring) at(k int) float64 {
	i := r.pos - k
	if i < 0 {
		i += len(r.buf)
	}
	return r.buf[i]
}

// windowSum is the running sum of the last n values of a ring whose buffer
// is longer than n, kept in constant time per push and recomputed exactly
// now and then so that rounding does not accumulate.
type windowSum struct {
	n   int
	sum float64
}

// update follows a push onto r.
func (w *windowSum) update(r *ring) {
	w.sum += r.at(0)
	if r.count > w.n {
		w.sum -= r.at(w.n)
	}
	if w.sum < 0 {
		w.sum = 0 // rounding below zero on a window of exact zeros
	}
}

func (w *windowSum) recompute(r *ring) {
	var s float64
	for k := range min(w.n, r.count) {
		s += r.at(k)
	}
	w.sum = s
}

// filled is how many of the window's values exist.
func (w *windowSum) filled(r *ring) int { return min(w.n, r.count) }

// mean is the mean over the values that exist (0 before any).
func (w *windowSum) mean(r *ring) float64 {
	k := w.filled(r)
	if k == 0 {
		return 0
	}
	return w.sum / float64(k)
}

// ewMean is an exponentially weighted mean that is the plain mean until it
// has seen as many values as its weight implies, so its start does not lean
// on an invented prior.
type ewMean struct {
	alpha float64
	n     int
	v     float64
	// settled is the first count at which 1/n is at most alpha: from
	// there on the weight is alpha, and add skips the division (tens of
	// them per candle, each a long-latency instruction) with the same
	// result.
	settled int
}

func newEWMean(halfLife float64) ewMean {
	a := decayAlpha(halfLife)
	if !(a > 0) {
		return ewMean{alpha: a, settled: math.MaxInt} // 1/n never reaches it
	}
	// 1/float64(n) is non-increasing in n, so the first n from just below
	// 1/a on where it is at most a is where max(a, 1/n) becomes a.
	n := max(int(min(1/a, 1<<40))-2, 1)
	for 1/float64(n) > a {
		n++
	}
	return ewMean{alpha: a, settled: n}
}

// decayAlpha is the weight of a new value for a half-life in values.
func decayAlpha(halfLife float64) float64 {
	if halfLife <= 0 {
		return 1
	}
	return 1 - pow2(-1/halfLife)
}

func (e *ewMean) add(x float64) {
	e.n++
	w := e.alpha
	if e.n < e.settled {
		w = max(e.alpha, 1/float64(e.n))
	}
	e.v += w * (x - e.v)
}
