package ingest

import (
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
	out := make([]streams.Candle, 0, len(candles))
	var last streams.Candle
	have := prev != nil
	if have {
		last = *prev
	}
	for _, c := range candles {
		if have && !c.Start.After(last.Start) {
			continue // out of order or duplicate: the first one wins
		}
		if have {
			out = append(out, FillBetween(last, c.Start)...)
		}
		if IsFiller(c) {
			if !have {
				continue
			}
			c = Filled(c.Symbol, c.Interval, c.Start, last.Close)
		}
		out = append(out, c)
		last, have = c, true
	}
	return out
}
