package ingest

import (
	"math"
	"time"

	"cryptostream/streams"
)

// The empty-interval policy, in one place for the live finaliser, the REST
// backfill and the import: an interval without trades becomes a flat
// candle, open = high = low = close = the previous close, volume 0, trades
// 0, vwap 0, marked streams.QualityFilled. That is what Kraken's REST API
// already returns for such intervals, so the WebSocket path, the REST path
// and a file all yield the same regular grid, which is what the feature
// maths wants.
//
// A fill is only ever made between two candles known to be consecutive
// observations of the same source (two WebSocket candles of one unbroken
// subscription, two rows of one REST answer, two rows of one file). A gap
// whose content is unknown (an outage longer than REST's 720 rows, a
// connection lost) is never filled: that would be inventing data.

// Filled is the flat candle for the empty interval starting at start, after
// a candle that closed at prevClose.
func Filled(symbol string, iv streams.Interval, start time.Time, prevClose float64) streams.Candle {
	return streams.Candle{
		Schema:   streams.Schema{V: streams.SchemaVersion},
		Symbol:   symbol,
		Interval: iv,
		Start:    start,
		Open:     prevClose,
		High:     prevClose,
		Low:      prevClose,
		Close:    prevClose,
		Quality:  streams.QualityFilled,
	}
}

// FillBetween returns the filled candles for every interval strictly after
// prev and strictly before next.
func FillBetween(prev streams.Candle, next time.Time) []streams.Candle {
	d := prev.Interval.Duration()
	var out []streams.Candle
	for t := prev.Start.Add(d); t.Before(next); t = t.Add(d) {
		out = append(out, Filled(prev.Symbol, prev.Interval, t, prev.Close))
	}
	return out
}

// IsFiller reports a candle that carries no trade: an exchange's filler row
// or a filled candle. It is rebuilt by the policy rather than trusted, so
// every path yields the same values for it.
func IsFiller(c streams.Candle) bool { return c.Trades == 0 && c.Volume == 0 }

// Regularize applies the policy to candles of one series in ascending start
// order, all from one source: filler rows are rebuilt from the previous
// close and every empty interval between two candles is filled. prev, when
// not nil, is the candle known to come just before candles[0] in the same
// source, so the gap between them is filled too. Leading filler rows with no
// previous close cannot be rebuilt and are dropped.
func Regularize(prev *streams.Candle, candles []streams.Candle) []streams.Candle {
	out, _ := RegularizeSeries(prev, Series{Candles: candles}, math.MaxInt)
	return out
}

// Series is candles of one series from one source in ascending order of
// start, with where the source's continuity is broken.
type Series struct {
	Candles []streams.Candle
	// Broken holds the starts of candles whose preceding gap held a
	// rejected row: it is never filled, its content is unknown.
	Broken map[time.Time]bool
}

// Gap is an interval range an import left unfilled.
type Gap struct {
	After, Before time.Time // the accepted candles around it
	Intervals     int
	Reason        string // GapRejectedRow or GapTooLong
}

// Why a gap is left open.
const (
	GapRejectedRow = "a rejected row lies in it"
	GapTooLong     = "longer than the fill bound"
)

// RegularizeSeries is Regularize for a series that may have lost rows to
// validation: a gap is filled only between two accepted candles with no
// rejected row between them and when it spans at most maxFill intervals
// (negative: none); every other gap is left open and returned. A filler
// row is rebuilt from the previous close, and dropped where that close is
// not known to be its predecessor's.
func RegularizeSeries(prev *streams.Candle, s Series, maxFill int) ([]streams.Candle, []Gap) {
	out := make([]streams.Candle, 0, len(s.Candles))
	var open []Gap
	var last streams.Candle
	have, carry := prev != nil, false
	if have {
		last = *prev
	}
	for _, c := range s.Candles {
		if have && !c.Start.After(last.Start) {
			continue // a duplicate: the first one wins
		}
		contiguous := have && !carry && !s.Broken[c.Start]
		if have {
			n := int(c.Start.Sub(last.Start)/c.Interval.Duration()) - 1
			switch {
			case n <= 0:
			case !contiguous:
				open = append(open, Gap{last.Start, c.Start, n, GapRejectedRow})
			case n > maxFill:
				open = append(open, Gap{last.Start, c.Start, n, GapTooLong})
				contiguous = false
			case n > 0:
				out = append(out, FillBetween(last, c.Start)...)
			}
		}
		if IsFiller(c) {
			if !contiguous {
				// Its close is unknown; what follows it is still cut off.
				carry = have
				continue
			}
			c = Filled(c.Symbol, c.Interval, c.Start, last.Close)
		}
		out = append(out, c)
		last, have, carry = c, true, false
	}
	return out, open
}
