package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"cryptostream/predictor"
)

// predictorFlags are the predictor role's settings.
type predictorFlags struct {
	Horizons string
	horizons []time.Duration
}

func (f *predictorFlags) register(fs *flagSet) {
	fs.stringVar(&f.Horizons, "forecast-horizons", "FORECAST_HORIZONS", "1m,15m,1h",
		"comma-separated forecast horizons; each series forecasts those that are whole numbers of its interval (up to 24h)")
}

func (f *predictorFlags) validate() error {
	f.horizons = nil
	for _, s := range strings.Split(f.Horizons, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < time.Minute || d > 24*time.Hour || d%time.Minute != 0 {
			return fmt.Errorf("--forecast-horizons: %q: want whole minutes from 1m to 24h", s)
		}
		f.horizons = append(f.horizons, d)
	}
	if len(f.horizons) == 0 {
		return fmt.Errorf("--forecast-horizons: none given")
	}
	return nil
}

// LogValue logs the predictor's settings.
func (f predictorFlags) LogValue() slog.Value {
	return slog.GroupValue(slog.String("forecast_horizons", f.Horizons))
}

func addPredictor(_ context.Context, s *system, cfg *runConfig) error {
	deps := predictor.Deps{JS: s.bus.JS, Log: s.log, Registry: s.registry, Health: s.health}
	// With --demo in the same process, the recording before the replay
	// warms the volatility model, so that the first forecasts already
	// carry calibrated intervals.
	if d, ok := s.workers["krakensim"].(*demoSim); ok {
		deps.Seed = d
	}
	w, err := predictor.New(predictor.Config{Horizons: cfg.Predictor.horizons, Partitioned: true}, deps)
	if err != nil {
		return err
	}
	s.workers["predictor"] = w
	return nil
}
