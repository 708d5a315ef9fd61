package forecast_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"cryptostream/forecast"
)

type candle struct {
	start time.Time
	close float64
}

// garchCandles is a 1-minute series whose variance clusters (GARCH(1,1))
// and follows a time-of-day profile (twice as agitated mid-afternoon UTC as
// at night), with Student-t shocks: the structure the volatility model is
// built for.
func garchCandles(seed uint64, days int) []candle {
	rng := rand.New(rand.NewPCG(seed, 7))
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	n := days * 1440
	out := make([]candle, n)
	price, h := 50000.0, 1e-7
	const omega, a, b = 1e-7 * 0.02, 0.08, 0.90
	prev := 0.0
	for i := range n {
		tod := float64(i%1440) / 1440
		season := 1 + 0.5*math.Sin(2*math.Pi*(tod-0.375))
		h = omega + a*prev*prev/season + b*h
		// t(5) scaled to unit variance.
		var chi float64
		for range 5 {
			z := rng.NormFloat64()
			chi += z * z
		}
		eps := rng.NormFloat64() / math.Sqrt(chi/5) * math.Sqrt(3.0/5)
		r := math.Sqrt(h*season) * eps
		prev = r
		price *= math.Exp(r)
		out[i] = candle{t0.Add(time.Duration(i) * time.Minute), price}
	}
	return out
}

func newSeries(t *testing.T) (*forecast.Series, forecast.Config) {
	t.Helper()
	cfg := forecast.DefaultConfig(time.Minute)
	s, err := forecast.NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, cfg
}

// snapshot is what a forecast says, copied out of the series' reused
// storage.
type snapshot struct {
	sigma, lo80, up80, lo95, up95 float64
	model                         string
	ready                         bool
}

func snap(f forecast.Forecast) snapshot {
	return snapshot{f.Sigma, f.Intervals[0].Lower, f.Intervals[0].Upper, f.Intervals[1].Lower, f.Intervals[1].Upper, f.Model, f.Ready}
}

// TestNoLookahead: changing every candle after t leaves every forecast
// made at or before t unchanged, to the bit.
func TestNoLookahead(t *testing.T) {
	candles := garchCandles(1, 4)
	cut := len(candles) - 1440
	run := func(cs []candle) [][]snapshot {
		s, _ := newSeries(t)
		var out [][]snapshot
		for _, c := range cs {
			st, err := s.Add(c.start, c.close, nil)
			if err != nil {
				t.Fatal(err)
			}
			var row []snapshot
			for _, f := range st.Forecasts {
				row = append(row, snap(f))
			}
			out = append(out, row)
		}
		return out
	}
	base := run(candles)
	changed := append([]candle(nil), candles...)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := cut + 1; i < len(changed); i++ {
		changed[i].close *= math.Exp(0.01 * rng.NormFloat64())
	}
	pert := run(changed)
	for i := 0; i <= cut; i++ {
		for k := range base[i] {
			if base[i][k] != pert[i][k] {
				t.Fatalf("candle %d horizon %d: %+v became %+v after the future changed", i, k, base[i][k], pert[i][k])
			}
		}
	}
	if base[cut+100][1] == pert[cut+100][1] {
		t.Fatal("the perturbation changed nothing after the cut: the test would not catch a leak")
	}
	if !base[cut][1].ready {
		t.Fatal("no ready forecast at the cut")
	}
}

// TestForecastEveryCandle: after the warm-up every candle gets a ready
// forecast for every horizon, and every forecast gets its outcome exactly
// once, including across carried-forward gaps.
func TestForecastEveryCandle(t *testing.T) {
	s, cfg := newSeries(t)
	candles := garchCandles(2, 4)
	// Minutes without trades: drop a few, as Kraken's files do.
	var kept []candle
	for i, c := range candles {
		if i%97 != 5 {
			kept = append(kept, c)
		}
	}
	t0 := kept[0].start
	made := map[int]map[time.Time]bool{}
	for _, h := range cfg.Horizons {
		made[h] = map[time.Time]bool{}
	}
	ready, filled := 0, 0
	for _, c := range kept {
		st, err := s.Add(c.start, c.close, nil)
		if err != nil {
			t.Fatal(err)
		}
		filled += st.Filled
		warm := c.start.Sub(t0) >= time.Duration(cfg.Warmup)*time.Minute
		for _, f := range st.Forecasts {
			if f.Start != c.start {
				t.Fatalf("forecast at %s for the candle at %s", f.Start, c.start)
			}
			if warm && !f.Ready {
				t.Fatalf("no ready forecast at %s horizon %d", c.start, f.Horizon)
			}
			if f.Ready {
				ready++
				if !(f.Sigma > 0) || f.Intervals[0].Lower >= f.Intervals[0].Upper || f.Intervals[1].Upper <= f.Intervals[0].Upper {
					t.Fatalf("%+v", f)
				}
			}
			made[f.Horizon][f.Start] = true
		}
		for _, o := range st.Outcomes {
			if !made[o.Horizon][o.Start] {
				t.Fatalf("outcome at %s horizon %d for no forecast, or twice", o.Start, o.Horizon)
			}
			delete(made[o.Horizon], o.Start)
		}
	}
	if filled != len(candles)-len(kept) {
		t.Errorf("carried %d minutes forward, want %d", filled, len(candles)-len(kept))
	}
	if ready == 0 {
		t.Fatal("no ready forecast")
	}
	for h, m := range made {
		// Open forecasts are those whose target has not closed yet, and
		// those whose target minute had no candle: scored at the next one.
		if len(m) > h+1 {
			t.Errorf("horizon %d: %d forecasts never scored", h, len(m))
		}
	}
}

