package features

import (
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/streams"
)

const sym = "BTC/USD"

// realCandles returns rows [from, to) of the real 1-minute file. The file has
// its gaps (minutes with no trade) between rows 5753 and 8442, so the tests
// read around there.
func realCandles(t testing.TB, from, to int) []streams.Candle {
	t.Helper()
	return datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, sym, streams.Interval1m, to)[from:]
}

// run feeds candles through a fresh series and returns the vectors by start.
func run(t testing.TB, spec Spec, candles []streams.Candle) map[time.Time]streams.FeatureVector {
	t.Helper()
	calc, err := NewCalculator(spec)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSeries(calc)
	out := map[time.Time]streams.FeatureVector{}
	for i, c := range candles {
		v, o := s.Add(c, uint64(i+1))
		if o == Computed {
			out[c.Start] = v
		}
	}
	return out
}

// reference computes the default features at minute t straight from the
// file's rows keyed by timestamp, by the textbook definitions, one feature
// at a time: a different path from Calculator's single pass over a grid.
type reference struct {
	rows map[int64]streams.Candle
}

// price is the last traded close at or before minute ts.
func (r reference) price(ts int64) float64 {
	for m := ts; ; m -= 60 {
		if c, ok := r.rows[m]; ok {
			return c.Close
		}
	}
}

func (r reference) volume(ts int64) float64 { return r.rows[ts].Volume }

func (r reference) features(ts int64) map[string]float64 {
	f := map[string]float64{}
	p := r.price(ts)
	for _, k := range []int64{1, 5, 15, 60} {
		f["ret_"+itoa(k)] = math.Log(p) - math.Log(r.price(ts-60*k))
	}
	for _, n := range []int64{10, 30} {
		var s float64
		for k := int64(0); k < n; k++ {
			s += r.price(ts - 60*k)
		}
		f["sma_ratio_"+itoa(n)] = p/(s/float64(n)) - 1
	}
	for _, n := range []int64{12, 26} {
		// EMA written as its explicit weighted sum over the 3n+1 points
		// of the window, the oldest carrying the seed's weight.
		a := 2 / (float64(n) + 1)
		m := 3 * 26 // the window is the spec's lookback: 3 * longest EMA
		var ema float64
		for k := 0; k < m; k++ {
			ema += a * math.Pow(1-a, float64(k)) * r.price(ts-60*int64(k))
		}
		ema += math.Pow(1-a, float64(m)) * r.price(ts-60*int64(m))
		f["ema_ratio_"+itoa(n)] = p/ema - 1
	}
	var up, down float64
	for k := int64(0); k < 14; k++ {
		d := r.price(ts-60*k) - r.price(ts-60*(k+1))
		up += math.Max(d, 0)
		down += math.Max(-d, 0)
	}
	f["rsi_14"] = 0.5
	if up+down > 0 {
		f["rsi_14"] = up / (up + down)
	}
	var rs []float64
	for k := int64(0); k < 30; k++ {
		rs = append(rs, math.Log(r.price(ts-60*k)/r.price(ts-60*(k+1))))
	}
	var ss float64
	for _, x := range rs {
		ss += x * x
	}
	f["vol_30"] = math.Sqrt(ss / 30)
	var vols []float64
	for k := int64(1); k <= 30; k++ {
		vols = append(vols, r.volume(ts-60*k))
	}
	mean, sd := meanStd(vols)
	f["volume_z_30"] = 0
	if sd > 0 {
		f["volume_z_30"] = (r.volume(ts) - mean) / sd
	}
	c := r.rows[ts]
	f["range"] = (c.High - c.Low) / c.Close
	hour, min, sec := time.Unix(ts, 0).UTC().Clock()
	frac := float64(hour*3600+min*60+sec) / 86400
	f["tod_sin"], f["tod_cos"] = math.Sin(2*math.Pi*frac), math.Cos(2*math.Pi*frac)
	missing := 0
	for k := int64(0); k < 30; k++ {
		if _, ok := r.rows[ts-60*k]; !ok {
			missing++
		}
	}
	f["empty_frac_30"] = float64(missing) / 30
	return f
}

