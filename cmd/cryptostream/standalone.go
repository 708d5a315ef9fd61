package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"cryptostream/bus"
	"cryptostream/ops"
)

// standaloneConfig is what a single role run against an external NATS
// takes besides its own flags.
type standaloneConfig struct {
	commonConfig
	Replicas int
}

func (c *standaloneConfig) register(fs *flagSet, defaultHTTPAddr string) {
	c.commonConfig.register(fs, defaultHTTPAddr)
	fs.intVar(&c.Replicas, "replicas", "NATS_REPLICAS", 3, "replicas of every stream and bucket, if this role creates them first")
}

func (c *standaloneConfig) validate() error {
	if err := c.commonConfig.validate(); err != nil {
		return err
	}
	if c.NATSURL == "" {
		return errors.New("--nats-url is required: a single role runs against an external NATS (use `run` for everything on an embedded one)")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("--replicas %d: want 1 to 5", c.Replicas)
	}
	return nil
}

// startStandalone connects to the external NATS and starts the HTTP server
// with /metrics, /healthz and /readyz; the caller adds its worker to the
// returned system and runs it.
func startStandalone(ctx context.Context, cfg standaloneConfig, name string, log *slog.Logger) (*system, error) {
	b, err := bus.Open(ctx, bus.Config{URL: cfg.NATSURL, Replicas: cfg.Replicas, Name: "cryptostream-" + name}, log)
	if err != nil {
		return nil, err
	}
	sys := &system{
		log: log, bus: b, registry: ops.NewRegistry(), health: ops.NewHealth(), mux: http.NewServeMux(),
		workers: map[string]worker{}, timeout: cfg.ShutdownTimeout,
	}
	sys.health.AddCheck("jetstream", b.Ready)
	ops.Register(sys.mux, sys.registry, sys.health)
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("http listen %s: %w", cfg.HTTPAddr, err)
	}
	sys.listener = ln
	sys.server = &http.Server{Handler: sys.mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	log.Info("http listening", "addr", ln.Addr().String())
	return sys, nil
}

// runStandalone parses nothing: it starts the system, adds the worker that
// build makes, and runs until ctx ends.
func runStandalone(ctx context.Context, cfg standaloneConfig, name string, log *slog.Logger, build func(sys *system) (worker, error)) error {
	log.Info("starting", "command", name, "config", cfg.commonConfig)
	sys, err := startStandalone(ctx, cfg, name, log)
	if err != nil {
		return err
	}
	w, err := build(sys)
	if err != nil {
		sys.bus.Close()
		return err
	}
	sys.workers[name] = w
	stopWatchdog := watchdog(ctx, cfg.ShutdownTimeout, log)
	defer stopWatchdog()
	return sys.Run(ctx)
}
