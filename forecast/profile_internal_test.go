package forecast

import (
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
		p := newProfile(tc.buckets, tc.iv, 10, 2)
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
