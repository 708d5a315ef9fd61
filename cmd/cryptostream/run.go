package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"cryptostream/bus"
	"cryptostream/ops"
	"cryptostream/readmodel"
)

// runConfig is the configuration of `run`: every role in one process.
type runConfig struct {
	commonConfig
	NATSListen string
	Replicas   int
	Ingest     ingestFlags
	Gateway    gatewayConfig
	Trainer    trainerFlags
	// Roles limits the workers started to these; empty starts every role.
	Roles []string
}

// wants reports whether the role runs in this process.
func (c runConfig) wants(role string) bool {
	return len(c.Roles) == 0 || slices.Contains(c.Roles, role)
}

func parseRunConfig(args []string, e *env) (runConfig, error) {
	var cfg runConfig
	fs := newFlagSet("run", "Runs every role in one process. With no --nats-url it starts an embedded\nnats-server with JetStream file storage under --data-dir.", e)
	cfg.register(fs, ":8080")
	fs.stringVar(&cfg.NATSListen, "nats-listen", "NATS_LISTEN", "", "expose the embedded NATS on host:port for the nats CLI (off by default, so it never collides with a server on 4222)")
	fs.intVar(&cfg.Replicas, "replicas", "NATS_REPLICAS", 1, "replicas of every stream and bucket (3 on a cluster)")
	cfg.Ingest.register(fs)
	cfg.Gateway.register(fs)
	cfg.Trainer.register(fs)
	if err := fs.parse(args); err != nil {
		return cfg, err
	}
	if err := cfg.Trainer.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.Ingest.validate(); err != nil {
		return cfg, err
	}
	if err := cfg.Gateway.validate(fs); err != nil {
		return cfg, err
	}
	if cfg.NATSListen != "" && cfg.NATSURL != "" {
		return cfg, errors.New("--nats-listen exposes the embedded server and makes no sense with --nats-url")
	}
	if cfg.Replicas < 1 || cfg.Replicas > 5 {
		return cfg, fmt.Errorf("--replicas %d: want 1 to 5", cfg.Replicas)
	}
	return cfg, nil
}

func cmdRun(ctx context.Context, args []string, e *env) error {
	cfg, err := parseRunConfig(args, e)
	if err != nil {
		return err
	}
	log := cfg.logger(e)
	log.Info("starting", "command", "run", "config", cfg.commonConfig, "nats_listen", cfg.NATSListen, "gateway", cfg.Gateway)
	sys, err := startSystem(ctx, cfg, log)
	if err != nil {
		return err
	}
	stopWatchdog := watchdog(ctx, cfg.ShutdownTimeout, log)
	defer stopWatchdog()
	return sys.Run(ctx)
}

// watchdog exits the process when a shutdown that ctx started overruns its
// bound: a hung drain must not keep a pod in Terminating forever.
func watchdog(ctx context.Context, bound time.Duration, log *slog.Logger) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		select {
		case <-done:
		case <-time.After(bound):
			log.Error("shutdown overran its bound, exiting", "bound", bound)
			os.Exit(2)
		}
	}()
	return func() { close(done) }
}

// worker is a role's long-running part: Run blocks until ctx ends and
// returns nil on a clean stop.
type worker interface {
	Run(ctx context.Context) error
}

// system is the composition `run` starts: the bus, the HTTP server and the
// workers.
type system struct {
	log      *slog.Logger
	bus      *bus.Bus
	registry *prometheus.Registry
	health   *ops.Health
	mux      *http.ServeMux
	server   *http.Server
	listener net.Listener
	// metrics serves /metrics alone when --metrics-addr is set.
	metrics         *http.Server
	metricsListener net.Listener
	workers         map[string]worker
	timeout         time.Duration
	// db and reader are the SQL read model, set when --database-url is.
	db     *pgxpool.Pool
	reader readmodel.Reader
}

