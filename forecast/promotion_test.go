package forecast_test

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"cryptostream/forecast"
)

// market is a series of one-step log returns with nFeat observable
// features, the first of which predicts the next return with weight
// planted (0: a pure random walk, nothing to find).
type market struct {
	feats [][]float64 // [row][feature], known at the row's start
	y     []float64   // the return over the next step
}

func newMarket(seed uint64, rows, nFeat int, planted float64) market {
	rng := rand.New(rand.NewPCG(seed, 99))
	m := market{feats: make([][]float64, rows), y: make([]float64, rows)}
	for i := range rows {
		m.feats[i] = make([]float64, nFeat)
		for j := range nFeat {
			m.feats[i][j] = rng.NormFloat64()
		}
		m.y[i] = 1e-3 * (planted*m.feats[i][0] + rng.NormFloat64())
	}
	return m
}

// fitOne is least squares of y on one feature with an intercept.
func fitOne(m market, j, from, to int) (a, b float64) {
	var sx, sy, sxx, sxy float64
	n := float64(to - from)
	for i := from; i < to; i++ {
		x := m.feats[i][j]
		sx += x
		sy += m.y[i]
		sxx += x * x
		sxy += x * m.y[i]
	}
	b = (sxy - sx*sy/n) / (sxx - sx*sx/n)
	return sy/n - b*sx/n, b
}

// bestCandidate fits every one-feature model on the training rows and
// returns the trial of the one with the lowest MSE on the held-out rows,
// which is how a search over a grid picks, and why the rule must count the
// whole grid.
func bestCandidate(m market, train, test int) forecast.Trial {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tr := forecast.Trial{Horizon: 1, Interval: time.Minute, Tried: len(m.feats[0])}
	best := -1.0
	for j := range m.feats[0] {
		a, b := fitOne(m, j, 0, train)
		pred := make([]float64, test)
		var sse float64
		for i := range test {
			r := train + 1 + i
			pred[i] = a + b*m.feats[r][j]
			sse += (pred[i] - m.y[r]) * (pred[i] - m.y[r])
		}
		if best < 0 || sse < best {
			best, tr.Candidate = sse, pred
		}
	}
	for i := range test {
		r := train + 1 + i
		tr.Starts = append(tr.Starts, t0.Add(time.Duration(r)*time.Minute))
		tr.Actual = append(tr.Actual, m.y[r])
	}
	return tr
}

// TestRuleNoiseNeverPromotes: on a random walk the best of 60 candidates
// fitted to noise is promoted by no seed.
func TestRuleNoiseNeverPromotes(t *testing.T) {
	rule := forecast.DefaultRule()
	for seed := range uint64(20) {
		tr := bestCandidate(newMarket(seed, 5001, 60, 0), 3000, 2000)
		v, err := rule.Decide(tr)
		if err != nil {
			t.Fatal(err)
		}
		if v.Promote {
			t.Errorf("seed %d: promoted a model fitted to noise: %s", seed, v.Reason)
		}
	}
}

// TestRulePromotesPlantedSignal: when one feature really predicts the next
// return (R² about 8%), the best candidate is that one and it is promoted,
// Bonferroni and margin notwithstanding.
func TestRulePromotesPlantedSignal(t *testing.T) {
	rule := forecast.DefaultRule()
	for seed := range uint64(5) {
		tr := bestCandidate(newMarket(seed, 5001, 60, 0.3), 3000, 2000)
		v, err := rule.Decide(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Promote {
			t.Errorf("seed %d: the planted signal was not promoted: %s", seed, v.Reason)
		}
		if v.VsNoChange.Stat > -2 || v.MSE >= v.MSENoChange {
			t.Errorf("seed %d: %+v", seed, v)
		}
	}
}

// TestRuleCorrectsForCandidates: the same evidence passes for one
// candidate and fails once it is the best of many.
func TestRuleCorrectsForCandidates(t *testing.T) {
	rule := forecast.DefaultRule()
	rule.Margin = 0
	// A weak signal: significant alone at this seed, not after
	// correcting for 1000 candidates.
	tr := bestCandidate(newMarket(1, 5001, 1, 0.15), 3000, 2000)
	tr.Tried = 1
	one, err := rule.Decide(tr)
	if err != nil {
		t.Fatal(err)
	}
	tr.Tried = 1000
	many, err := rule.Decide(tr)
	if err != nil {
		t.Fatal(err)
	}
	if !one.Promote || many.Promote {
		t.Fatalf("one candidate: %s; 1000 candidates: %s (p %.4g)", one.Reason, many.Reason, one.VsNoChange.P)
	}
	if !near(many.AdjustedPNoChange, min(1, 1000*one.VsNoChange.P), 1e-12) {
		t.Errorf("adjusted p %v for raw %v", many.AdjustedPNoChange, one.VsNoChange.P)
	}
}

// TestRuleJudgesChampionOnUnseenRows: only rows starting at or after the
// champion's training window plus the horizon compare it, and a champion
// as good as the candidate keeps its place.
func TestRuleJudgesChampionOnUnseenRows(t *testing.T) {
	rule := forecast.DefaultRule()
	tr := bestCandidate(newMarket(1, 5001, 3, 0.2), 3000, 2000)
	tr.Horizon = 5
	tr.ChampionTrainTo = tr.Starts[799]
	// The champion forecasts perfectly on the rows its labels reached
	// (it saw them) and like the candidate after.
	tr.Champion = make([]float64, len(tr.Actual))
	for i := range tr.Champion {
		tr.Champion[i] = tr.Candidate[i]
		if i < 800+4 {
			tr.Champion[i] = tr.Actual[i]
		}
	}
	v, err := rule.Decide(tr)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(tr.Actual) - 804; v.ChampionRows != want {
		t.Errorf("champion judged on %d rows, want %d (after its window plus 5 minutes)", v.ChampionRows, want)
	}
	if v.Promote || !strings.Contains(v.Reason, "champion") {
		t.Errorf("a candidate no better than the champion was promoted: %s", v.Reason)
	}
	// A champion that is the no-change forecast loses to the signal.
	for i := range tr.Champion {
		tr.Champion[i] = 0
	}
	if v, _ = rule.Decide(tr); !v.Promote {
		t.Errorf("the signal did not replace a no-change champion: %s", v.Reason)
	}
	tr.ChampionTrainTo = tr.Starts[len(tr.Starts)-100]
	if v, _ = rule.Decide(tr); v.Promote || v.ChampionRows >= rule.MinRows {
		t.Errorf("judged a champion on %d unseen rows: %s", v.ChampionRows, v.Reason)
	}
}
