package main

import (
	"context"

	"cryptostream/features"
)

func cmdFeatures(ctx context.Context, args []string, e *env) error {
	var cfg standaloneConfig
	fs := newFlagSet("features", "Consumes closed candles from MARKET and publishes one feature vector per\ncandle to FEATURES. Instances beyond the first are standbys (pinned consumer).", e)
	cfg.register(fs, ":8081")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	log := cfg.logger(e)
	return runStandalone(ctx, cfg, "features", log, func(sys *system) (worker, error) {
		return newFeaturesWorker(sys)
	})
}

func newFeaturesWorker(sys *system) (*features.Worker, error) {
	return features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: sys.bus.JS, Log: sys.log, Registry: sys.registry})
}
