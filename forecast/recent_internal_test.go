package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// walk feeds s n minutes of a random walk whose volatility is vol(i),
// calling each with the step after every Add.
func walk(t *testing.T, s *Series, seed uint64, n int, vol func(i int) float64, each func(i int, st Step)) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	price := 100.0
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		price *= math.Exp(vol(i) * rng.NormFloat64())
		st, err := s.Add(t0.Add(time.Duration(i)*time.Minute), price, nil)
		if err != nil {
			t.Fatal(err)
		}
		each(i, st)
	}
}

func pooledIndex(t *testing.T, s *Series) int {
	t.Helper()
	for k, hz := range s.hz {
		if hz.pooled {
			return k
		}
	}
	t.Fatal("no pooled horizon in the default configuration")
	return -1
}

// TestRecentFloorLiftsOnset: three calm days, then a quarter of an hour
// ten times as volatile. Throughout, the 60-minute intervals' scale is at
// least the recent window's variance times the horizon's seasonal length
// (to the power IntervalPower/2), and by the end of that quarter the
// 80% interval is far wider than without the floor, while the published
// variance is the same, bit for bit.
func TestRecentFloorLiftsOnset(t *testing.T) {
	onset := 3 * 1440
	vol := func(i int) float64 {
		if i >= onset {
			return 1e-2
		}
		return 1e-3
	}
	var width, variance [2]float64
	for run, rf := range []float64{1, 0} {
		cfg := DefaultConfig(time.Minute)
		cfg.RecentFloor = rf
		s, err := NewSeries(cfg)
		if err != nil {
			t.Fatal(err)
		}
		k := pooledIndex(t, s)
		walk(t, s, 21, onset+15, vol, func(i int, st Step) {
			f := st.Forecasts[k]
			hz := s.hz[k]
			floor := s.recU[s.longest].mean(&s.u) * s.prof.forward(f.Start.Unix(), s.ivSec, f.Horizon)
			if sc := hz.pend[hz.slot].scale; rf > 0 && f.Variance > 0 && sc < math.Pow(floor, cfg.IntervalPower/2)*(1-1e-12) {
				t.Fatalf("minute %d: 60-minute scale %v below the recent floor's %v", i, sc, math.Pow(floor, cfg.IntervalPower/2))
			}
			if i == onset+14 {
				if !f.Ready {
					t.Fatal("60-minute forecast not ready after three days")
				}
				width[run], variance[run] = f.Intervals[0].Upper-f.Intervals[0].Lower, f.Variance
			}
		})
	}
	if !(width[0] > 1.5*width[1]) || math.Float64bits(variance[0]) != math.Float64bits(variance[1]) {
		t.Fatalf("end of the burst: 80%% width %v with the floor, %v without; variance %v and %v", width[0], width[1], variance[0], variance[1])
	}
}

// TestIntervalPowerScale: the 60-minute intervals are the conformal
// quantile times σ^IntervalPower wide, with Multiplier still per σ
// (Lower = Center − Multiplier·Sigma), and the calibration's scores are
// read in the same units: each new one is |r| over σ^IntervalPower of the
// forecast it scores. The 15-minute horizon keeps σ. The recent floor is
// off, so that the scale is the published σ's power alone.
func TestIntervalPowerScale(t *testing.T) {
	cfg := DefaultConfig(time.Minute)
	cfg.RecentFloor = 0
	s, err := NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := pooledIndex(t, s)
	p := cfg.IntervalPower
	if p <= 0 || p >= 1 {
		t.Fatalf("default interval power %v", p)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	v := 1e-3
	checked := 0
	walk(t, s, 9, 4*1440, func(i int) float64 {
		if i%180 == 0 {
			v = 1e-3 * math.Exp(rng.NormFloat64())
		}
		return v
	}, func(i int, st Step) {
		for j, hz := range s.hz {
			f := st.Forecasts[j]
			if !f.Ready {
				continue
			}
			scale := f.Sigma
			if j == k {
				scale = math.Pow(f.Variance, p/2)
			}
			for li, in := range f.Intervals {
				q := hz.cal[0].Quantile(hz.aci[0][li].Alpha())
				if w := in.Upper - f.Center; math.Abs(w/(q*scale)-1) > 1e-9 {
					t.Fatalf("%d min at %d: half-width %v, want quantile %v × %v", hz.h, i, w, q, scale)
				}
				if d := in.Upper - (f.Center + in.Multiplier*f.Sigma); math.Abs(d) > 1e-12*math.Abs(in.Upper) {
					t.Fatalf("%d min at %d: Upper %v is not Center + Multiplier·Sigma (%v)", hz.h, i, in.Upper, f.Center+in.Multiplier*f.Sigma)
				}
			}
			if j == k {
				checked++
			}
		}
		for _, o := range st.Outcomes {
			hz := s.hz[slicesIndex(s.hz, o.Horizon)]
			c := hz.cal[0]
			newest := c.fifo[(c.next+len(c.fifo)-1)%len(c.fifo)]
			if len(c.fifo) < c.size {
				newest = c.fifo[len(c.fifo)-1]
			}
			scale := math.Sqrt(o.Variance)
			if hz.pooled {
				scale = math.Pow(o.Variance, p/2)
			}
			if want := math.Abs(o.Return-o.Center) / scale; math.Abs(newest/want-1) > 1e-9 {
				t.Fatalf("%d min at %d: newest score %v, want %v", o.Horizon, i, newest, want)
			}
		}
	})
	if checked < 1440 {
		t.Fatalf("only %d ready 60-minute forecasts checked", checked)
	}
}

func slicesIndex(hz []*horizon, h int) int {
	for i, z := range hz {
		if z.h == h {
			return i
		}
	}
	return -1
}
