package main

import (
	"context"

	"cryptostream/features"
)

func addFeatures(_ context.Context, s *system, _ *runConfig) error {
	w, err := features.New(features.Config{Spec: features.DefaultSpec(), Partitioned: true}, features.Deps{JS: s.bus.JS, Log: s.log, Registry: s.registry})
	if err != nil {
		return err
	}
	s.workers["features"] = w
	return nil
}
