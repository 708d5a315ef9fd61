package forecast

import (
	"math"
	"slices"
)

// Calibration is the split-conformal calibration set of one horizon: the
// last Size standardised errors |actual − center| / sigma whose outcome is
// known, kept in arrival order (to drop the oldest) and sorted (to read a
// quantile). Once full, adding moves only the scores ranked between the
// one dropped and the one added, by one place: on a stationary stream that
// is a third of the window on average, where deleting and then inserting
// moves a whole window's length. No allocation once full.
type Calibration struct {
	size   int
	fifo   []float64 // ring, oldest at next when full
	next   int
	sorted []float64
}

// NewCalibration keeps the last size scores.
func NewCalibration(size int) *Calibration {
	return &Calibration{size: size, fifo: make([]float64, 0, size), sorted: make([]float64, 0, size)}
}

// Len is the number of scores held.
func (c *Calibration) Len() int { return len(c.sorted) }

// Add records a score, dropping the oldest when full. NaN is ignored.
func (c *Calibration) Add(s float64) {
	if math.IsNaN(s) {
		return
	}
	if len(c.fifo) < c.size {
		c.fifo = append(c.fifo, s)
		i, _ := slices.BinarySearch(c.sorted, s)
		c.sorted = slices.Insert(c.sorted, i, s)
		return
	}
	old := c.fifo[c.next]
	c.fifo[c.next] = s
	c.next = (c.next + 1) % c.size
	// i is where old sits, j the first place holding a score ≥ s.
	i, _ := slices.BinarySearch(c.sorted, old)
	j, _ := slices.BinarySearch(c.sorted, s)
	if j > i {
		// Everything in (i, j) lies in [old, s): one place down.
		copy(c.sorted[i:j-1], c.sorted[i+1:j])
		c.sorted[j-1] = s
		return
	}
	// Everything in [j, i) lies in [s, old]: one place up, over old.
	copy(c.sorted[j+1:i+1], c.sorted[j:i])
	c.sorted[j] = s
}

// Quantile is the split-conformal multiplier for miscoverage alpha: the
// ⌈(n+1)(1−alpha)⌉-th smallest score, which covers a new exchangeable
// score with probability at least 1−alpha. When that rank passes n (alpha
// below 1/(n+1), as adaptive inference may ask) it is the largest score:
// the widest interval the data supports, not an invented one. Alpha at or
// above 1 gives 0. No scores: NaN.
func (c *Calibration) Quantile(alpha float64) float64 {
	n := len(c.sorted)
	if n == 0 {
		return math.NaN()
	}
	if alpha >= 1 {
		return 0
	}
	k := int(math.Ceil(float64(n+1)*(1-alpha))) - 1
	return c.sorted[min(max(k, 0), n-1)]
}

// At is the score of rank q (0 to 1) in the window, the lower one
// between ranks: the cut points of the regime bins. No scores: NaN.
func (c *Calibration) At(q float64) float64 {
	n := len(c.sorted)
	if n == 0 {
		return math.NaN()
	}
	return c.sorted[min(int(q*float64(n)), n-1)]
}

// ACI is adaptive conformal inference (Gibbs and Candès 2021) for one
// nominal level: the working miscoverage alpha moves after each outcome by
// Step times (nominal miscoverage − miss), widening the interval after
// misses and narrowing it after hits, so that the long-run miss rate
// tracks the nominal one whatever the market does.
type ACI struct {
	Level float64 // nominal coverage, 0.8
	Step  float64 // gamma
	alpha float64
}

// NewACI starts at the nominal level.
func NewACI(level, step float64) ACI { return ACI{Level: level, Step: step, alpha: 1 - level} }

// Alpha is the working miscoverage for the next interval.
func (a *ACI) Alpha() float64 { return a.alpha }

// Observe takes whether the interval issued for an outcome missed it.
func (a *ACI) Observe(missed bool) {
	e := 0.0
	if missed {
		e = 1
	}
	a.alpha += a.Step * ((1 - a.Level) - e)
	// Bounded so that a long spell past the widest interval (or of
	// certain hits) is undone in bounded time.
	a.alpha = min(max(a.alpha, -0.25), 1)
}

// hitWindow is a rolling share of hits over the last n outcomes.
type hitWindow struct {
	ring []bool
	next int
	full bool
	hits int
}

func newHitWindow(n int) hitWindow { return hitWindow{ring: make([]bool, n)} }

func (w *hitWindow) add(hit bool) {
	if w.full && w.ring[w.next] {
		w.hits--
	}
	w.ring[w.next] = hit
	if hit {
		w.hits++
	}
	w.next++
	if w.next == len(w.ring) {
		w.next, w.full = 0, true
	}
}

func (w *hitWindow) count() int {
	if w.full {
		return len(w.ring)
	}
	return w.next
}

func (w *hitWindow) share() float64 {
	n := w.count()
	if n == 0 {
		return math.NaN()
	}
	return float64(w.hits) / float64(n)
}
