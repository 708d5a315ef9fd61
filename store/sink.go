package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/sync/errgroup"

	"cryptostream/streams"
)

// ErrDatabaseDown is what Ready reports while writes to PostgreSQL fail.
var ErrDatabaseDown = errors.New("store: database unavailable, sink paused")

// Bus is what the sink needs of JetStream: its durable consumers and the
// buckets it watches.
type Bus interface {
	Stream(ctx context.Context, stream string) (jetstream.Stream, error)
	Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error)
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
}

// Config tunes the sink.
type Config struct {
	// BatchSize is the most messages written in one transaction. It stays
	// below the consumers' MaxAckPending (1024), or a fetch could never fill.
	BatchSize int
	// BatchWait is how long a fetch waits to fill a batch.
	BatchWait time.Duration
	// RetryMax bounds the wait between attempts while the database is down.
	RetryMax time.Duration
	// WriteTimeout bounds one batch's transaction.
	WriteTimeout time.Duration
	// LagEvery is how often the consumers' backlog is sampled.
	LagEvery time.Duration
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.BatchWait <= 0 {
		c.BatchWait = 250 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 30 * time.Second
	}
	if c.LagEvery <= 0 {
		c.LagEvery = 15 * time.Second
	}
	return c
}

// Deps are the sink's collaborators.
type Deps struct {
	Bus     Bus
	DB      *pgxpool.Pool
	Metrics prometheus.Registerer
	Log     *slog.Logger
}

// Sink projects the streams and buckets into PostgreSQL.
type Sink struct {
	cfg  Config
	bus  Bus
	db   *pgxpool.Pool
	log  *slog.Logger
	down atomic.Bool
	// loaded counts the buckets whose initial values are all written.
	loaded atomic.Int32
	// settled is, per bucket, the newest revision the sink has handled
	// (written, skipped or rejected), so Synced can tell a change that is
	// still on its way from one that is in the database.
	settled map[string]*atomic.Uint64

	rows     *prometheus.CounterVec
	rejected *prometheus.CounterVec
	failures prometheus.Counter
	dbUp     prometheus.Gauge
	batchDur prometheus.Histogram
	pending  *prometheus.GaugeVec
	observe  func(streams.Outcome, error)
	acks     *prometheus.CounterVec
}

// New builds a sink; it does no I/O.
func New(cfg Config, d Deps) (*Sink, error) {
	if d.Bus == nil || d.DB == nil {
		return nil, errors.New("store: sink needs a bus and a database")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	f := promauto.With(d.Metrics)
	s := &Sink{
		settled: map[string]*atomic.Uint64{},
		cfg:     cfg.withDefaults(),
		bus:     d.Bus,
		db:      d.DB,
		log:     d.Log.With("worker", "sink"),
		rows: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_sink_rows_written_total",
			Help: "Rows upserted into the read model, by table.",
		}, []string{"table"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_sink_rejected_total",
			Help: "Messages or bucket entries that failed to decode or validate and were dropped, by source.",
		}, []string{"source"}),
		failures: f.NewCounter(prometheus.CounterOpts{
			Name: "cryptostream_sink_write_failures_total",
			Help: "Failed writes to PostgreSQL; each is retried until it succeeds.",
		}),
		dbUp: f.NewGauge(prometheus.GaugeOpts{
			Name: "cryptostream_sink_database_up",
			Help: "1 while the last write to PostgreSQL succeeded, 0 while the sink is paused on an outage.",
		}),
		batchDur: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "cryptostream_sink_batch_duration_seconds",
			Help:    "Time to write and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cryptostream_sink_pending_messages",
			Help: "Messages of a stream not yet projected (pending or unacked on the sink's consumer), sampled every LagEvery.",
		}, []string{"stream"}),
		acks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cryptostream_sink_messages_total",
			Help: "Messages settled by the sink, by outcome (ack, term, nak).",
		}, []string{"outcome"}),
	}
	s.dbUp.Set(1)
	s.observe = func(o streams.Outcome, _ error) { s.acks.WithLabelValues(string(o)).Inc() }
	for _, b := range buckets {
		s.settled[b.bucket] = new(atomic.Uint64)
	}
	return s, nil
}

// Ready reports whether the sink can write; it is a readiness check.
func (s *Sink) Ready(context.Context) error {
	if s.down.Load() {
		return ErrDatabaseDown
	}
	return nil
}

