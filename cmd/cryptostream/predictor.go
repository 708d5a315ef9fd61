package main

import (
	"context"

	"cryptostream/predictor"
)

func cmdPredictor(ctx context.Context, args []string, e *env) error {
	return cmdRole(ctx, args, e, "predictor", "Applies each series' champion model to every feature vector, publishes\npredictions to PREDICTIONS and scores them when their target arrives.", ":8083", false)
}

func newPredictorWorker(sys *system) (*predictor.Worker, error) {
	return predictor.New(predictor.Config{}, predictor.Deps{JS: sys.bus.JS, Log: sys.log, Registry: sys.registry, Health: sys.health})
}

// addPrediction adds the features, trainer and predictor workers that cfg
// wants to run's composition, the trainer with its default settings.
func (s *system) addPrediction(cfg runConfig) error {
	if cfg.wants("features") {
		f, err := newFeaturesWorker(s)
		if err != nil {
			return err
		}
		s.workers["features"] = f
	}
	if cfg.wants("trainer") {
		t, err := newTrainerWorker(s, cfg.Trainer)
		if err != nil {
			return err
		}
		s.workers["trainer"] = t
	}
	if cfg.wants("predictor") {
		p, err := newPredictorWorker(s)
		if err != nil {
			return err
		}
		s.workers["predictor"] = p
	}
	return nil
}
