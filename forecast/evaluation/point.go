package evaluation

import (
	"fmt"
	"math"
	"time"

	"gonum.org/v1/gonum/stat/distuv"

	"cryptostream/features"
	"cryptostream/forecast"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// PointScore is the linear model of the log return over one horizon,
// walk-forward, against the no-change forecast (zero) and the last return
// carried forward.
type PointScore struct {
	Horizon int
	Folds   int
	// FoldsWon counts the folds whose model MSE is below no-change's.
	FoldsWon              int
	Rows                  int
	MSE, MSEZero, MSELast float64
	// R2 is out of sample against no-change: 1 − MSE/MSEZero.
	R2               float64
	VsZero, VsLast   forecast.DM
	TrainSize, Tests int
	// Brier is the direction forecast's Brier score on the rows that
	// moved, the probability of an up move being Φ(forecast/σ) with σ the
	// training rows' RMS return, against climatology: the training rows'
	// share of up moves.
	Brier, BrierClimate float64
	// Promoted counts the daily trainings the promotion rule would have
	// promoted the model at, out of Decisions, each judged on the three
	// folds (days) before it.
	Promoted, Decisions int
}

// Vectors computes the default features of candles.
func Vectors(candles []Candle, iv streams.Interval) ([]streams.FeatureVector, error) {
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		return nil, err
	}
	s := features.NewSeries(calc)
	var out []streams.FeatureVector
	for i, c := range candles {
		sc := streams.Candle{Symbol: "EVAL/USD", Interval: iv, Start: c.Start, Open: c.Open, High: c.High, Low: c.Low, Close: c.Close,
			Volume: c.Volume, Quality: streams.QualityLive}
		if v, o := s.Add(sc, uint64(i+1)); o == features.Computed {
			out = append(out, v)
		}
	}
	return out, nil
}

// ScorePoint runs the trainer's model walk-forward over the whole series:
// each fold of test rows (a day) is predicted by the model the trainer fits
// on the train rows (two days) that end a gap (at least the horizon) before
// it, so no training label reaches a test row.
func ScorePoint(vectors []streams.FeatureVector, h int, iv time.Duration, rule forecast.Rule) (PointScore, error) {
	ds, err := trainer.BuildDataset(vectors, h)
	if err != nil {
		return PointScore{}, err
	}
	day := int(24 * time.Hour / iv)
	sp := trainer.Split{TrainSize: 2 * day, TestSize: 1, Folds: 1, Gap: max(5, h)}
	test := day
	ps := PointScore{Horizon: h, TrainSize: sp.TrainSize, Tests: test}
	first := sp.TrainSize + 2*sp.Gap + 2
	if len(ds.Rows) < first+test {
		return ps, fmt.Errorf("evaluation: %d labelled rows at horizon %d, fewer than %d", len(ds.Rows), h, first+test)
	}
	var pred, actual, last []float64
	var starts []time.Time
	var foldEnds []int
	brierRows := 0
	for from := first; from+test <= len(ds.Rows); from += test {
		// The trainer's final fit on rows ending a gap before the fold is
		// that fold's model.
		rep, err := trainer.WalkForward(trainer.Dataset{Names: ds.Names, Rows: ds.Rows[:from-sp.Gap]}, h, sp)
		if err != nil {
			return ps, fmt.Errorf("evaluation: fold at %s: %w", ds.Rows[from].Start.Format(time.RFC3339), err)
		}
		b, err := rep.Model.Bind(ds.Names)
		if err != nil {
			return ps, err
		}
		var sse, sseZero, ss float64
		up, moved := 0, 0
		for _, r := range ds.Rows[from-sp.Gap-sp.TrainSize : from-sp.Gap] {
			ss += r.Y * r.Y
			if r.Y != 0 {
				moved++
				if r.Y > 0 {
					up++
				}
			}
		}
		sigma := math.Sqrt(ss / float64(sp.TrainSize))
		climate := float64(up) / float64(max(moved, 1))
		for _, r := range ds.Rows[from : from+test] {
			p := b.Predict(r.Values)
			if r.Y != 0 && sigma > 0 {
				ps.Brier += forecast.Brier(distuv.UnitNormal.CDF(p/sigma), r.Y > 0)
				ps.BrierClimate += forecast.Brier(climate, r.Y > 0)
				brierRows++
			}
			pred, actual, last, starts = append(pred, p), append(actual, r.Y), append(last, r.Last), append(starts, r.Start)
			sse += (p - r.Y) * (p - r.Y)
			sseZero += r.Y * r.Y
		}
		ps.Folds++
		if sse < sseZero {
			ps.FoldsWon++
		}
		foldEnds = append(foldEnds, len(pred))
	}
	ps.Rows = len(pred)
	dZero, dLast := make([]float64, ps.Rows), make([]float64, ps.Rows)
	for i, a := range actual {
		e, z, l := forecast.SquaredError(pred[i], a), a*a, forecast.SquaredError(last[i], a)
		ps.MSE += e
		ps.MSEZero += z
		ps.MSELast += l
		dZero[i], dLast[i] = e-z, e-l
	}
	n := float64(ps.Rows)
	ps.MSE, ps.MSEZero, ps.MSELast = ps.MSE/n, ps.MSEZero/n, ps.MSELast/n
	ps.R2 = 1 - ps.MSE/ps.MSEZero
	ps.Brier, ps.BrierClimate = ps.Brier/float64(max(brierRows, 1)), ps.BrierClimate/float64(max(brierRows, 1))
	if ps.VsZero, err = forecast.DieboldMariano(dZero, forecast.DMLag(ps.Rows, h)); err != nil {
		return ps, err
	}
	if ps.VsLast, err = forecast.DieboldMariano(dLast, forecast.DMLag(ps.Rows, h)); err != nil {
		return ps, err
	}
	// The rule at each daily training, on the three folds before it, as
	// the trainer's held-out rows; the model is one candidate.
	for k := 3; k < len(foldEnds); k++ {
		lo, hi := 0, foldEnds[k-1]
		if k > 3 {
			lo = foldEnds[k-4]
		}
		v, err := rule.Decide(forecast.Trial{Horizon: h, Interval: iv, Starts: starts[lo:hi], Actual: actual[lo:hi], Candidate: pred[lo:hi], Tried: 1})
		if err != nil {
			return ps, err
		}
		ps.Decisions++
		if v.Promote {
			ps.Promoted++
		}
	}
	return ps, nil
}