// Run consumes until ctx ends. The schema must be migrated before.
func (s *Sink) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, p := range projections {
		g.Go(func() error { return s.consume(gctx, p) })
	}
	for _, w := range buckets {
		g.Go(func() error { return s.watch(gctx, w) })
	}
	g.Go(func() error { s.sampleLag(gctx); return nil })
	if err := g.Wait(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// sampleLag exports each sink consumer's backlog until ctx ends.
func (s *Sink) sampleLag(ctx context.Context) {
	t := time.NewTicker(s.cfg.LagEvery)
	defer t.Stop()
	for {
		for _, p := range projections {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			cons, err := s.bus.Consumer(ictx, p.stream, p.consumer)
			if err == nil {
				var info *jetstream.ConsumerInfo
				if info, err = cons.Info(ictx); err == nil {
					s.pending.WithLabelValues(p.stream).Set(float64(info.NumPending + uint64(info.NumAckPending)))
				}
			}
			cancel()
			if err != nil && ctx.Err() == nil {
				s.log.Debug("sample consumer lag", "consumer", p.consumer, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fetched is one decoded batch: the valid messages, each one's row key,
// and the newest row per key.
type fetched struct {
	msgs []jetstream.Msg
	keys []string
	rows map[string][]any
}

// consume fetches batches from one durable consumer, writes each in one
// transaction, and only then acks it. Invalid messages are terminated.
// Fetching and decoding the next batch overlaps the write of the previous
// one; the writes themselves stay in order, one at a time.
func (s *Sink) consume(ctx context.Context, p projection) error {
	cons, err := s.bus.Consumer(ctx, p.stream, p.consumer)
	if err != nil {
		return fmt.Errorf("store: sink consumer %s: %w", p.consumer, err)
	}
	log := s.log.With("stream", p.stream)
	settle := func(h streams.Handler) jetstream.MessageHandler { return streams.Acker(ctx, log, h, s.observe) }
	ackOK := settle(func(context.Context, jetstream.Msg) error { return nil })
	reject := func(m jetstream.Msg, err error) {
		s.rejected.WithLabelValues(p.stream).Inc()
		settle(func(context.Context, jetstream.Msg) error { return streams.Permanent(err) })(m)
	}

	batches := make(chan fetched, 1)
	go func() {
		defer close(batches)
		for ctx.Err() == nil {
			f, ok := s.fetch(ctx, cons, p, log, reject)
			if !ok {
				continue
			}
			select {
			case batches <- f:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		for range batches { // let the fetcher finish; what it holds is redelivered
		}
	}()

	for f := range batches {
		var bad map[string]error
		write := func(wctx context.Context) error {
			bad = nil
			err := s.writeRows(wctx, p, f.rows)
			if !isDataError(err) {
				return err
			}
			// A row PostgreSQL refuses (a NUL byte in a text, say) can
			// never be stored: find it, write the others, reject it.
			bad = map[string]error{}
			for k, r := range f.rows {
				if err := s.writeRows(wctx, p, map[string][]any{k: r}); err != nil {
					if !isDataError(err) {
						return err
					}
					bad[k] = err
				}
			}
			return nil
		}
		if !s.retry(ctx, f.msgs, write) {
			return nil // shutting down: nothing acked, the server redelivers
		}
		s.rows.WithLabelValues(p.table).Add(float64(len(f.rows) - len(bad)))
		for i, m := range f.msgs {
			if err, ok := bad[f.keys[i]]; ok {
				reject(m, err)
				continue
			}
			ackOK(m)
		}
	}
	return nil
}

// fetch gets and decodes one batch, rejecting what does not decode. It
// reports false when there is nothing to write.
func (s *Sink) fetch(ctx context.Context, cons jetstream.Consumer, p projection, log *slog.Logger, reject func(jetstream.Msg, error)) (fetched, bool) {
	batch, err := cons.Fetch(s.cfg.BatchSize, jetstream.FetchMaxWait(s.cfg.BatchWait))
	if err != nil {
		log.Debug("fetch", "err", err)
		sleep(ctx, time.Second)
		return fetched{}, false
	}
	f := fetched{rows: map[string][]any{}}
	for msg := range batch.Messages() {
		md, err := msg.Metadata()
		var key string
		var row []any
		if err == nil {
			key, row, err = p.row(msg.Data(), md.Sequence.Stream)
		} else {
			err = streams.Permanent(fmt.Errorf("metadata: %w", err))
		}
		if err != nil {
			reject(msg, err)
			continue
		}
		f.msgs, f.keys = append(f.msgs, msg), append(f.keys, key)
		// The newest sequence of a key wins within a batch too: one
		// INSERT ... ON CONFLICT may not touch a row twice.
		if old, ok := f.rows[key]; !ok || old[len(old)-1].(int64) < row[len(row)-1].(int64) {
			f.rows[key] = row
		}
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) {
		log.Debug("fetch batch", "err", err)
	}
	return f, len(f.msgs) > 0
}

// retry runs write until it succeeds or ctx ends, pausing the sink while
// it fails. msgs are kept in progress so the server does not redeliver them
// to another sink meanwhile. It reports whether the write succeeded.
func (s *Sink) retry(ctx context.Context, msgs []jetstream.Msg, write func(context.Context) error) bool {
	wait := 100 * time.Millisecond
	for {
		// A batch in flight finishes even when shutdown starts, so that
		// what was written is also acked.
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.WriteTimeout)
		start := time.Now()
		err := write(wctx)
		cancel()
		if err == nil {
			s.batchDur.Observe(time.Since(start).Seconds())
			if s.down.Swap(false) {
				s.log.Info("database back, sink resumed")
			}
			s.dbUp.Set(1)
			return true
		}
		s.failures.Inc()
		if !s.down.Swap(true) {
			s.log.Warn("database write failed, sink paused", "err", err)
		}
		s.dbUp.Set(0)
		for _, m := range msgs {
			_ = m.InProgress() // best effort; a lost one is redelivered and upserted again
		}
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, s.cfg.RetryMax)
	}
}

// writeRows stages the batch with COPY and upserts it in one transaction.
func (s *Sink) writeRows(ctx context.Context, p projection, rows map[string][]any) error {
	staging := "sink_in_" + p.table
	src := make([][]any, 0, len(rows))
	for _, r := range rows {
		src = append(src, r)
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("CREATE TEMP TABLE IF NOT EXISTS %s (LIKE %s) ON COMMIT DELETE ROWS", staging, p.table)); err != nil {
			return fmt.Errorf("stage: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{staging}, p.columns, pgx.CopyFromRows(src)); err != nil {
			return fmt.Errorf("copy: %w", err)
		}
		if _, err := tx.Exec(ctx, p.upsertSQL(staging)); err != nil {
			return fmt.Errorf("upsert: %w", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: write %s: %w", p.table, err)
	}
	return nil
}

// isDataError reports a write PostgreSQL refuses for the data itself (data
// exception or integrity violation), which no retry can fix.
func isDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || strings.HasPrefix(pgErr.Code, "23")
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
