// Package featurestest owns the reference the incremental features are held
// to: Batch is the window of candles that features.Series replaced, which
// resamples its whole window and recomputes every statistic on each candle
// (features.Calculator.Vector). The equivalence test and the benchmarks run
// it beside Series.
package featurestest

import (
	"time"

	"cryptostream/features"
	"cryptostream/streams"
)

// Batch is the rolling window of one symbol and interval, kept as the list
// of its candles.
type Batch struct {
	calc    *features.Calculator
	candles []streams.Candle
}

// NewBatch returns an empty window computing with calc.
func NewBatch(calc *features.Calculator) *Batch { return &Batch{calc: calc} }

// Len is the number of candles held.
func (b *Batch) Len() int { return len(b.candles) }

// Add appends c and, when the window covers the lookback, returns the
// vector at c, with the outcomes of features.Series.Add.
func (b *Batch) Add(c streams.Candle, seq uint64) (streams.FeatureVector, features.Outcome) {
	if n := len(b.candles); n > 0 && !c.Start.After(b.candles[n-1].Start) {
		return streams.FeatureVector{}, b.classify(c)
	}
	b.candles = append(b.candles, c)
	b.trim()
	v, err := b.calc.Vector(b.candles, seq)
	if err != nil {
		return streams.FeatureVector{}, features.Warmup
	}
	return v, features.Computed
}

func (b *Batch) classify(c streams.Candle) features.Outcome {
	for i := len(b.candles) - 1; i >= 0; i-- {
		if b.candles[i].Start.Equal(c.Start) {
			return features.Duplicate
		}
		if b.candles[i].Start.Before(c.Start) {
			return features.Late
		}
	}
	return features.TooOld
}

// trim drops the candles before the last one at or before t-Lookback, which
// carries the price into the window.
func (b *Batch) trim() {
	last := b.candles[len(b.candles)-1]
	t0 := last.Start.Add(-time.Duration(b.calc.Spec().Lookback()) * last.Interval.Duration())
	keep := 0
	for i := len(b.candles) - 1; i >= 0; i-- {
		if !b.candles[i].Start.After(t0) {
			keep = i
			break
		}
	}
	if keep > 0 {
		n := copy(b.candles, b.candles[keep:])
		clear(b.candles[n:])
		b.candles = b.candles[:n]
	}
}
