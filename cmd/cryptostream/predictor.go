package main

import (
	"context"

	"cryptostream/predictor"
	"cryptostream/trainer"
)

func cmdPredictor(ctx context.Context, args []string, e *env) error {
	var cfg standaloneConfig
	fs := newFlagSet("predictor", "Applies each series' champion model to every feature vector, publishes\npredictions to PREDICTIONS and scores them when their target arrives.", e)
	cfg.register(fs, ":8083")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.logger(e)
	return runStandalone(ctx, cfg, "predictor", log, func(sys *system) (worker, error) {
		return newPredictorWorker(sys)
	})
}

func newPredictorWorker(sys *system) (*predictor.Worker, error) {
	return predictor.New(predictor.Config{}, predictor.Deps{JS: sys.bus.JS, Log: sys.log, Registry: sys.registry, Health: sys.health})
}

// addPredictionWorkers adds the features, trainer and predictor workers to
// run's composition, with the trainer's default settings.
func addPredictionWorkers(sys *system) error {
	f, err := newFeaturesWorker(sys)
	if err != nil {
		return err
	}
	tf := trainerFlags{Horizon: 1, Every: 1440}
	tf.Split = trainer.DefaultSplit()
	t, err := newTrainerWorker(sys, tf)
	if err != nil {
		return err
	}
	p, err := newPredictorWorker(sys)
	if err != nil {
		return err
	}
	sys.workers["features"], sys.workers["trainer"], sys.workers["predictor"] = f, t, p
	return nil
}
