package main

import (
	"context"

	"cryptostream/predictor"
)

func addPredictor(_ context.Context, s *system, _ *runConfig) error {
	w, err := predictor.New(predictor.Config{}, predictor.Deps{JS: s.bus.JS, Log: s.log, Registry: s.registry, Health: s.health})
	if err != nil {
		return err
	}
	s.workers["predictor"] = w
	return nil
}
