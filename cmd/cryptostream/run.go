package main

import (
	"context"
	"crypto/tls"
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

// runConfig is the configuration of `run` (every role in one process) and
// of each standalone role (one of them).
type runConfig struct {
	commonConfig
	Ingest  ingestFlags
	Gateway gatewayConfig
	Trainer trainerFlags
	// Predictor is the predictor role's settings.
	Predictor predictorFlags
	Sink      sinkFlags
	// Notifier is the notifier role's settings.
	Notifier notifierFlags
	// Roles limits the workers started to these; empty starts every role.
	Roles []string
}

// wants reports whether the role runs in this process.
func (c runConfig) wants(role string) bool {
	return len(c.Roles) == 0 || slices.Contains(c.Roles, role)
}

// alone reports whether this process runs a single role: a standalone
// role's own dependencies are readiness checks, run's are details.
func (c runConfig) alone() bool { return len(c.Roles) == 1 }

// LogValue logs the common settings and those of the roles that run, with
// secrets redacted by each part's own LogValue.
func (c runConfig) LogValue() slog.Value {
	attrs := []slog.Attr{slog.Any("common", c.commonConfig)}
	gw := c.Gateway
	if c.wants("ingest") {
		attrs = append(attrs, slog.Any("ingest", c.Ingest))
		if c.Ingest.Demo {
			// The demo's Kraken is krakensim, on a port not chosen yet.
			gw.KrakenRESTURL = demoURL
		}
	}
	if c.wants("gateway") {
		attrs = append(attrs, slog.Any("gateway", gw))
	}
	if c.wants("trainer") {
		attrs = append(attrs, slog.Any("trainer", c.Trainer))
	}
	if c.wants("notifier") {
		attrs = append(attrs, slog.Any("notifier", c.Notifier))
	}
	if c.wants("predictor") {
		attrs = append(attrs, slog.Any("predictor", c.Predictor))
	}
	return slog.GroupValue(attrs...)
}

// parseRoleConfig parses the flags of a command that runs the roles rs:
// the common ones once, then each role's own.
func parseRoleConfig(name, synopsis, httpAddr string, rs []role, args []string, e *env) (runConfig, error) {
	cfg := runConfig{Trainer: defaultTrainerFlags(), Sink: defaultSinkFlags()}
	fs := newFlagSet(name, synopsis, e)
	serves := "/metrics, /healthz and /readyz"
	if slices.ContainsFunc(rs, func(r role) bool { return r.name == "gateway" }) {
		serves = "the API, the dashboard, the websocket hub, /metrics, /healthz and /readyz"
	}
	cfg.commonConfig.register(fs, httpAddr, serves)
	alone := len(rs) == 1
	for _, r := range rs {
		if r.flags != nil {
			r.flags(fs, &cfg, alone)
		}
	}
	if err := fs.parse(args); err != nil {
		return cfg, err
	}
	if err := cfg.commonConfig.validate(); err != nil {
		return cfg, err
	}
	// A role's user has that role's permissions only (bus.Permissions).
	if nr := cfg.NATSRole; nr != "" && nr != bus.RoleAdmin && (len(rs) != 1 || rs[0].name != nr) {
		return cfg, fmt.Errorf("--nats-role %s: the %s user may run only the %s role (admin may run any)", nr, nr, nr)
	}
	for _, r := range rs {
		if r.check != nil {
			if err := r.check(fs, &cfg); err != nil {
				return cfg, err
			}
		}
	}
	return cfg, nil
}

func parseRunConfig(args []string, e *env) (runConfig, error) {
	return parseRoleConfig("run", "Runs every role in one process. With no --nats-url it starts an embedded\nnats-server with JetStream file storage under --data-dir.", ":8080", roles(), args, e)
}

func cmdRun(ctx context.Context, args []string, e *env) error {
	cfg, err := parseRunConfig(args, e)
	if err != nil {
		return err
	}
	log := cfg.logger(e)
	log.Info("starting", "command", "run", "config", cfg)
	return serve(ctx, cfg, log)
}

// serve starts the roles cfg wants and runs them until ctx ends.
func serve(ctx context.Context, cfg runConfig, log *slog.Logger) error {
	return withCPUProfile(cfg.CPUProfile, func() error { return serveProfiled(ctx, cfg, log) })
}

func serveProfiled(ctx context.Context, cfg runConfig, log *slog.Logger) error {
	sys, err := startSystem(ctx, cfg, log)
	if err != nil {
		if ctx.Err() != nil {
			// A signal during start-up (NATS not reached yet, say) is
			// a stop request, not a failure.
			log.Info("stopped cleanly", "during", "start-up", "cause", err)
			return nil
		}
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
	// served reports the end of the HTTP server, which serves from the
	// start of startSystem.
	served chan error
	// db and reader are the SQL read model, set when --database-url is.
	db     *pgxpool.Pool
	reader readmodel.Reader
}

// startSystem opens the bus, brings up HTTP at once (so /healthz answers
// and /readyz says why it is not ready while NATS connects), waits for the
// topology and then adds the roles cfg wants.
func startSystem(ctx context.Context, cfg runConfig, log *slog.Logger) (*system, error) {
	b, err := bus.Dial(cfg.busConfig("cryptostream-"+processName(cfg)), log)
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
		served:   make(chan error, 1),
	}
	sys.health.AddCheck("jetstream", b.Ready)
	if err := b.RegisterMetrics(sys.registry); err != nil {
		b.Close()
		return nil, err
	}
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

	ln, err := listenHTTP(cfg.HTTPAddr, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		if sys.metricsListener != nil {
			sys.metricsListener.Close()
		}
		b.Close()
		return nil, err
	}
	sys.listener = ln
	sys.server = &http.Server{
		Handler:           sys.mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() {
		err := sys.server.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		sys.served <- err
	}()
	log.Info("http listening", "addr", ln.Addr().String())
	fail := func(err error) (*system, error) {
		sys.server.Close()
		<-sys.served
		if sys.metricsListener != nil {
			sys.metricsListener.Close()
		}
		if sys.db != nil {
			sys.db.Close()
		}
		b.Close()
		return nil, err
	}
	if err := b.Ensure(ctx); err != nil {
		return fail(err)
	}
	for _, r := range roles() {
		if !cfg.wants(r.name) {
			continue
		}
		if err := r.add(ctx, sys, &cfg); err != nil {
			return fail(fmt.Errorf("%s: %w", r.name, err))
		}
	}
	log.Info("started", "workers", len(sys.workers))
	return sys, nil
}

// listenMetrics is the server of --metrics-addr: /metrics alone, off the
// public API port, so that an operator can keep scrapes on a private
// address.
// listenHTTP listens on addr, on TLS when a certificate is given. The
// pair is loaded here so that a wrong file fails the start, not the first
// handshake.
func listenHTTP(addr, certFile, keyFile string) (net.Listener, error) {
	var conf *tls.Config
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	if conf != nil {
		ln = tls.NewListener(ln, conf)
	}
	return ln, nil
}

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

// processName names the process on the NATS connection: the role when it
// runs alone, "run" otherwise.
func processName(cfg runConfig) string {
	if cfg.alone() {
		return cfg.Roles[0]
	}
	return "run"
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
		if err := <-s.served; err != nil {
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
// on the embedded recording. In the all-in-one process Kraken being
// unreachable is a readiness detail, not a failure: history and the API
// still serve. Alone, the ingester is not ready without it.
func addIngest(ctx context.Context, s *system, cfg *runConfig) error {
	f := &cfg.Ingest
	if f.Demo {
		d, err := startDemoSim(f.DemoSpeed, s.log)
		if err != nil {
			return err
		}
		f.WSURL, f.RESTURL = d.urls()
		s.workers["krakensim"] = d
		// The demo's market is krakensim's: the gateway validates
		// assets against its AssetPairs.
		cfg.Gateway.KrakenRESTURL = f.RESTURL
	}
	w, err := newIngestWorker(ctx, s.bus, *f, s.registry, s.log)
	if err != nil {
		return err
	}
	if cfg.alone() {
		s.health.AddCheck("kraken", w.Ready)
	} else {
		s.health.AddDetail("kraken", func() string {
			if err := w.Ready(ctx); err != nil {
				return err.Error()
			}
			return ""
		})
	}
	s.workers["ingest"] = w
	return nil
}
