package forecast

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// TestProfileAlignedIsGeneral: the one-division bucket and forward of a
// profile whose buckets tile the day give the general way's integers, so
// its factors and seasonal lengths bit for bit.
func TestProfileAlignedIsGeneral(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		buckets int
		iv      time.Duration
	}{{48, time.Minute}, {48, 5 * time.Minute}, {24, time.Hour}, {48, 7 * time.Minute}, {7, time.Minute}, {48, 4 * time.Hour}} {
		p := newProfile(tc.buckets, tc.iv, 10, 2, 0)
		for i := range p.s {
			p.s[i] = rng.Float64() * 2
		}
		general := p
		general.aligned = false
		ivSec := int64(tc.iv / time.Second)
		for range 4000 {
			unix := (rng.Int64N(4e9)) / ivSec * ivSec
			if b, want := p.bucket(unix), general.bucket(unix); b != want {
				t.Fatalf("%d buckets of %v, %d: bucket %d, want %d", tc.buckets, tc.iv, unix, b, want)
			}
			h := 1 + rng.IntN(1440)
			if got, want := p.forward(unix, ivSec, h), general.forward(unix, ivSec, h); got != want {
				t.Fatalf("%d buckets of %v, %d, h %d: forward %v, want %v", tc.buckets, tc.iv, unix, h, got, want)
			}
		}
	}
}

// TestProfileCrashHourFades: half an hour of a crash (minutes thirty
// times the calm ones) on two weeks of a calm random walk must not set that half
// hour's seasonal factor for the days after: with DefaultConfig's cap the
// next day's factor stays below 1.6 (1.48), where without a cap it is 3.2
// (the variance forecast of that time of day, and so the interval, that
// much too wide).
func TestProfileCrashHourFades(t *testing.T) {
	cfg := DefaultConfig(time.Minute)
	cfg.Horizons, cfg.ACISteps, cfg.Pooled = cfg.Horizons[:1], cfg.ACISteps[:1], cfg.Pooled[:1]
	s, err := NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	crashAt := start.Add(15*24*time.Hour + 14*time.Hour)
	price := 100.0
	for m := range 16 * 1440 {
		at := start.Add(time.Duration(m) * time.Minute)
		sd := 1e-4
		if !at.Before(crashAt) && at.Before(crashAt.Add(30*time.Minute)) {
			sd *= 30
		}
		price *= math.Exp(sd * rng.NormFloat64())
		if _, err := s.Add(at, price, nil); err != nil {
			t.Fatal(err)
		}
	}
	b := s.prof.bucket(crashAt.Unix())
	t.Logf("factor of the crash's half hour the next day: %.2f", s.prof.s[b])
	if f := s.prof.s[b]; !(f < 1.6) {
		t.Errorf("the crash's half hour has a seasonal factor of %.2f the next day", f)
	}
}
