package main

import (
	"context"
	"fmt"

	"cryptostream/features"
)

func cmdFeatures(ctx context.Context, args []string, e *env) error {
	return cmdRole(ctx, args, e, "features", "Consumes closed candles from MARKET and publishes one feature vector per\ncandle to FEATURES. Instances beyond the first are standbys (pinned consumer).", ":8081", false)
}

// cmdRole runs one of the prediction roles alone: run's composition limited
// to it, against --nats-url (or an embedded server under --data-dir).
func cmdRole(ctx context.Context, args []string, e *env, name, synopsis, httpAddr string, withTrainer bool) error {
	var cfg runConfig
	fs := newFlagSet(name, synopsis, e)
	cfg.register(fs, httpAddr)
	fs.intVar(&cfg.Replicas, "replicas", "NATS_REPLICAS", 1, "replicas of every stream and bucket (3 on a cluster)")
	cfg.Trainer = defaultTrainerFlags()
	if withTrainer {
		cfg.Trainer.register(fs)
	}
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := cfg.Trainer.validate(); err != nil {
		return err
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return fmt.Errorf("--replicas %d: want 1 to 5", cfg.Replicas)
	}
	cfg.Roles = []string{name}
	log := cfg.logger(e)
	log.Info("starting", "command", name, "config", cfg.commonConfig)
	sys, err := startSystem(ctx, cfg, log)
	if err != nil {
		return err
	}
	stopWatchdog := watchdog(ctx, cfg.ShutdownTimeout, log)
	defer stopWatchdog()
	return sys.Run(ctx)
}

func newFeaturesWorker(sys *system) (*features.Worker, error) {
	return features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: sys.bus.JS, Log: sys.log, Registry: sys.registry})
}