func meanStd(xs []float64) (float64, float64) {
	var m float64
	for _, x := range xs {
		m += x
	}
	m /= float64(len(xs))
	var v float64
	for _, x := range xs {
		v += (x - m) * (x - m)
	}
	return m, math.Sqrt(v / float64(len(xs)))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestGoldenAgainstReference(t *testing.T) {
	candles := realCandles(t, 5000, 8500)
	ref := reference{rows: map[int64]streams.Candle{}}
	for _, c := range candles {
		ref.rows[c.Start.Unix()] = c
	}
	got := run(t, DefaultSpec(), candles)
	names := DefaultSpec().Names()

	// Every candle whose lookback is inside the file, and among them some
	// that follow a gap, which is where counting candles instead of
	// intervals would go wrong.
	first := candles[0].Start.Add(time.Duration(DefaultSpec().Lookback()) * time.Minute)
	checked, afterGap := 0, 0
	for i, c := range candles {
		if c.Start.Before(first) {
			if _, ok := got[c.Start]; ok {
				t.Fatalf("vector at %s before the lookback is covered", c.Start)
			}
			continue
		}
		v, ok := got[c.Start]
		if !ok {
			t.Fatalf("no vector at %s", c.Start)
		}
		if !slices.Equal(v.Names, names) {
			t.Fatalf("names %v", v.Names)
		}
		want := ref.features(c.Start.Unix())
		for j, name := range names {
			if d := math.Abs(v.Values[j] - want[name]); d > 1e-9*math.Max(1, math.Abs(want[name])) {
				t.Fatalf("%s at %s: got %.15g, reference %.15g", name, c.Start, v.Values[j], want[name])
			}
		}
		checked++
		if i > 0 && c.Start.Sub(candles[i-1].Start) > time.Minute {
			afterGap++
		}
	}
	if checked < 2000 || afterGap < 10 {
		t.Fatalf("checked %d vectors, %d after a gap: the window does not exercise gaps", checked, afterGap)
	}
}

// TestFilledEqualsAbsent: filling the empty minutes with flat zero-volume
// candles (what the ingester may do) gives the same vectors at every real
// candle as leaving them out.
func TestFilledEqualsAbsent(t *testing.T) {
	candles := realCandles(t, 5500, 7500)
	var filled []streams.Candle
	for i, c := range candles {
		if i > 0 {
			prev := candles[i-1]
			for g := prev.Start.Add(time.Minute); g.Before(c.Start); g = g.Add(time.Minute) {
				filled = append(filled, streams.Candle{Symbol: sym, Interval: streams.Interval1m, Start: g,
					Open: prev.Close, High: prev.Close, Low: prev.Close, Close: prev.Close, Quality: streams.QualityFilled})
			}
		}
		filled = append(filled, c)
	}
	if len(filled) == len(candles) {
		t.Fatal("no gap in the sample")
	}
	a, b := run(t, DefaultSpec(), candles), run(t, DefaultSpec(), filled)
	for start, va := range a {
		vb, ok := b[start]
		if !ok {
			t.Fatalf("no filled vector at %s", start)
		}
		if !slices.Equal(va.Values, vb.Values) {
			t.Fatalf("at %s: absent %v, filled %v", start, va.Values, vb.Values)
		}
	}
}

// TestNoLookahead: rewriting every candle after t leaves the vector at t
// unchanged.
func TestNoLookahead(t *testing.T) {
	candles := realCandles(t, 5500, 7000)
	base := run(t, DefaultSpec(), candles)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, cut := range []int{200, 700, 1200} {
		changed := slices.Clone(candles)
		for i := cut + 1; i < len(changed); i++ {
			f := 0.5 + rng.Float64()
			c := &changed[i]
			c.Open, c.High, c.Low, c.Close, c.Volume = c.Open*f, c.High*f*1.01, c.Low*f*0.99, c.Close*f, c.Volume*3
		}
		got := run(t, DefaultSpec(), changed)
		at := candles[cut].Start
		if !slices.Equal(got[at].Values, base[at].Values) || len(base[at].Values) == 0 {
			t.Fatalf("vector at %s changed when later candles changed", at)
		}
		if later := candles[cut+1].Start; slices.Equal(got[later].Values, base[later].Values) {
			t.Fatalf("vector at %s did not change although its candle did: the test is blind", later)
		}
	}
}

func TestSeriesOrder(t *testing.T) {
	candles := realCandles(t, 5700, 6000)
	calc, err := NewCalculator(DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSeries(calc)
	for i, c := range candles {
		s.Add(c, uint64(i+1))
	}
	if s.Len() > DefaultSpec().Need()+1 {
		t.Fatalf("series holds %d candles, more than the window needs", s.Len())
	}
	last, _ := s.Last()
	tests := []struct {
		name string
		c    streams.Candle
		want Outcome
	}{
		{"same start again", last, Duplicate},
		{"an earlier candle still in the window", candles[len(candles)-3], Duplicate},
		{"older than the window", candles[0], TooOld},
	}
	// A minute inside the window that had no trade and arrives late.
	for i := len(candles) - 1; i > len(candles)-50; i-- {
		if candles[i].Start.Sub(candles[i-1].Start) > time.Minute {
			late := candles[i]
			late.Start = candles[i-1].Start.Add(time.Minute)
			tests = append(tests, struct {
				name string
				c    streams.Candle
				want Outcome
			}{"a late minute inside the window", late, Late})
			break
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, got := s.Add(tt.c, 1); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
	if l, _ := s.Last(); !l.Start.Equal(last.Start) {
		t.Fatal("a rejected candle moved the window")
	}
}
