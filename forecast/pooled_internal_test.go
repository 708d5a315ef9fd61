package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestPooledIsGeometricMean holds the published 60-minute forecast to the
// geometric mean of the EWMA and log-HAR candidates made at the same
// candle, and the 1- and 15-minute ones to the best candidate as before
// (no pool computed there), on a random walk whose volatility changes
// every few hours so that the candidates disagree.
func TestPooledIsGeometricMean(t *testing.T) {
	cfg := DefaultConfig(time.Minute)
	s, err := NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 14))
	price, vol := 100.0, 1e-3
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c := len(cfg.EWMAHalfLives) + len(cfg.HARRecent)*len(cfg.Ridge) // the candidates pooled
	checked := 0
	for i := range 4 * 1440 {
		if i%240 == 0 {
			vol = 1e-3 * math.Exp(rng.NormFloat64())
		}
		price *= math.Exp(vol * rng.NormFloat64())
		st, err := s.Add(t0.Add(time.Duration(i)*time.Minute), price, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, hz := range s.hz {
			f := st.Forecasts[k]
			if !f.Ready {
				continue
			}
			slot := s.t % (hz.h + 1)
			cv := hz.candVar[slot*hz.cands : (slot+1)*hz.cands]
			if !cfg.Pooled[k] {
				if f.Model == "pooled" || cv[c+1] != 0 {
					t.Fatalf("%d min at %d: model %s, pool %v: the pool is for 60 minutes only", hz.h, i, f.Model, cv[c+1])
				}
				continue
			}
			var lg float64
			for _, v := range cv[:c] {
				lg += math.Log(v)
			}
			want := math.Exp(lg / float64(c))
			if f.Model != "pooled" || math.Abs(f.Variance/want-1) > 1e-12 {
				t.Fatalf("60 min at %d: model %s variance %v, geometric mean of %v is %v", i, f.Model, f.Variance, cv[:c], want)
			}
			checked++
		}
	}
	if checked < 1440 {
		t.Fatalf("only %d ready 60-minute forecasts checked", checked)
	}
}

// TestPooledLossesFromLoggedCandidates: on the pooled horizon the score
// takes the candidates' logs the pool took h intervals before instead of
// taking them again; every candidate's trailing loss must be what the
// logs taken afresh give, bit for bit (the losses choose the fallback
// when the pool is not finite, so no published figure shows them).
func TestPooledLossesFromLoggedCandidates(t *testing.T) {
	cfg := DefaultConfig(time.Minute)
	s, err := NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := -1
	for i, hz := range s.hz {
		if hz.pooled {
			k = i
		}
	}
	if k < 0 {
		t.Fatal("no pooled horizon in the default configuration")
	}
	rng := rand.New(rand.NewPCG(15, 92))
	price, vol := 100.0, 1e-3
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	scored := 0
	for i := range 3 * 1440 {
		if i%240 == 0 {
			vol = 1e-3 * math.Exp(rng.NormFloat64())
		}
		price *= math.Exp(vol * rng.NormFloat64())
		hz := s.hz[k]
		// What the next Add scores, and the losses before it.
		next := s.t + 1
		if !s.started {
			next = 0
		}
		slot := (next - hz.h) % (hz.h + 1)
		due := next >= hz.h && hz.pend[slot].valid
		var want []ewMean
		var fs []float64
		if due {
			want = append(want, hz.loss...)
			fs = append(fs, hz.candVar[slot*hz.cands:(slot+1)*hz.cands]...)
		}
		if _, err := s.Add(t0.Add(time.Duration(i)*time.Minute), price, nil); err != nil {
			t.Fatal(err)
		}
		if !due {
			continue
		}
		scored++
		for c, f := range fs {
			if f > 0 {
				want[c].add(hz.raw.sum/f + math.Log(f))
			}
			if math.Float64bits(want[c].v) != math.Float64bits(hz.loss[c].v) || want[c].n != hz.loss[c].n {
				t.Fatalf("candle %d, candidate %s: loss %v (n %d), want %v (n %d)", i, s.names[c], hz.loss[c].v, hz.loss[c].n, want[c].v, want[c].n)
			}
		}
	}
	if scored < 2*1440 {
		t.Fatalf("%d outcomes scored", scored)
	}
}
