package forecast

import (
	"math"
	"slices"
)

// Calibration is the split-conformal calibration set of one horizon: the
// last Size standardised errors |actual − center| / sigma whose outcome is
// known, kept in arrival order (to drop the oldest) and in sorted order (to
// read a quantile). The sorted order is cut into blocks of at most
// 2·calBlock scores, each sorted, every score of a block at most every
// score of the next, with two small indexes beside them: each block's
// largest score (a binary search finds the block a score goes to) and the
// rank of each block's first score (a binary search finds the block of a
// rank). So an add and a quantile cost O(log n) searches and a move within
// one block, however long the window (8 days of one-minute scores at 60
// minutes): the blocks alone were found by a walk over every block, two
// per add and one per quantile, which was most of the time at 11,520
// scores. A block that fills is split and one that empties is dropped;
// the blocks are evened out once per window of adds. No allocation once
// full.
type Calibration struct {
	size   int
	fifo   []float64 // ring, oldest at next when full
	next   int
	n      int
	blocks [][]float64 // never an empty one
	maxes  []float64   // maxes[i] is blocks[i]'s last score
	starts []int       // starts[i] is the rank of blocks[i]'s first score
	spare  [][]float64 // the arrays of dropped blocks, for the next split
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
		c.insert(s)
	} else {
		old := c.fifo[c.next]
		c.fifo[c.next] = s
		c.next = (c.next + 1) % c.size
		c.replace(old, s)
	}
	c.adds++
	if c.adds >= max(c.size, calBlock) {
		c.rebalance()
	}
}

