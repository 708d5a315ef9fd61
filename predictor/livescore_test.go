package predictor

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cryptostream/forecast"
	"cryptostream/streams"
)

var levels = []float64{0.8, 0.95}

// outcome is a 1-minute, horizon-1 outcome whose target closes at target,
// inside the 80% interval when in80 (always inside the 95% one).
func outcome(target time.Time, in80 bool, ret float64) forecast.Outcome {
	lo80, up80 := ret-1, ret+1
	if !in80 {
		lo80, up80 = ret+1, ret+2
	}
	return forecast.Outcome{Horizon: 1, Start: target.Add(-time.Minute), Ready: true, Center: 0.5, Return: ret,
		Variance: 2, NaiveLast: 1, NaiveDay: 4, Realised: 1,
		Lower: []float64{lo80, -10}, Upper: []float64{up80, 10}}
}

// TestLiveScoreHandWorked: three outcomes in one hour, worked by hand.
func TestLiveScoreHandWorked(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC)
	s := newLiveScore(levels, time.Minute, 1440)
	for i, o := range []struct {
		in80 bool
		ret  float64
	}{{true, 0.5}, {false, -0.5}, {true, 1.5}} {
		s.add(outcome(t0.Add(time.Duration(i+1)*time.Minute), o.in80, o.ret), time.Minute)
	}
	d := s.score(1).Day
	// Center 0.5: squared errors 0, 1, 1; no-change: 0.25, 0.25, 2.25.
	// QLIKE of 2, 1 and 4 against 1: 0.5+ln2−1, 0, 0.25+ln4−1.
	want := streams.ScoreWindow{N: 3, MSE: 2.0 / 3, MSENoChange: 2.75 / 3, QLIKEN: 3,
		QLIKE: 0.5 + math.Ln2 - 1, QLIKENaiveLast: 0, QLIKENaiveDay: 0.25 + math.Log(4) - 1}
	if d.N != want.N || d.QLIKEN != want.QLIKEN || !closeTo(d.MSE, want.MSE) || !closeTo(d.MSENoChange, want.MSENoChange) ||
		!closeTo(d.QLIKE, want.QLIKE) || !closeTo(d.QLIKENaiveLast, want.QLIKENaiveLast) || !closeTo(d.QLIKENaiveDay, want.QLIKENaiveDay) {
		t.Errorf("day window %+v, want %+v", d, want)
	}
	if !closeTo(d.Coverage[0].Coverage, 2.0/3) || d.Coverage[1].Coverage != 1 || d.Coverage[0].Level != 0.8 {
		t.Errorf("coverage %+v, want 2/3 and 1", d.Coverage)
	}
}

func closeTo(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

// TestLiveScoreWindows: after every outcome, the day and week windows hold
// exactly the outcomes whose target falls in the last 24 and 168 hours
// (by the hour of the newest target), as a brute-force count over every
// outcome seen says, through gaps shorter and longer than a week.
func TestLiveScoreWindows(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	s := newLiveScore(levels, time.Minute, 1440)
	type seen struct {
		hour int64
		in80 bool
		ret  float64
	}
	var all []seen
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 6000 {
		switch {
		case i == 4000:
			at = at.Add(200 * time.Hour) // longer than the week
		case rng.IntN(50) == 0:
			at = at.Add(time.Duration(rng.IntN(30)) * time.Hour)
		default:
			at = at.Add(time.Duration(1+rng.IntN(5)) * time.Minute)
		}
		o := seen{hour: at.Unix() / 3600, in80: rng.Float64() < 0.8, ret: rng.NormFloat64()}
		all = append(all, o)
		s.add(outcome(at, o.in80, o.ret), time.Minute)
		cur := o.hour
		for _, w := range []struct {
			name  string
			hours int64
			got   streams.ScoreWindow
		}{{"day", 24, s.window(&s.dayT)}, {"week", 168, s.window(&s.weekT)}} {
			n, hit := 0, 0
			var sse float64
			for _, a := range all {
				if a.hour > cur-w.hours {
					n++
					if a.in80 {
						hit++
					}
					sse += (0.5 - a.ret) * (0.5 - a.ret)
				}
			}
			if w.got.N != n || !closeTo(w.got.Coverage[0].Coverage, float64(hit)/float64(n)) || math.Abs(w.got.MSE-sse/float64(n)) > 1e-9 {
				t.Fatalf("outcome %d (hour %d), %s window: n %d coverage %v mse %v, want n %d coverage %v mse %v",
					i, cur, w.name, w.got.N, w.got.Coverage[0].Coverage, w.got.MSE, n, float64(hit)/float64(n), sse/float64(n))
			}
		}
	}
}

// TestLiveScoreFailing: the flag is up when the 80% interval's week
// coverage, over at least a day of outcomes, is outside 75–85%, and only
// then.
func TestLiveScoreFailing(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		n       int
		every   int // every every-th outcome misses the 80% interval
		failing bool
	}{
		{"calibrated", 1440, 5, false},               // 80%
		{"too narrow", 1440, 3, true},                // 66.7%
		{"at the low bound", 1440, 4, false},         // 75% is inside
		{"too wide", 1440, 1000, true},               // 99.9%
		{"less than a day", 1439, 3, false},          // not enough outcomes
		{"too narrow, two days", 2880, 3, true},      // still failing
		{"near the high bound", 1440, 6, false},      // 83.3%
		{"just above the high bound", 1440, 7, true}, // 85.7%
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLiveScore(levels, time.Minute, 1440)
			for i := range tc.n {
				s.add(outcome(t0.Add(time.Duration(i+1)*time.Minute), i%tc.every != 0, 0), time.Minute)
			}
			hs := s.score(15)
			if hs.Failing != tc.failing || hs.Horizon != 15 {
				t.Fatalf("failing %v (%s), want %v; week %+v", hs.Failing, hs.FailingReason, tc.failing, hs.Week.Coverage)
			}
			if hs.Failing != strings.Contains(hs.FailingReason, "outside 75-85%") {
				t.Errorf("reason %q", hs.FailingReason)
			}
		})
	}
}
