package forecast

import (
	"math"
	"slices"
)

// Calibration is the split-conformal calibration set of one horizon: the
// last Size standardised errors |actual − center| / sigma whose outcome is
// known, kept in arrival order (to drop the oldest) and in sorted order (to
// read a quantile). The sorted order is cut into blocks of about
// calBlock scores, each sorted, every score of a block at most every score
// of the next: dropping and adding a score moves scores within one block
// each, so the cost of Add hardly grows with the window (8 days of
// one-minute scores at 60 minutes), where one sorted array moved a third
// of it on average. The blocks are evened out once per window of adds.
// No allocation once full, but for a block outgrowing its capacity.
type Calibration struct {
	size   int
	fifo   []float64 // ring, oldest at next when full
	next   int
	n      int
	blocks [][]float64
	adds   int
	flat   []float64 // scratch for rebalance
}

const calBlock = 128

// NewCalibration keeps the last size scores.
func NewCalibration(size int) *Calibration {
	return &Calibration{size: size, fifo: make([]float64, 0, size)}
}

// Len is the number of scores held.
func (c *Calibration) Len() int { return c.n }

// Add records a score, dropping the oldest when full. NaN is ignored.
func (c *Calibration) Add(s float64) {
	if math.IsNaN(s) {
		return
	}
	if len(c.fifo) < c.size {
		c.fifo = append(c.fifo, s)
	} else {
		old := c.fifo[c.next]
		c.fifo[c.next] = s
		c.next = (c.next + 1) % c.size
		c.remove(old)
	}
	c.insert(s)
	c.adds++
	if c.adds >= max(c.size, calBlock) {
		c.rebalance()
	}
}

// block is the first non-empty block whose largest score is at least v,
// or the last non-empty one; -1 when all are empty.
func (c *Calibration) block(v float64) int {
	last := -1
	for i, b := range c.blocks {
		if len(b) == 0 {
			continue
		}
		if b[len(b)-1] >= v {
			return i
		}
		last = i
	}
	return last
}

func (c *Calibration) insert(s float64) {
	i := c.block(s)
	if i < 0 {
		if len(c.blocks) == 0 {
			c.blocks = append(c.blocks, make([]float64, 0, 2*calBlock))
		}
		i = 0
	}
	b := c.blocks[i]
	j, _ := slices.BinarySearch(b, s)
	c.blocks[i] = slices.Insert(b, j, s)
	c.n++
}

// remove drops one copy of v, which the window holds.
func (c *Calibration) remove(v float64) {
	i := c.block(v)
	b := c.blocks[i]
	j, _ := slices.BinarySearch(b, v)
	c.blocks[i] = slices.Delete(b, j, j+1)
	c.n--
}

// rebalance evens the blocks out to calBlock scores each, reusing their
// arrays.
func (c *Calibration) rebalance() {
	c.adds = 0
	c.flat = c.flat[:0]
	for _, b := range c.blocks {
		c.flat = append(c.flat, b...)
	}
	want := max(1, (len(c.flat)+calBlock-1)/calBlock)
	for len(c.blocks) < want {
		c.blocks = append(c.blocks, make([]float64, 0, 2*calBlock))
	}
	for i := range c.blocks {
		lo, hi := min(i*calBlock, len(c.flat)), min((i+1)*calBlock, len(c.flat))
		if i == want-1 {
			hi = len(c.flat)
		}
		c.blocks[i] = append(c.blocks[i][:0], c.flat[lo:hi]...)
	}
}

// rank is the score of rank k (0-based) in sorted order; 0 ≤ k < Len.
func (c *Calibration) rank(k int) float64 {
	for _, b := range c.blocks {
		if k < len(b) {
			return b[k]
		}
		k -= len(b)
	}
	panic("forecast: calibration rank out of range")
}

// sorted is the window in sorted order, a new slice (for tests).
func (c *Calibration) sorted() []float64 {
	var out []float64
	for _, b := range c.blocks {
		out = append(out, b...)
	}
	return out
}

// Quantile is the split-conformal multiplier for miscoverage alpha: the
// ⌈(n+1)(1−alpha)⌉-th smallest score, which covers a new exchangeable
// score with probability at least 1−alpha. When that rank passes n (alpha
// below 1/(n+1), as adaptive inference may ask) it is the largest score:
// the widest interval the data supports, not an invented one. Alpha at or
// above 1 gives 0. No scores: NaN.
func (c *Calibration) Quantile(alpha float64) float64 {
	n := c.n
	if n == 0 {
		return math.NaN()
	}
	if alpha >= 1 {
		return 0
	}
	k := int(math.Ceil(float64(n+1)*(1-alpha))) - 1
	return c.rank(min(max(k, 0), n-1))
}

// At is the score of rank q (0 to 1) in the window, the lower one
// between ranks: the cut points of the regime bins. No scores: NaN.
func (c *Calibration) At(q float64) float64 {
	n := c.n
	if n == 0 {
		return math.NaN()
	}
	return c.rank(min(int(q*float64(n)), n-1))
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
