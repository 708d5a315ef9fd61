package forecast

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestConformalCoverageHandWorked follows online split conformal with
// adaptive conformal inference by hand: a window of 9 scores (first
// 1, 2, ..., 9), the 80% level, ACI step γ = 0.15. The multiplier q is the
// ⌈(n+1)(1−α)⌉ = ⌈10(1−α)⌉-th smallest score of the window, the largest
// when that rank passes 9. After each outcome α += 0.15·(0.2 − miss), so
// +0.03 after a hit and −0.12 after a miss, and the score enters the
// window, pushing out the oldest. The windows do not depend on α.
//
//	step  window (sorted)                   α      rank  q    score  hit
//	1     1 2 3 4 5 6 7 8 9                 0.20   8     8    8.5    no
//	2     2 3 4 5 6 7 8 8.5 9               0.08   10    9    9.5    no
//	3     3 4 5 6 7 8 8.5 9 9.5            −0.04   11    9.5  4      yes
//	4     4 4 5 6 7 8 8.5 9 9.5            −0.01   11    9.5  9.2    yes
//	5     4 5 6 7 8 8.5 9 9.2 9.5           0.02   10    9.5  3      yes
//	6     3 4 6 7 8 8.5 9 9.2 9.5           0.05   10    9.5  6.5    yes
//	7     3 4 6.5 7 8 8.5 9 9.2 9.5         0.08   10    9.5  9.4    yes
//	8     3 4 6.5 8 8.5 9 9.2 9.4 9.5       0.11   9     9.5  9.6    no
//	9     3 4 6.5 8.5 9 9.2 9.4 9.5 9.6    −0.01   11    9.6  2      yes
//	10    2 3 4 6.5 8.5 9.2 9.4 9.5 9.6     0.02   10    9.6  9.3    yes
//
// Seven hits in ten: coverage 70%, and 3 of the last 4. Split conformal
// alone (α fixed at 0.2, q the 8th smallest: 8, 8.5, 9, 9, 9.2, 9.2, 9.2,
// 9.4, 9.5, 9.5) misses at steps 1, 2, 4, 7 and 8: 50%, and 2 of the last 4.
// Scores that drift upwards are what ACI is for. The last window,
// 2 3 4 6.5 9.2 9.3 9.4 9.5 9.6, at α = 0.35 gives rank ⌈6.5⌉ = 7: 9.4 (a
// rank of ⌈n(1−α)⌉ would give 9.3, and cover less than promised).
func TestConformalCoverageHandWorked(t *testing.T) {
	scores := []float64{8.5, 9.5, 4, 9.2, 3, 6.5, 9.4, 9.6, 2, 9.3}
	run := func(gamma float64, wantQ, wantAlpha []float64, wantCover, wantLast4 float64) {
		t.Helper()
		c := NewCalibration(9)
		for s := 1.0; s <= 9; s++ {
			c.Add(s)
		}
		a := NewACI(0.8, gamma)
		all, last := newHitWindow(len(scores)), newHitWindow(4)
		for i, s := range scores {
			if !near(a.Alpha(), wantAlpha[i]) {
				t.Fatalf("γ %v step %d: α %v, want %v", gamma, i+1, a.Alpha(), wantAlpha[i])
			}
			q := c.Quantile(a.Alpha())
			if q != wantQ[i] {
				t.Fatalf("γ %v step %d: multiplier %v, want %v (window %v)", gamma, i+1, q, wantQ[i], c.sorted())
			}
			hit := s <= q
			a.Observe(!hit)
			all.add(hit)
			last.add(hit)
			c.Add(s)
		}
		if all.share() != wantCover || last.share() != wantLast4 {
			t.Errorf("γ %v: coverage %v over all, %v over the last 4; want %v, %v", gamma, all.share(), last.share(), wantCover, wantLast4)
		}
		if q := c.Quantile(0.35); q != 9.4 {
			t.Errorf("last window %v at α 0.35: %v, want 9.4", c.sorted(), q)
		}
	}
	run(0.15, []float64{8, 9, 9.5, 9.5, 9.5, 9.5, 9.5, 9.5, 9.6, 9.6},
		[]float64{0.2, 0.08, -0.04, -0.01, 0.02, 0.05, 0.08, 0.11, -0.01, 0.02}, 0.7, 0.75)
	run(0, []float64{8, 8.5, 9, 9, 9.2, 9.2, 9.2, 9.4, 9.5, 9.5},
		[]float64{0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2}, 0.5, 0.5)
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-12 }

