package backtest

import (
	"errors"
	"fmt"
	"strconv"

	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// walkForward retrains the predictor stage's champion every RetrainEvery
// vectors on the vectors before it, with the functions the trainer's
// Train runs: BuildDataset, WalkForward, the champion scored on the
// promotion rule (Decide: significance against no-change and the
// champion, and the champion's demotion).
type walkForward struct {
	cfg    *Config
	stage  *predictor.Predictions
	key    string
	run    *Run
	past   []streams.FeatureVector
	seen   int
	champ  *streams.ModelRecord
	trials int
}

// need is how many vectors the trainer reads for one training.
func (w *walkForward) need() int {
	sp, h := w.cfg.Split, w.cfg.Horizon
	return sp.TrainSize + sp.Folds*sp.TestSize + max(sp.Gap, h) + 2*h
}

// before is called with each vector before the predictor stage sees it.
func (w *walkForward) before(v streams.FeatureVector) error {
	if w.cfg.RetrainEvery <= 0 {
		return nil
	}
	if w.seen > 0 && w.seen%w.cfg.RetrainEvery == 0 {
		if err := w.retrain(v); err != nil {
			return err
		}
	}
	w.seen++
	w.past = append(w.past, v)
	if n := w.need(); len(w.past) > 2*n {
		w.past = append(w.past[:0], w.past[len(w.past)-n:]...)
	}
	return nil
}

func (w *walkForward) retrain(next streams.FeatureVector) error {
	past := w.past[max(0, len(w.past)-w.need()):]
	h, sp := w.cfg.Horizon, w.cfg.Split
	ds, err := trainer.BuildDataset(past, h)
	if err != nil {
		return fmt.Errorf("backtest: walk-forward: %w", err)
	}
	rep, err := trainer.WalkForward(ds, h, sp)
	if errors.Is(err, trainer.ErrNotEnoughData) {
		// The trainer refuses the job the same way: too early to train.
		return nil
	}
	if err != nil {
		return fmt.Errorf("backtest: walk-forward: %w", err)
	}
	w.trials++
	id := "bt-" + strconv.Itoa(w.trials)
	champID := ""
	var sitting *trainer.Champion
	if w.champ != nil {
		champID = w.champ.ID
		sitting = &trainer.Champion{ID: w.champ.ID, Horizon: w.champ.Horizon, TrainTo: w.champ.TrainTo}
		if m, err := trainer.FromRecord(*w.champ); err == nil {
			sitting.Model = &m
		}
	}
	// One feature set is tried, as the live trainer tries one unless a
	// job names candidates.
	dec, err := trainer.Decide(w.cfg.Rule, rep, ds.Names, sitting, 1, w.cfg.Interval.Duration())
	if err != nil {
		return fmt.Errorf("backtest: walk-forward: %w", err)
	}
	promote, demote := dec.Promote, dec.Demote && w.champ != nil
	out := Retrain{At: next.Start, ModelID: id, Promoted: promote, Decision: dec.Reason, TestMSE: rep.Test.MSE}
	rec := streams.ModelRecord{
		ID: id, Symbol: w.cfg.Symbol, Interval: w.cfg.Interval, Horizon: h,
		Features: rep.Model.Features, Coefficients: rep.Model.Coef, ResidualStd: rep.ResidualStd,
		TrainFrom: rep.TrainFrom, TrainTo: rep.TrainTo, TestFrom: rep.TestFrom, TestTo: rep.TestTo,
		Metrics: map[string]streams.Metrics{
			"train": rep.Train, "test": rep.Test, "baseline_zero": rep.BaselineZero, "baseline_last": rep.BaselineLast,
		},
		Champion: promote,
	}
	switch {
	case promote:
		w.champ = &rec
	case demote:
		out.Demoted = champID
		w.champ = nil
	}
	if promote || demote {
		if err := w.stage.SetChampion(w.key, w.champ); err != nil {
			return fmt.Errorf("backtest: walk-forward: %w", err)
		}
	}
	w.run.Retrains = append(w.run.Retrains, out)
	return nil
}
