package features

import (
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

// Series is the rolling window of one symbol and interval. Candles must come
// in start order; Add says what it did with one that does not.
type Series struct {
	calc    *Calculator
	candles []streams.Candle
}

// NewSeries returns an empty series computing with calc.
func NewSeries(calc *Calculator) *Series { return &Series{calc: calc} }

// Len is the number of candles held.
func (s *Series) Len() int { return len(s.candles) }

// Last is the newest candle held.
func (s *Series) Last() (streams.Candle, bool) {
	if len(s.candles) == 0 {
		return streams.Candle{}, false
	}
	return s.candles[len(s.candles)-1], true
}

// Add appends c and, when the window covers the lookback, returns the
// vector at c; seq is c's MARKET sequence.
func (s *Series) Add(c streams.Candle, seq uint64) (streams.FeatureVector, Outcome) {
	if last, ok := s.Last(); ok && !c.Start.After(last.Start) {
		return streams.FeatureVector{}, s.classify(c)
	}
	s.candles = append(s.candles, c)
	s.trim()
	v, err := s.calc.Vector(s.candles, seq)
	if err != nil {
		return streams.FeatureVector{}, Warmup
	}
	return v, Computed
}

func (s *Series) classify(c streams.Candle) Outcome {
	for i := len(s.candles) - 1; i >= 0; i-- {
		if s.candles[i].Start.Equal(c.Start) {
			return Duplicate
		}
		if s.candles[i].Start.Before(c.Start) {
			return Late
		}
	}
	return TooOld
}

// trim drops candles the next vector cannot need: everything before the
// last candle at or before t-Lookback, which carries the price into the
// window.
func (s *Series) trim() {
	last := s.candles[len(s.candles)-1]
	t0 := last.Start.Add(-time.Duration(s.calc.spec.Lookback()) * last.Interval.Duration())
	keep := 0
	for i := len(s.candles) - 1; i >= 0; i-- {
		if !s.candles[i].Start.After(t0) {
			keep = i
			break
		}
	}
	if keep > 0 {
		// Copy down rather than reslice so the backing array does not
		// grow without bound on a long-running series.
		n := copy(s.candles, s.candles[keep:])
		clear(s.candles[n:])
		s.candles = s.candles[:n]
	}
}

// Need is how many of the latest candles rebuild a window: Lookback+1
// candles always span at least Lookback intervals.
func (s Spec) Need() int { return s.Lookback() + 1 }
