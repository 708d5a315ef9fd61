package features

import (
	"math"
	"time"

	"cryptostream/streams"
)

// Outcome is what a Series did with a candle.
type Outcome string

// The outcomes of Series.Add.
const (
	// Computed: the candle extended the window and a vector was made.
	Computed Outcome = "computed"
	// Warmup: the candle extended the window, which is still too short.
	Warmup Outcome = "warmup"
	// Duplicate: the window already holds a candle with this start.
	Duplicate Outcome = "duplicate"
	// Late: older than the newest candle but inside the window, where it
	// would change vectors already published; skipped.
	Late Outcome = "late"
	// TooOld: older than everything the window covers; rejected.
	TooOld Outcome = "too_old"
)

// qualities indexes the known qualities so a window's counts are an array,
// not a map to build per vector.
var qualities = [...]streams.Quality{streams.QualityLive, streams.QualityBackfilled, streams.QualityFilled, streams.QualityImported}

// qualityIndex is q's place in qualities; an unknown quality (which
// validation rejects before a candle gets here) counts as imported rather
// than vanish from the counts.
func qualityIndex(q streams.Quality) int8 {
	for i, k := range qualities {
		if k == q {
			return int8(i)
		}
	}
	return int8(len(qualities) - 1)
}

const noCandle = -1

// Series is the rolling window of one symbol and interval, kept on the
// interval grid and stepped one grid point at a time: a candle costs the same
// whatever the window holds, and the values are those Calculator.Compute
// gives on the same candles, to the last bit. Candles must come in start
// order; Add says what it did with one that does not.
type Series struct {
	calc *Calculator
	n    int // grid points in the window: Lookback+1

	// Each per-point value is stored twice, at p and p+n, so that the
	// window is always the contiguous slice [head, head+n), oldest first.
	close []float64
	vol   []float64
	ret   []float64
	diff  []float64
	empty []bool
	q     []int8 // quality index of the candle that started at the point, or noCandle
	head  int
	// points counts the grid points since the first candle, up to n: the
	// window covers the lookback once it reaches n.
	points int

	last streams.Candle
	// lastSeq is last's MARKET sequence.
	lastSeq uint64
	first   time.Time // start of the first candle, until one is carried
	// carry is the newest candle at or before the window's first point:
	// the one whose close is carried into it.
	carry      int8
	carryStart time.Time
	empties    int                     // empty points among the last Vol
	counts     [len(qualities)]int     // candles at points 1..n-1, by quality
	shared     [len(qualities)]int     // the counts window was built from
	window     map[streams.Quality]int // the last vector's, shared while unchanged
}

// NewSeries returns an empty series computing with calc.
func NewSeries(calc *Calculator) *Series {
	n := calc.spec.Lookback() + 1
	s := &Series{
		calc: calc, n: n,
		close: make([]float64, 2*n), vol: make([]float64, 2*n), ret: make([]float64, 2*n), diff: make([]float64, 2*n),
		empty: make([]bool, 2*n), q: make([]int8, 2*n),
	}
	s.reset()
	return s
}

func (s *Series) reset() {
	clear(s.empty)
	for i := range s.q {
		s.q[i] = noCandle
	}
	s.head, s.points, s.empties = 0, 0, 0
	s.carry, s.carryStart, s.first = noCandle, time.Time{}, time.Time{}
	s.counts = [len(qualities)]int{}
	s.last, s.lastSeq = streams.Candle{}, 0
}

// Len is the number of candles held: those the window's points started
// with, and the one carried into it.
func (s *Series) Len() int {
	n := 0
	for _, k := range s.counts {
		n += k
	}
	if s.carry != noCandle {
		n++
	}
	return n
}

// Last is the newest candle held.
func (s *Series) Last() (streams.Candle, bool) {
	return s.last, s.points > 0
}

// Add appends c and, when the window covers the lookback, returns the
// vector at c; seq is c's MARKET sequence.
func (s *Series) Add(c streams.Candle, seq uint64) (streams.FeatureVector, Outcome) {
	if s.points > 0 && !c.Start.After(s.last.Start) {
		return streams.FeatureVector{}, s.classify(c)
	}
	s.step(&c)
	s.lastSeq = seq
	if s.points < s.n {
		return streams.FeatureVector{}, Warmup
	}
	h := s.head
	values := make([]float64, len(s.calc.names))
	s.calc.values(values, grid{
		close: s.close[h : h+s.n], vol: s.vol[h : h+s.n], ret: s.ret[h : h+s.n], diff: s.diff[h : h+s.n],
		empty: s.empties,
	}, &c)
	return streams.FeatureVector{
		Symbol: c.Symbol, Interval: c.Interval, Start: c.Start, Close: c.Close,
		Names: s.calc.names, Values: values, CandleSeq: seq, Window: s.quality(),
	}, Computed
}

