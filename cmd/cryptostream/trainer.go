package main

import (
	"context"
	"fmt"
	"log/slog"

	"cryptostream/backtest"
	"cryptostream/forecast"
	"cryptostream/trainer"
)

// trainerFlags are the model settings of the trainer role.
type trainerFlags struct {
	Horizon int
	Every   int
	Split   trainer.Split
	Rule    forecast.Rule
}

func defaultTrainerFlags() trainerFlags {
	return trainerFlags{Horizon: 1, Every: 1440, Split: trainer.DefaultSplit(), Rule: forecast.DefaultRule()}
}

func (t *trainerFlags) register(fs *flagSet) {
	def := trainer.DefaultSplit()
	fs.intVar(&t.Horizon, "horizon", "TRAIN_HORIZON", 1, "intervals ahead the models predict the log return")
	fs.intVar(&t.Every, "train-every", "TRAIN_EVERY", 1440, "train a series after this many new feature vectors of it (0: on jobs only)")
	fs.intVar(&t.Split.TrainSize, "train-size", "TRAIN_SIZE", def.TrainSize, "rows per fit")
	fs.intVar(&t.Split.TestSize, "test-size", "TRAIN_TEST_SIZE", def.TestSize, "held-out rows per walk-forward fold")
	fs.intVar(&t.Split.Folds, "folds", "TRAIN_FOLDS", def.Folds, "walk-forward folds")
	fs.intVar(&t.Split.Gap, "gap", "TRAIN_GAP", def.Gap, "rows between training and test rows (at least the horizon)")
	rule := forecast.DefaultRule()
	fs.float64Var(&t.Rule.Margin, "promotion-margin", "TRAIN_PROMOTION_MARGIN", rule.Margin, "how much lower than no-change's and the champion's a candidate's held-out MSE must be to be promoted (0.005: 0.5%)")
	fs.float64Var(&t.Rule.Alpha, "promotion-alpha", "TRAIN_PROMOTION_ALPHA", rule.Alpha, "significance level of the one-sided Diebold-Mariano tests of promotion, after the correction for the candidates tried")
	fs.intVar(&t.Rule.MinRows, "promotion-min-rows", "TRAIN_PROMOTION_MIN_ROWS", rule.MinRows, "fewest held-out rows a promotion or demotion is decided on")
}

func (t *trainerFlags) validate() error {
	if t.Horizon < 1 || t.Every < 0 || t.Split.TrainSize < 1 || t.Split.TestSize < 1 || t.Split.Folds < 1 || t.Split.Gap < 0 {
		return fmt.Errorf("trainer settings %+v: sizes must be positive", *t)
	}
	if !(t.Rule.Alpha > 0 && t.Rule.Alpha < 1) || !(t.Rule.Margin >= 0 && t.Rule.Margin < 1) || t.Rule.MinRows < 2 {
		return fmt.Errorf("promotion rule %+v: --promotion-alpha in (0, 1), --promotion-margin in [0, 1), --promotion-min-rows at least 2", t.Rule)
	}
	return nil
}

// LogValue logs the trainer's settings.
func (t trainerFlags) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("horizon", t.Horizon), slog.Int("every", t.Every),
		slog.Int("train_size", t.Split.TrainSize), slog.Int("test_size", t.Split.TestSize),
		slog.Int("folds", t.Split.Folds), slog.Int("gap", t.Split.Gap),
		slog.Float64("promotion_margin", t.Rule.Margin), slog.Float64("promotion_alpha", t.Rule.Alpha), slog.Int("promotion_min_rows", t.Rule.MinRows))
}

func addTrainer(_ context.Context, s *system, cfg *runConfig) error {
	tf := cfg.Trainer
	w, err := trainer.New(trainer.Config{Horizon: tf.Horizon, Every: tf.Every, Split: tf.Split, Rule: tf.Rule},
		trainer.Deps{JS: s.bus.JS, Log: s.log, Registry: s.registry})
	if err != nil {
		return err
	}
	s.workers["trainer"] = w
	// Backtest jobs run beside training: both are batch work on history.
	bw, err := backtest.NewWorker(backtest.WorkerConfig{Horizons: cfg.Predictor.horizons},
		backtest.WorkerDeps{JS: s.bus.JS, Log: s.log, Registry: s.registry})
	if err != nil {
		return err
	}
	s.workers["backtest"] = bw
	return nil
}
