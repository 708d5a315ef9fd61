package krakensim

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"cryptostream/ingest/ohlcfile"
	"cryptostream/streams"
)

// Feed is the recorded market of one pair.
type Feed struct {
	Symbol  string // v2 symbol, e.g. BTC/USD
	PairKey string // REST result key, e.g. XXBTZUSD
	Altname string // e.g. XBTUSD
	WSName  string // v1 name, e.g. XBT/USD
	Base    string // e.g. XXBT
	Quote   string // e.g. ZUSD
	// Interval is the width of Rows; served intervals are multiples of it.
	Interval streams.Interval
	Rows     []ohlcfile.Row // ascending, empty intervals absent
}

// LoadFeed reads a CSV of candles for symbol. The Kraken naming fields are
// derived the way Kraken names its oldest pairs (X/Z prefixes for BTC and
// USD, EUR, GBP, JPY, CAD), which is enough for a simulator.
func LoadFeed(symbol string, iv streams.Interval, r io.Reader) (Feed, error) {
	sym, err := streams.NormalizeSymbol(symbol)
	if err != nil {
		return Feed{}, fmt.Errorf("krakensim: feed %q: %w", symbol, err)
	}
	rows, bad := ohlcfile.ReadAll(r)
	if len(bad) > 0 {
		return Feed{}, fmt.Errorf("krakensim: feed %s: %d bad rows, first: %w", sym, len(bad), bad[0])
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Start.Before(rows[j].Start) })
	out := rows[:0]
	for i, r := range rows {
		if i > 0 && r.Start.Equal(rows[i-1].Start) {
			continue
		}
		if r.Trades < 0 {
			r.Trades = 1
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return Feed{}, fmt.Errorf("krakensim: feed %s: no rows", sym)
	}
	base, quote, _ := strings.Cut(sym, "/")
	legacy := map[string]string{"BTC": "XBT", "DOGE": "XDG"}
	lb, lq := base, quote
	if v, ok := legacy[base]; ok {
		lb = v
	}
	if v, ok := legacy[quote]; ok {
		lq = v
	}
	ib, iq := lb, lq
	fiat := map[string]bool{"USD": true, "EUR": true, "GBP": true, "JPY": true, "CAD": true}
	if lb == "XBT" || lb == "XDG" || lb == "ETH" || lb == "LTC" {
		ib = "X" + lb
		if fiat[lq] {
			iq = "Z" + lq
		}
	}
	return Feed{
		Symbol: sym, PairKey: ib + iq, Altname: lb + lq, WSName: lb + "/" + lq,
		Base: ib, Quote: iq, Interval: iv, Rows: out,
	}, nil
}

// candle is an OHLC bar in data time.
type candle struct {
	start  time.Time
	open   float64
	high   float64
	low    float64
	close  float64
	vwap   float64
	volume float64
	trades int64
	empty  bool
}

// partial is row r after n of its k simulated trades: the running candle
// Kraken would send. The last trade makes it exactly the recorded row.
func partial(r ohlcfile.Row, n, k int) candle {
	c := candle{start: r.Start, open: r.Open, trades: r.Trades}
	if n >= k {
		c.high, c.low, c.close, c.volume = r.High, r.Low, r.Close, r.Volume
	} else {
		// The path visits open, then high, then low, then drifts to close,
		// so every prefix is a consistent candle inside the final range.
		path := []float64{r.Open, r.High, r.Low, r.Close}
		c.high, c.low = r.Open, r.Open
		for i := 0; i < n && i < len(path); i++ {
			c.high = max(c.high, path[i])
			c.low = min(c.low, path[i])
			c.close = path[i]
		}
		if n > len(path) {
			c.close = (c.high + c.low) / 2
		}
		c.volume = r.Volume * float64(n) / float64(k)
		c.trades = r.Trades * int64(n) / int64(k)
		if c.trades < 1 {
			c.trades = 1
		}
	}
	c.vwap = (c.high + c.low + c.close) / 3
	return c
}

// merge folds b, the next bar in time, into a.
func merge(a, b candle) candle {
	if a.empty {
		return b
	}
	if b.empty {
		return a
	}
	vol := a.volume + b.volume
	vwap := a.vwap
	if vol > 0 {
		vwap = (a.vwap*a.volume + b.vwap*b.volume) / vol
	}
	return candle{start: a.start, open: a.open, high: max(a.high, b.high), low: min(a.low, b.low),
		close: b.close, vwap: vwap, volume: vol, trades: a.trades + b.trades}
}

// tradesPerRow is how many updates one recorded row becomes.
func tradesPerRow(r ohlcfile.Row, maxUpdates int) int {
	k := int(r.Trades)
	if k < 1 {
		k = 1
	}
	return min(k, maxUpdates)
}

// rowIndex finds the first row starting at or after t.
func (f *Feed) rowIndex(t time.Time) int {
	return sort.Search(len(f.Rows), func(i int) bool { return !f.Rows[i].Start.Before(t) })
}

// tradeTime is when the i-th (0-based) of k trades of a row happens.
func tradeTime(r ohlcfile.Row, native time.Duration, i, k int) time.Time {
	return r.Start.Add(native * time.Duration(i+1) / time.Duration(k+1))
}

// bar is the candle of width iv starting at start as of data time now: the
// rows fully before now in full, the running row as far as its trades went.
func (f *Feed) bar(start time.Time, iv streams.Interval, now time.Time, maxUpdates int) candle {
	end := start.Add(iv.Duration())
	native := f.Interval.Duration()
	out := candle{start: start, empty: true}
	for i := f.rowIndex(start); i < len(f.Rows) && f.Rows[i].Start.Before(end); i++ {
		r := f.Rows[i]
		if r.Start.After(now) {
			break
		}
		k := tradesPerRow(r, maxUpdates)
		n := k
		if now.Before(r.Start.Add(native)) {
			n = 0
			for n < k && !tradeTime(r, native, n, k).After(now) {
				n++
			}
			if n == 0 {
				break
			}
		}
		c := partial(r, n, k)
		c.start = start
		out = merge(out, c)
	}
	return out
}

// prevClose is the close of the last row before t, 0 when none.
func (f *Feed) prevClose(t time.Time) float64 {
	i := f.rowIndex(t)
	if i == 0 {
		return 0
	}
	return f.Rows[i-1].Close
}