// block is the first block whose largest score is at least v, or the last
// one; -1 when there is none.
func (c *Calibration) block(v float64) int {
	lo, hi := 0, len(c.maxes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if c.maxes[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return min(lo, len(c.maxes)-1)
}

// lowerBound is the first index of b (sorted) whose score is at least v:
// slices.BinarySearch's index, with a plain comparison, since no NaN is
// ever held (Add drops them), where cmp.Compare checks for NaN on every
// probe.
func lowerBound(b []float64, v float64) int {
	lo, hi := 0, len(b)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if b[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

func (c *Calibration) newBlock() []float64 {
	if k := len(c.spare); k > 0 {
		b := c.spare[k-1][:0]
		c.spare = c.spare[:k-1]
		return b
	}
	return make([]float64, 0, 2*calBlock)
}

func (c *Calibration) insert(s float64) {
	i := c.block(s)
	if i < 0 {
		c.blocks = append(c.blocks, c.newBlock())
		c.maxes = append(c.maxes, s)
		c.starts = append(c.starts, 0)
		i = 0
	}
	i = c.put(i, s)
	for k := i + 1; k < len(c.starts); k++ {
		c.starts[k]++
	}
	c.n++
}

// put inserts s into block i, where it belongs, splitting the block if it
// is full, and returns the block s went into. The starts of the blocks
// after that one are the caller's to move.
func (c *Calibration) put(i int, s float64) int {
	b := c.blocks[i]
	j := lowerBound(b, s)
	if len(b) == cap(b) {
		// Full: split in two, the upper half into a block of its own,
		// rather than let append move the whole block to a larger array.
		half := len(b) / 2
		up := append(c.newBlock(), b[half:]...)
		b = b[:half]
		c.blocks[i] = b
		c.blocks = slices.Insert(c.blocks, i+1, up)
		c.maxes = slices.Insert(c.maxes, i+1, up[len(up)-1])
		c.starts = slices.Insert(c.starts, i+1, c.starts[i]+half)
		c.maxes[i] = b[half-1]
		if j > half {
			i, j, b = i+1, j-half, up
		}
	}
	b = slices.Insert(b, j, s)
	c.blocks[i], c.maxes[i] = b, b[len(b)-1]
	return i
}

// replace drops one copy of old, which the window holds, and inserts s: a
// remove and an insert, except that only the starts of the blocks between
// the two move (each of the two moved every block after its own), and
// that within one block the scores between the two positions shift once.
// Any block s may go to gives the same sorted window: the block is
// chosen before old leaves, where s may still be at most its block's
// largest score only because of old.
func (c *Calibration) replace(old, s float64) {
	i := c.block(old)
	b := c.blocks[i]
	j := lowerBound(b, old)
	k := c.block(s)
	if k == i {
		if p := lowerBound(b, s); p <= j {
			copy(b[p+1:j+1], b[p:j])
			b[p] = s
		} else {
			copy(b[j:p-1], b[j+1:p])
			b[p-1] = s
		}
		c.maxes[i] = b[len(b)-1]
		return
	}
	if len(b) == 1 {
		c.remove(old) // the block goes, and the indexes with it
		c.insert(s)
		return
	}
	b = slices.Delete(b, j, j+1)
	c.blocks[i], c.maxes[i] = b, b[len(b)-1]
	// A block's start counts the scores before it: one fewer past i, one
	// more past k.
	for q := i + 1; q <= k; q++ {
		c.starts[q]--
	}
	for q := k + 1; q <= i; q++ {
		c.starts[q]++
	}
	blocks := len(c.blocks)
	if in := c.put(k, s); in == k && len(c.blocks) > blocks {
		c.starts[k+1]++ // the upper half split off, s below it
	}
}

// remove drops one copy of v, which the window holds.
func (c *Calibration) remove(v float64) {
	i := c.block(v)
	b := c.blocks[i]
	j := lowerBound(b, v)
	b = slices.Delete(b, j, j+1)
	for k := i + 1; k < len(c.starts); k++ {
		c.starts[k]--
	}
	c.n--
	if len(b) == 0 {
		c.spare = append(c.spare, b)
		c.blocks = slices.Delete(c.blocks, i, i+1)
		c.maxes = slices.Delete(c.maxes, i, i+1)
		c.starts = slices.Delete(c.starts, i, i+1)
		return
	}
	c.blocks[i], c.maxes[i] = b, b[len(b)-1]
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
	for len(c.blocks) > want {
		k := len(c.blocks) - 1
		c.spare = append(c.spare, c.blocks[k])
		c.blocks = c.blocks[:k]
	}
	for len(c.blocks) < want {
		c.blocks = append(c.blocks, c.newBlock())
	}
	c.maxes, c.starts = c.maxes[:0], c.starts[:0]
	for i := range c.blocks {
		lo, hi := min(i*calBlock, len(c.flat)), min((i+1)*calBlock, len(c.flat))
		if i == want-1 {
			hi = len(c.flat)
		}
		c.blocks[i] = append(c.blocks[i][:0], c.flat[lo:hi]...)
		c.starts = append(c.starts, lo)
		if hi > lo {
			c.maxes = append(c.maxes, c.flat[hi-1])
		}
	}
	if len(c.flat) == 0 {
		c.spare = append(c.spare, c.blocks...)
		c.blocks, c.starts = c.blocks[:0], c.starts[:0]
	}
}

// rank is the score of rank k (0-based) in sorted order; 0 ≤ k < Len.
func (c *Calibration) rank(k int) float64 {
	// The last block starting at or before k.
	lo, hi := 0, len(c.starts)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if c.starts[m] <= k {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo == 0 || k-c.starts[lo-1] >= len(c.blocks[lo-1]) {
		panic("forecast: calibration rank out of range")
	}
	return c.blocks[lo-1][k-c.starts[lo-1]]
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
	// Min is the lowest working miscoverage: below 1/(n+1) the interval
	// is the window's largest score, and any low alpha reads the few
	// largest errors of the window, which after a crash's misses makes the
	// interval wide exactly when the volatility forecast has already
	// caught up (Config.ACIFloor).
	Min   float64
	alpha float64
}

// NewACI starts at the nominal level, with Min at −0.25.
func NewACI(level, step float64) ACI {
	return ACI{Level: level, Step: step, Min: -0.25, alpha: 1 - level}
}

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
	a.alpha = min(max(a.alpha, a.Min), 1)
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
