package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/schollz/progressbar/v3"

	"cryptostream/bus"
	"cryptostream/store"
)

// sinkConfig is the configuration of `sink`.
type sinkConfig struct {
	runConfig
	Rebuild   bool
	BatchSize int
	BatchWait time.Duration
}

func (c *sinkConfig) registerSink(fs *flagSet) {
	fs.intVar(&c.BatchSize, "sink-batch-size", "SINK_BATCH_SIZE", 1000, "most messages written to PostgreSQL in one transaction (at most the consumers' MaxAckPending, 1024)")
	fs.durationVar(&c.BatchWait, "sink-batch-wait", "SINK_BATCH_WAIT", 250*time.Millisecond, "how long the sink waits to fill a batch")
}

func (c sinkConfig) store() store.Config {
	return store.Config{BatchSize: c.BatchSize, BatchWait: c.BatchWait}
}

func cmdSink(ctx context.Context, args []string, e *env) error {
	var cfg sinkConfig
	fs := newFlagSet("sink", "Projects MARKET, PREDICTIONS, ALERTS, AUDIT and the assets, users and\nmodel-registry buckets into PostgreSQL (--database-url). With --rebuild it\ndrops the projection, replays every stream from its start with a progress\nbar and exits; stop the running sinks first.", e)
	cfg.register(fs, ":8083")
	fs.intVar(&cfg.Replicas, "replicas", "NATS_REPLICAS", 1, "replicas of every stream and bucket (3 on a cluster)")
	fs.boolVar(&cfg.Rebuild, "rebuild", "", false, "drop the projection and replay it from the streams, then exit")
	cfg.registerSink(fs)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("sink: --database-url (DATABASE_URL) is required")
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > 1024 {
		return fmt.Errorf("--sink-batch-size %d: want 1 to 1024", cfg.BatchSize)
	}
	cfg.Roles = []string{"sink"}
	log := cfg.logger(e)
	log.Info("starting", "command", "sink", "config", cfg.commonConfig, "rebuild", cfg.Rebuild)
	if cfg.Rebuild {
		return rebuild(ctx, cfg, e, log)
	}
	sys, err := startSystem(ctx, cfg.runConfig, log)
	if err != nil {
		return err
	}
	stopWatchdog := watchdog(ctx, cfg.ShutdownTimeout, log)
	defer stopWatchdog()
	return sys.Run(ctx)
}

// rebuild drops the projection and replays the streams into it.
func rebuild(ctx context.Context, cfg sinkConfig, e *env, log *slog.Logger) error {
	b, err := bus.Open(ctx, bus.Config{URL: cfg.NATSURL, DataDir: cfg.DataDir, Replicas: cfg.Replicas, Name: "cryptostream-sink-rebuild"}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	db, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := store.Reset(ctx, db, b.JS); err != nil {
		return err
	}
	sink, err := store.New(cfg.store(), store.Deps{Bus: b.JS, DB: db, Log: log})
	if err != nil {
		return err
	}
	// The bar is made once the total is known: an unknown length makes
	// the library animate a spinner from a goroutine of its own.
	var bar *progressbar.ProgressBar
	err = sink.RunUntilSynced(ctx, 200*time.Millisecond, func(p store.Progress) {
		if bar == nil {
			bar = progressbar.NewOptions64(max(int64(p.Total), 1),
				progressbar.OptionSetWriter(e.stderr),
				progressbar.OptionSetDescription("replaying streams into PostgreSQL"),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("msgs"),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.stderr) }),
			)
		}
		if int64(p.Total) > bar.GetMax64() {
			bar.ChangeMax64(int64(p.Total))
		}
		_ = bar.Set64(int64(p.Done))
	})
	if err != nil {
		return fmt.Errorf("sink: rebuild: %w", err)
	}
	if bar != nil {
		_ = bar.Finish()
	}
	log.Info("projection rebuilt")
	return nil
}

// openDatabase connects to PostgreSQL and applies the migrations.
func openDatabase(ctx context.Context, url string) (*pgxpool.Pool, error) {
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	mctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := store.Migrate(mctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// addStore opens the read model: the gateway reads history from it, and
// the sink (when this process runs that role) keeps it up to date.
func (s *system) addStore(ctx context.Context, cfg runConfig) error {
	db, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	s.db = db
	s.reader = store.NewReader(db)
	if !cfg.wants("sink") {
		return nil
	}
	sink, err := store.New(store.Config{}, store.Deps{Bus: s.bus.JS, DB: db, Metrics: s.registry, Log: s.log})
	if err != nil {
		return err
	}
	s.health.AddCheck("sink_database", sink.Ready)
	s.workers["sink"] = sink
	return nil
}
