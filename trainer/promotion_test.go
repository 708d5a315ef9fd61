package trainer_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"cryptostream/features"
	"cryptostream/forecast"
	"cryptostream/trainer"
)

// promotionSplit is small enough for many candidates per test and holds
// out 750 rows, more than the rule's 500.
var promotionSplit = trainer.Split{TrainSize: 600, TestSize: 250, Folds: 3, Gap: 2}

// candidateGrid is what a search over feature sets tries: every feature
// alone, the whole set, and random triples: 40 candidates.
func candidateGrid(seed uint64) [][]string {
	names := features.DefaultSpec().Names()
	var sets [][]string
	for _, n := range names {
		sets = append(sets, []string{n})
	}
	sets = append(sets, names)
	rng := rand.New(rand.NewPCG(seed, 3))
	for len(sets) < 40 {
		p := rng.Perm(len(names))
		sets = append(sets, []string{names[p[0]], names[p[1]], names[p[2]]})
	}
	return sets
}

func searchAndDecide(t *testing.T, ds trainer.Dataset, sets [][]string, champ *trainer.Champion) (trainer.Report, trainer.Decision) {
	t.Helper()
	rep, err := trainer.Search(ds, 1, promotionSplit, sets)
	if err != nil {
		t.Fatal(err)
	}
	d, err := trainer.Decide(forecast.DefaultRule(), rep, ds.Names, champ, len(sets), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return rep, d
}

// TestDecideRandomWalkPromotesNothing: on seeded random walks, the best of
// 40 candidates is never promoted, though on most seeds it has the lower
// held-out MSE the old rule promoted on.
func TestDecideRandomWalkPromotesNothing(t *testing.T) {
	chance := 0
	for seed := range uint64(3) {
		ds, err := trainer.BuildDataset(vectorsOf(t, regimes(100+seed, 0, 1500)), 1)
		if err != nil {
			t.Fatal(err)
		}
		rep, d := searchAndDecide(t, ds, candidateGrid(seed), nil)
		if d.Promote {
			t.Errorf("seed %d: promoted the best of 40 candidates on a random walk: %s", seed, d.Reason)
		}
		if rep.Test.MSE < rep.BaselineZero.MSE {
			chance++
		}
		t.Logf("seed %d: %s", seed, d.Reason)
	}
	if chance == 0 {
		t.Error("no seed's best candidate beat no-change by chance: the test shows nothing the strict lower-MSE rule would not")
	}
}

// TestDecidePromotesPlantedComponent: when the last return predicts the
// next one (r[t] = −0.4 r[t−1] + noise), the search finds it among 40
// candidates and the rule promotes it.
func TestDecidePromotesPlantedComponent(t *testing.T) {
	for seed := range uint64(2) {
		ds, err := trainer.BuildDataset(vectorsOf(t, meanReverting(1500, 200+seed)), 1)
		if err != nil {
			t.Fatal(err)
		}
		rep, d := searchAndDecide(t, ds, candidateGrid(seed), nil)
		if !d.Promote {
			t.Errorf("seed %d: the planted component was not promoted: %s", seed, d.Reason)
		}
		if !slices.Contains(rep.Model.Features, "ret_1") || d.Verdict.VsNoChange.Stat > -2 {
			t.Errorf("seed %d: picked %v, DM %.2f", seed, rep.Model.Features, d.Verdict.VsNoChange.Stat)
		}
	}
}

// TestDecideDemotesStaleChampion: a champion fitted on a mean-reverting
// market is kept while it still beats no-change on rows it has not seen,
// demoted once the market has become a random walk, kept when too few
// unseen rows judge it, and a champion of another horizon is not compared.
func TestDecideDemotesStaleChampion(t *testing.T) {
	// 3000 mean-reverting minutes, then 1500 of a random walk.
	all := vectorsOf(t, regimes(9, 3000, 1500))
	ds, err := trainer.BuildDataset(all, 1)
	if err != nil {
		t.Fatal(err)
	}
	change := slices.IndexFunc(ds.Rows, func(r trainer.Row) bool { return !r.Start.Before(all[0].Start.Add(3000 * time.Minute)) })
	fitted, err := trainer.WalkForward(trainer.Dataset{Names: ds.Names, Rows: ds.Rows[:change-800]}, 1, promotionSplit)
	if err != nil {
		t.Fatal(err)
	}
	champ := &trainer.Champion{ID: "m-old", Model: &fitted.Model, Horizon: 1, TrainTo: fitted.TrainTo}
	useless := [][]string{{"tod_sin", "tod_cos"}}

	// Still mean-reverting: the held-out rows end at the change, about 750
	// of them after the champion's window.
	_, d := searchAndDecide(t, trainer.Dataset{Names: ds.Names, Rows: ds.Rows[:change]}, useless, champ)
	if d.Promote || d.Demote || d.ChampionRows < 500 || !strings.Contains(d.Reason, "kept") {
		t.Errorf("a champion that still beats no-change: %+v", d)
	}
	// After the change, on rows it has not seen, it does worse than
	// saying nothing.
	_, d = searchAndDecide(t, ds, useless, champ)
	if d.Promote || !d.Demote || d.ChampionMSE < d.ChampionNoChangeMSE || !strings.Contains(d.Reason, "demoted") {
		t.Errorf("a stale champion: %+v", d)
	}
	// Trained up to nearly the end: too few unseen rows to judge.
	recent := *champ
	recent.TrainTo = ds.Rows[len(ds.Rows)-300].Start
	if _, d = searchAndDecide(t, ds, useless, &recent); d.Demote || d.ChampionRows >= 500 {
		t.Errorf("judged on %d unseen rows: %+v", d.ChampionRows, d)
	}
	// Another horizon: neither demoted nor compared.
	other := *champ
	other.Horizon = 5
	if _, d = searchAndDecide(t, ds, useless, &other); d.Demote || d.Verdict.ChampionRows != 0 || !strings.Contains(d.Reason, "no-change only") {
		t.Errorf("a champion of another horizon: %+v", d)
	}
}
