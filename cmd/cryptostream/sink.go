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

// sinkFlags are the sink's settings.
type sinkFlags struct {
	Rebuild   bool
	BatchSize int
	BatchWait time.Duration
}

func defaultSinkFlags() sinkFlags {
	return sinkFlags{BatchSize: 1000, BatchWait: 250 * time.Millisecond}
}

func (c *sinkFlags) register(fs *flagSet, alone bool) {
	if alone {
		fs.boolVar(&c.Rebuild, "rebuild", "", false, "drop the projection and replay it from the streams, then exit")
	}
	fs.intVar(&c.BatchSize, "sink-batch-size", "SINK_BATCH_SIZE", 1000, "most messages written to PostgreSQL in one transaction (at most the consumers' MaxAckPending, 1024)")
	fs.durationVar(&c.BatchWait, "sink-batch-wait", "SINK_BATCH_WAIT", 250*time.Millisecond, "how long the sink waits to fill a batch")
}

func (c sinkFlags) store() store.Config {
	return store.Config{BatchSize: c.BatchSize, BatchWait: c.BatchWait}
}

// checkSink validates the sink's settings. Alone the sink needs a database;
// in run without one there is simply no sink.
func checkSink(_ *flagSet, cfg *runConfig) error {
	if cfg.Sink.BatchSize < 1 || cfg.Sink.BatchSize > 1024 {
		return fmt.Errorf("--sink-batch-size %d: want 1 to 1024", cfg.Sink.BatchSize)
	}
	if cfg.Sink.Rebuild && cfg.DatabaseURL == "" {
		return errors.New("sink: --database-url (DATABASE_URL) is required")
	}
	return nil
}

func rebuildOneShot(ctx context.Context, cfg *runConfig, e *env, log *slog.Logger) (bool, error) {
	if cfg.DatabaseURL == "" {
		return true, errors.New("sink: --database-url (DATABASE_URL) is required")
	}
	if !cfg.Sink.Rebuild {
		return false, nil
	}
	return true, rebuild(ctx, *cfg, e, log)
}

// rebuild drops the projection and replays the streams into it.
func rebuild(ctx context.Context, cfg runConfig, e *env, log *slog.Logger) error {
	b, err := bus.Open(ctx, cfg.busConfig("cryptostream-sink-rebuild"), log)
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
	sink, err := store.New(cfg.Sink.store(), store.Deps{Bus: b.JS, DB: db, Log: log})
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

// database opens the read model once: the gateway reads history from it and
// the sink keeps it up to date, in one process or each alone.
func (s *system) database(ctx context.Context, cfg *runConfig) (*pgxpool.Pool, error) {
	if s.db != nil {
		return s.db, nil
	}
	db, err := openDatabase(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	s.db = db
	s.reader = store.NewReader(db)
	return db, nil
}

// addSink projects the streams into PostgreSQL when --database-url is set;
// without it run has no read model to keep.
func addSink(ctx context.Context, s *system, cfg *runConfig) error {
	if cfg.DatabaseURL == "" {
		return nil
	}
	db, err := s.database(ctx, cfg)
	if err != nil {
		return err
	}
	sc := cfg.Sink.store()
	sink, err := store.New(sc, store.Deps{Bus: s.bus.JS, DB: db, Metrics: s.registry, Log: s.log})
	if err != nil {
		return err
	}
	s.health.AddCheck("sink_database", sink.Ready)
	s.workers["sink"] = sink
	return nil
}