// TestCalibrationStaysSorted: after every Add the window is the last size
// scores, and sorted it equals a plain sort of them, through ties, the
// fill, and scores entering above, below and at the one they replace.
func TestCalibrationStaysSorted(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{1, 2, 7, 100, 1000} {
		c := NewCalibration(size)
		var last []float64
		for i := range 3000 {
			var s float64
			switch i % 4 {
			case 0:
				s = math.Abs(rng.NormFloat64())
			case 1:
				s = float64(rng.IntN(5)) // ties
			case 2:
				if len(last) > 0 {
					s = last[0] // the score it will push out
				}
			case 3:
				s = rng.ExpFloat64() * 10
			}
			c.Add(s)
			last = append(last, s)
			if len(last) > size {
				last = last[1:]
			}
			want := slices.Sorted(slices.Values(last))
			if !slices.Equal(c.sorted(), want) {
				t.Fatalf("size %d, after %d adds: window %v, want %v", size, i+1, c.sorted(), want)
			}
			// Every rank, as Quantile and At read them, through the
			// index of block starts.
			for k, w := range want {
				if got := c.rank(k); got != w {
					t.Fatalf("size %d, after %d adds: rank %d is %v, want %v", size, i+1, k, got, w)
				}
			}
		}
		c.Add(math.NaN())
		if c.Len() != size {
			t.Fatalf("size %d: NaN was kept", size)
		}
	}
}

// TestCalibrationSplitsWhereScoresCrowd: once the window is full, scores
// crowding into one narrow range fill its block past capacity while the
// old ones leave other blocks, so the replace path splits a block with
// the new score in either half; every rank must still be read through
// the right block start.
func TestCalibrationSplitsWhereScoresCrowd(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const size = 2000
	c := NewCalibration(size)
	var last []float64
	for i := range 3 * size {
		s := rng.ExpFloat64()
		if i >= size {
			s = 0.7 + 1e-3*rng.Float64()
		}
		c.Add(s)
		last = append(last, s)
		if len(last) > size {
			last = last[1:]
		}
		if i%7 != 0 {
			continue
		}
		want := slices.Sorted(slices.Values(last))
		for k, w := range want {
			if got := c.rank(k); got != w {
				t.Fatalf("after %d adds: rank %d is %v, want %v", i+1, k, got, w)
			}
		}
	}
}

// deleteInsert is Calibration.Add as main had it (one sorted array: delete
// the oldest, then insert the new score, two copies of up to a window
// each), kept as the benchmark's reference.
type deleteInsert struct {
	size   int
	fifo   []float64
	next   int
	sorted []float64
}

func (c *deleteInsert) add(s float64) {
	if len(c.fifo) < c.size {
		c.fifo = append(c.fifo, s)
	} else {
		old := c.fifo[c.next]
		c.fifo[c.next] = s
		c.next = (c.next + 1) % c.size
		i, _ := slices.BinarySearch(c.sorted, old)
		c.sorted = slices.Delete(c.sorted, i, i+1)
	}
	i, _ := slices.BinarySearch(c.sorted, s)
	c.sorted = slices.Insert(c.sorted, i, s)
}

// BenchmarkCalibrationAdd is one score into a full window of |N(0,1)|
// scores, a day of one-minute scores (1440, the 1- and 15-minute windows'
// order) and 8 days (11520, the 60-minute window): the blocks now, and the
// one sorted array with delete-then-insert that main had, in the same run.
func BenchmarkCalibrationAdd(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 6))
	scores := make([]float64, 1<<16)
	for i := range scores {
		scores[i] = math.Abs(rng.NormFloat64())
	}
	for _, size := range []int{1440, 11520} {
		c, ref := NewCalibration(size), &deleteInsert{size: size}
		for _, bc := range []struct {
			name string
			add  func(float64)
		}{{"blocks", c.Add}, {"delete-insert", ref.add}} {
			b.Run(fmt.Sprintf("%s/%d", bc.name, size), func(b *testing.B) {
				for _, s := range scores[:size] {
					bc.add(s)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					bc.add(scores[i&(len(scores)-1)])
				}
			})
		}
	}
}
