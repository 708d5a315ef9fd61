package trainer_test

import (
	"math"
	"testing"
	"time"

	"cryptostream/datatest"
	"cryptostream/forecast"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// realVectors are the default features of the whole real 1-minute file.
func realVectors(t testing.TB) []streams.FeatureVector {
	t.Helper()
	return vectorsOf(t, datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 0))
}

// TestWalkForwardRealFile: on the real 1-minute file the report holds the
// model's and both baselines' figures on the same held-out rows, and a
// deliberately useless feature set (the time of day alone, on three weeks of
// a market that trades round the clock) is not promoted.
func TestWalkForwardRealFile(t *testing.T) {
	ds, err := trainer.BuildDataset(realVectors(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Rows) < 29000 {
		t.Fatalf("%d rows from the file", len(ds.Rows))
	}
	sp := trainer.DefaultSplit()
	rep, err := trainer.WalkForward(ds, 1, sp)
	if err != nil {
		t.Fatal(err)
	}
	wantTest := sp.Folds * sp.TestSize
	for name, m := range map[string]streams.Metrics{"test": rep.Test, "baseline_zero": rep.BaselineZero, "baseline_last": rep.BaselineLast} {
		if m.N != wantTest || !(m.MSE > 0) || m.MAE <= 0 {
			t.Errorf("%s: %+v, want %d rows and positive errors", name, m, wantTest)
		}
	}
	if rep.Train.N != sp.TrainSize || !(rep.Train.MSE > 0) || rep.Train.R2 <= 0 {
		t.Errorf("train %+v: an in-sample least-squares fit has a positive R²", rep.Train)
	}
	if rep.BaselineZero.DirectionAccuracy != 0 {
		t.Errorf("the zero baseline calls no direction, got %v", rep.BaselineZero.DirectionAccuracy)
	}
	if len(rep.Folds) != sp.Folds || rep.ResidualStd <= 0 {
		t.Fatalf("%d folds, residual std %v", len(rep.Folds), rep.ResidualStd)
	}
	for i, f := range rep.Folds {
		// No training label (the price a horizon after a training row)
		// may fall inside the test window.
		if !f.TrainTo.Add(time.Minute).Before(f.TestFrom) || f.TestTo.Before(f.TestFrom) {
			t.Errorf("fold %d: train %s..%s, test %s..%s", i, f.TrainFrom, f.TrainTo, f.TestFrom, f.TestTo)
		}
	}
	if !rep.TrainTo.Equal(ds.Rows[len(ds.Rows)-1].Start) {
		t.Errorf("the model kept is not fitted on the latest rows: %s", rep.TrainTo)
	}
	t.Logf("all features: train %+v test %+v zero %+v last %+v", rep.Train, rep.Test, rep.BaselineZero, rep.BaselineLast)

	sp.Features = []string{"tod_sin", "tod_cos"}
	useless, err := trainer.WalkForward(ds, 1, sp)
	if err != nil {
		t.Fatal(err)
	}
	if useless.Test.MSE < useless.BaselineZero.MSE {
		t.Fatalf("the time of day beats the zero baseline (%v < %v): pick another useless set", useless.Test.MSE, useless.BaselineZero.MSE)
	}
	if d, err := trainer.Decide(forecast.DefaultRule(), useless, ds.Names, nil, 1, time.Minute); err != nil || d.Promote {
		t.Fatalf("useless model promoted: %+v, %v", d, err)
	}
}

// TestBuildDatasetGaps: labels are over elapsed intervals, not rows.
func TestBuildDatasetGaps(t *testing.T) {
	at := func(min int, close float64) streams.FeatureVector {
		return streams.FeatureVector{Symbol: "BTC/USD", Interval: streams.Interval1m,
			Start: time.Date(2023, 3, 1, 0, min, 0, 0, time.UTC), Close: close, Names: []string{"x"}, Values: []float64{float64(min)}}
	}
	// Minutes 2 and 3 had no trade.
	vs := []streams.FeatureVector{at(0, 100), at(1, 101), at(4, 104), at(5, 105), at(6, 106)}
	ds, err := trainer.BuildDataset(vs, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Row at 1: before = price at -1 (none): skipped. Row at 4: before =
	// price at 2 = 101 (carried), after = price at 6 = 106.
	if len(ds.Rows) != 1 {
		t.Fatalf("%d rows: %+v", len(ds.Rows), ds.Rows)
	}
	r := ds.Rows[0]
	if !r.Start.Equal(at(4, 0).Start) || math.Abs(r.Y-math.Log(106.0/104)) > 1e-15 || math.Abs(r.Last-math.Log(104.0/101)) > 1e-15 {
		t.Fatalf("row %+v", r)
	}
}
