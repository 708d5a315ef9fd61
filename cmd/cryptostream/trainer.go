package main

import (
	"context"
	"fmt"
	"log/slog"

	"cryptostream/backtest"
	"cryptostream/trainer"
)

// trainerFlags are the model settings of the trainer role.
type trainerFlags struct {
	Horizon int
	Every   int
	Split   trainer.Split
}

func defaultTrainerFlags() trainerFlags {
	return trainerFlags{Horizon: 1, Every: 1440, Split: trainer.DefaultSplit()}
}

func (t *trainerFlags) register(fs *flagSet) {
	def := trainer.DefaultSplit()
	fs.intVar(&t.Horizon, "horizon", "TRAIN_HORIZON", 1, "intervals ahead the models predict the log return")
	fs.intVar(&t.Every, "train-every", "TRAIN_EVERY", 1440, "train a series after this many new feature vectors of it (0: on jobs only)")
	fs.intVar(&t.Split.TrainSize, "train-size", "TRAIN_SIZE", def.TrainSize, "rows per fit")
	fs.intVar(&t.Split.TestSize, "test-size", "TRAIN_TEST_SIZE", def.TestSize, "held-out rows per walk-forward fold")
	fs.intVar(&t.Split.Folds, "folds", "TRAIN_FOLDS", def.Folds, "walk-forward folds")
	fs.intVar(&t.Split.Gap, "gap", "TRAIN_GAP", def.Gap, "rows between training and test rows (at least the horizon)")
}

func (t *trainerFlags) validate() error {
	if t.Horizon < 1 || t.Every < 0 || t.Split.TrainSize < 1 || t.Split.TestSize < 1 || t.Split.Folds < 1 || t.Split.Gap < 0 {
		return fmt.Errorf("trainer settings %+v: sizes must be positive", *t)
	}
	return nil
}

// LogValue logs the trainer's settings.
func (t trainerFlags) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("horizon", t.Horizon), slog.Int("every", t.Every),
		slog.Int("train_size", t.Split.TrainSize), slog.Int("test_size", t.Split.TestSize),
		slog.Int("folds", t.Split.Folds), slog.Int("gap", t.Split.Gap))
}

func addTrainer(_ context.Context, s *system, cfg *runConfig) error {
	tf := cfg.Trainer
	w, err := trainer.New(trainer.Config{Horizon: tf.Horizon, Every: tf.Every, Split: tf.Split},
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