func startSystem(ctx context.Context, cfg runConfig, log *slog.Logger) (*system, error) {
	if cfg.NATSURL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
	}
	b, err := bus.Open(ctx, bus.Config{URL: cfg.NATSURL, DataDir: cfg.DataDir, Listen: cfg.NATSListen, Replicas: cfg.Replicas, Name: "cryptostream-run"}, log)
	if err != nil {
		return nil, err
	}
	sys := &system{
		log:      log,
		bus:      b,
		registry: ops.NewRegistry(),
		health:   ops.NewHealth(),
		mux:      http.NewServeMux(),
		workers:  map[string]worker{},
		timeout:  cfg.ShutdownTimeout,
	}
	sys.health.AddCheck("jetstream", b.Ready)
	if cfg.MetricsAddr == "" {
		ops.Register(sys.mux, sys.registry, sys.health)
	} else {
		ops.RegisterHealth(sys.mux, sys.health)
		sys.metrics, sys.metricsListener, err = listenMetrics(cfg.MetricsAddr, sys.registry, log)
		if err != nil {
			b.Close()
			return nil, err
		}
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		if sys.metricsListener != nil {
			sys.metricsListener.Close()
		}
		b.Close()
		return nil, fmt.Errorf("http listen %s: %w", cfg.HTTPAddr, err)
	}
	sys.listener = ln
	sys.server = &http.Server{
		Handler:           sys.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// fail undoes what was started before a role could not be added.
	fail := func(err error) (*system, error) {
		ln.Close()
		if sys.metricsListener != nil {
			sys.metricsListener.Close()
		}
		if sys.db != nil {
			sys.db.Close()
		}
		b.Close()
		return nil, err
	}
	if cfg.DatabaseURL != "" && (cfg.wants("sink") || cfg.wants("gateway")) {
		if err := sys.addStore(ctx, cfg); err != nil {
			return fail(err)
		}
	}
	if cfg.wants("ingest") {
		if err := sys.addIngest(ctx, &cfg.Ingest); err != nil {
			return fail(err)
		}
		if cfg.Ingest.Demo {
			// The demo's market is krakensim's: the gateway validates
			// assets against its AssetPairs.
			cfg.Gateway.KrakenRESTURL = cfg.Ingest.RESTURL
		}
	}
	if cfg.wants("gateway") {
		if err := sys.addGateway(ctx, cfg.Gateway, cfg.DataDir); err != nil {
			return fail(err)
		}
	}
	if err := sys.addPrediction(cfg); err != nil {
		return fail(err)
	}
	log.Info("http listening", "addr", ln.Addr().String())
	return sys, nil
}

// listenMetrics is the server of --metrics-addr: /metrics alone, off the
// public API port, so that an operator can keep scrapes on a private
// address.
func listenMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (*http.Server, net.Listener, error) {
	mux := http.NewServeMux()
	ops.RegisterMetrics(mux, reg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	log.Info("metrics listening", "addr", ln.Addr().String())
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}, ln, nil
}

// Addr is where the HTTP server listens.
func (s *system) Addr() string { return s.listener.Addr().String() }

// MetricsAddr is where /metrics is served on its own, empty when it is on
// Addr.
func (s *system) MetricsAddr() string {
	if s.metricsListener == nil {
		return ""
	}
	return s.metricsListener.Addr().String()
}

// Run serves and runs the workers until ctx ends, then shuts down in
// reverse: HTTP first (no new work comes in), then the workers drain their
// consumers, then the bus flushes and the embedded server stops.
func (s *system) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := s.server.Serve(s.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout/2)
		defer cancel()
		if err := s.server.Shutdown(sctx); err != nil {
			return fmt.Errorf("http shutdown: %w", err)
		}
		return nil
	})
	if s.metrics != nil {
		g.Go(func() error {
			if err := s.metrics.Serve(s.metricsListener); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics http: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout/2)
			defer cancel()
			return s.metrics.Shutdown(sctx)
		})
	}
	for name, w := range s.workers {
		g.Go(func() error {
			if err := w.Run(gctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	err := g.Wait()
	if s.db != nil {
		s.db.Close()
	}
	s.bus.Close()
	if err != nil {
		s.log.Error("stopped with error", "err", err)
		return err
	}
	s.log.Info("stopped cleanly")
	return nil
}

// addIngest wires the Kraken ingester, and with --demo krakensim in process
// on the embedded recording. Kraken being unreachable is a readiness
// detail, not a failure, in the all-in-one process: history and the API
// still serve.
func (s *system) addIngest(ctx context.Context, f *ingestFlags) error {
	if f.Demo {
		d, err := startDemoSim(f.DemoSpeed, s.log)
		if err != nil {
			return err
		}
		f.WSURL, f.RESTURL = d.urls()
		s.workers["krakensim"] = d
	}
	w, err := newIngestWorker(ctx, s.bus, *f, s.registry, s.log)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	s.health.AddDetail("kraken", func() string {
		if err := w.Ready(ctx); err != nil {
			return err.Error()
		}
		return ""
	})
	s.workers["ingest"] = w
	return nil
}