func TestAddRejects(t *testing.T) {
	s, cfg := newSeries(t)
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.Add(t0, 100, nil); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		at    time.Time
		close float64
		want  error
	}{
		"duplicate": {t0, 100, forecast.ErrNotAfter},
		"late":      {t0.Add(-time.Minute), 100, forecast.ErrNotAfter},
		"zero":      {t0.Add(time.Minute), 0, forecast.ErrBadClose},
		"NaN":       {t0.Add(time.Minute), math.NaN(), forecast.ErrBadClose},
		"off grid":  {t0.Add(90 * time.Second), 100, forecast.ErrOffGrid},
	} {
		if _, err := s.Add(c.at, c.close, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	st, err := s.Add(t0.Add(time.Duration(cfg.MaxGap+2)*time.Minute), 101, nil)
	if err != nil || !st.Restarted {
		t.Errorf("an outage longer than MaxGap: %+v %v, want a restart", st, err)
	}
}

// TestVolatilityBeatsNaive: on clustered, seasonal volatility the forecast
// beats both naive forecasts by QLIKE with a significant DM test, and its
// 80% and 95% intervals cover as promised.
func TestVolatilityBeatsNaive(t *testing.T) {
	s, cfg := newSeries(t)
	candles := garchCandles(3, 12)
	k := 1 // 15 minutes
	h := cfg.Horizons[k]
	var dLast, dDay []float64
	var q, ql, qd float64
	var n, cover80, cover95 int
	for _, c := range candles {
		st, err := s.Add(c.start, c.close, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range st.Outcomes {
			if o.Horizon != h || !o.Ready {
				continue
			}
			n++
			q += forecast.QLIKE(o.Variance, o.Realised)
			ql += forecast.QLIKE(o.NaiveLast, o.Realised)
			qd += forecast.QLIKE(o.NaiveDay, o.Realised)
			dLast = append(dLast, forecast.QLIKEDiff(o.Variance, o.NaiveLast, o.Realised))
			dDay = append(dDay, forecast.QLIKEDiff(o.Variance, o.NaiveDay, o.Realised))
			if o.Return >= o.Lower[0] && o.Return <= o.Upper[0] {
				cover80++
			}
			if o.Return >= o.Lower[1] && o.Return <= o.Upper[1] {
				cover95++
			}
		}
	}
	if n < 10000 {
		t.Fatalf("%d scored rows", n)
	}
	for name, d := range map[string][]float64{"last window": dLast, "trailing day": dDay} {
		res, err := forecast.DieboldMariano(d, forecast.DMLag(len(d), h))
		if err != nil {
			t.Fatal(err)
		}
		if res.Stat > -2 {
			t.Errorf("against the %s: DM %.2f, want ≤ −2", name, res.Stat)
		}
	}
	if q >= 0.9*min(ql, qd) {
		t.Errorf("QLIKE %.4f against %.4f (last) and %.4f (day): want 10%% better", q/float64(n), ql/float64(n), qd/float64(n))
	}
	c80, c95 := float64(cover80)/float64(n), float64(cover95)/float64(n)
	if c80 < 0.78 || c80 > 0.82 || c95 < 0.935 || c95 > 0.965 {
		t.Errorf("coverage %.3f (80%%) and %.3f (95%%)", c80, c95)
	}
}

// TestCalibrationWindowPerHorizon: the conformal window holds 192 whole
// horizons, never less than Calibration (a day), and History covers the
// warm-up, the longest window and the longest horizon, in either interval.
func TestCalibrationWindowPerHorizon(t *testing.T) {
	c := forecast.DefaultConfig(time.Minute)
	for _, tc := range []struct{ h, want int }{{1, 1440}, {15, 2880}, {60, 11520}} {
		if got := c.CalibrationWindow(tc.h); got != tc.want {
			t.Errorf("1m, horizon %d: window %d, want %d", tc.h, got, tc.want)
		}
	}
	if got, want := c.History(), 2*1440+11520+60; got != want {
		t.Errorf("1m history %d, want %d (two days, eight days, an hour)", got, want)
	}
	c5 := forecast.DefaultConfig(5 * time.Minute)
	if got := c5.CalibrationWindow(12); got != 2304 {
		t.Errorf("5m, 60 minutes: window %d, want 2304 (8 days)", got)
	}
	bad := c
	bad.ACISteps = bad.ACISteps[:1]
	if err := bad.Validate(); err == nil {
		t.Error("one ACI step for three horizons was accepted")
	}
}