// step moves the window to c: the grid points with no candle since the last
// one, then c's own.
func (s *Series) step(c *streams.Candle) {
	if s.points == 0 {
		s.first = c.Start
		s.push(c.Start, c.Close, c.Volume, 0, 0, c.Volume == 0, qualityIndex(c.Quality))
		s.last = *c
		return
	}
	iv := c.Interval.Duration()
	d := c.Start.Sub(s.last.Start)
	if iv <= 0 || d%iv != 0 {
		// Off the grid the window stands on (validation keeps candles up
		// to a day on their grid, so this is a longer interval whose
		// exchange moved its grid): start a window on the new grid
		// rather than sample a shifted one.
		s.reset()
		s.step(c)
		return
	}
	prev := s.last.Close
	// After n empty points the window is all the same empty point: more
	// change nothing but the count.
	steps := int64(d / iv)
	gaps := int(min(steps-1, int64(s.n)))
	for i := range gaps {
		s.push(s.last.Start.Add(time.Duration(i+1)*iv), prev, 0, 0, 0, true, noCandle)
	}
	s.points = int(min(int64(s.points)+steps-1-int64(gaps), int64(s.n)))
	s.push(c.Start, c.Close, c.Volume, math.Log(c.Close/prev), c.Close-prev, c.Volume == 0, qualityIndex(c.Quality))
	s.last = *c
}

// push appends the grid point at and drops the oldest, keeping the rolling
// counts.
func (s *Series) push(at time.Time, close, vol, ret, diff float64, empty bool, q int8) {
	n, p := s.n, s.head
	s.close[p], s.close[p+n] = close, close
	s.vol[p], s.vol[p+n] = vol, vol
	s.ret[p], s.ret[p+n] = ret, ret
	s.diff[p], s.diff[p+n] = diff, diff
	s.empty[p], s.empty[p+n] = empty, empty
	s.q[p], s.q[p+n] = q, q
	s.head = (p + 1) % n
	s.points = min(s.points+1, n)
	h := s.head
	if empty {
		s.empties++
	}
	// The point that just left the last Vol points (stale and not empty
	// while the window fills).
	if s.empty[h+n-1-s.calc.spec.Vol] {
		s.empties--
	}
	if q != noCandle {
		s.counts[q]++
	}
	// The point that became the window's first is carried, no longer
	// counted among the points after it.
	if q0 := s.q[h]; q0 != noCandle {
		s.counts[q0]--
		s.carry = q0
		s.carryStart = at.Add(-time.Duration(n-1) * s.last.Interval.Duration())
	}
}

// quality is the window's candles by quality, so a prediction can say
// whether it stood on live, repaired or synthetic data. The map is shared by
// the vectors of a series while the counts stay the same, which on a steady
// series is always.
func (s *Series) quality() map[streams.Quality]int {
	counts := s.counts
	if s.carry != noCandle {
		counts[s.carry]++
	}
	if s.window != nil && counts == s.shared {
		return s.window
	}
	m := make(map[streams.Quality]int, len(qualities))
	for i, k := range counts {
		if k > 0 {
			m[qualities[i]] = k
		}
	}
	s.shared, s.window = counts, m
	return m
}

func (s *Series) classify(c streams.Candle) Outcome {
	oldest := s.first
	if s.carry != noCandle {
		oldest = s.carryStart
	}
	switch {
	case c.Start.Before(oldest):
		return TooOld
	case c.Start.Equal(oldest):
		return Duplicate
	}
	iv := s.last.Interval.Duration()
	back := s.last.Start.Sub(c.Start)
	if back%iv != 0 || back/iv >= time.Duration(s.n) {
		return Late // between two points, or between the carried candle and the window
	}
	if s.q[s.head+s.n-1-int(back/iv)] != noCandle {
		return Duplicate
	}
	return Late
}

// Need is how many of the latest candles rebuild a window: Lookback+1
// candles always span at least Lookback intervals.
func (s Spec) Need() int { return s.Lookback() + 1 }
