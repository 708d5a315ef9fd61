package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/registry"
	"cryptostream/streams"
)

// bucketProjection maps the entries of one KV bucket to statements. put
// returns nil, nil for a key it does not project.
type bucketProjection struct {
	bucket string
	put    func(key string, value []byte, rev uint64) (*statement, error)
	delete func(key string, rev uint64) *statement
}

type statement struct {
	sql  string
	args []any
}

var errSkip = errors.New("store: key not projected")

func decodeRecord[T any](value []byte) (T, error) {
	var v T
	if err := json.Unmarshal(value, &v); err != nil {
		return v, streams.Permanent(fmt.Errorf("decode %T: %w", v, err))
	}
	return v, nil
}

var buckets = []bucketProjection{
	{
		bucket: streams.BucketAssets,
		put: func(key string, value []byte, rev uint64) (*statement, error) {
			a, err := decodeRecord[streams.Asset](value)
			if err != nil {
				return nil, err
			}
			if err := streams.ValidateSymbol(a.Symbol); err != nil {
				return nil, streams.Permanent(err)
			}
			return &statement{`INSERT INTO assets (symbol, added_by, added_at, kraken_key, kv_revision) VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (symbol) DO UPDATE SET added_by = excluded.added_by, added_at = excluded.added_at,
				kraken_key = excluded.kraken_key, kv_revision = excluded.kv_revision WHERE assets.kv_revision <= excluded.kv_revision`,
				[]any{a.Symbol, a.AddedBy, nullTime(a.AddedAt), a.KrakenKey, int64(rev)}}, nil
		},
		delete: func(key string, rev uint64) *statement {
			sym, err := streams.SymbolFromToken(key)
			if err != nil {
				sym = key
			}
			return &statement{"DELETE FROM assets WHERE symbol = $1 AND kv_revision < $2", []any{sym, int64(rev)}}
		},
	},
	{
		bucket: streams.BucketUsers,
		put: func(key string, value []byte, rev uint64) (*statement, error) {
			u, err := decodeRecord[streams.User](value)
			if err != nil {
				return nil, err
			}
			if u.Username == "" {
				return nil, streams.Permanent(errors.New("user without a username"))
			}
			// The password hash is deliberately not among the columns.
			return &statement{`INSERT INTO users (username, email, full_name, role, disabled, created_at, updated_at, kv_revision)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (username) DO UPDATE SET email = excluded.email, full_name = excluded.full_name, role = excluded.role,
				disabled = excluded.disabled, created_at = excluded.created_at, updated_at = excluded.updated_at,
				kv_revision = excluded.kv_revision WHERE users.kv_revision <= excluded.kv_revision`,
				[]any{u.Username, u.Email, u.FullName, string(u.Role), u.Disabled, nullTime(u.CreatedAt), nullTime(u.UpdatedAt), int64(rev)}}, nil
		},
		delete: func(key string, rev uint64) *statement {
			return &statement{"DELETE FROM users WHERE username = $1 AND kv_revision < $2", []any{key, int64(rev)}}
		},
	},
	{
		bucket: streams.BucketModelRegistry,
		put: func(key string, value []byte, rev uint64) (*statement, error) {
			switch {
			case strings.HasPrefix(key, "model."):
				return modelStatement(value, rev)
			case strings.HasPrefix(key, "champion."):
				iv, sym, err := registry.ParseChampionKey(key)
				if err != nil {
					return nil, err
				}
				id := registry.DecodeChampion(value)
				return &statement{`INSERT INTO champions (symbol, interval, model_id, kv_revision) VALUES ($1, $2, $3, $4)
					ON CONFLICT (symbol, interval) DO UPDATE SET model_id = excluded.model_id, kv_revision = excluded.kv_revision
					WHERE champions.kv_revision <= excluded.kv_revision`, []any{sym, int32(iv), id, int64(rev)}}, nil
			}
			return nil, errSkip
		},
		delete: func(key string, rev uint64) *statement {
			if id, ok := strings.CutPrefix(key, "model."); ok {
				return &statement{"DELETE FROM model_evaluations WHERE model_id = $1 AND kv_revision < $2", []any{id, int64(rev)}}
			}
			if iv, sym, err := registry.ParseChampionKey(key); err == nil {
				return &statement{"DELETE FROM champions WHERE symbol = $1 AND interval = $2 AND kv_revision < $3", []any{sym, int32(iv), int64(rev)}}
			}
			return nil
		},
	},
}

func modelStatement(value []byte, rev uint64) (*statement, error) {
	m, err := decodeRecord[streams.ModelRecord](value)
	if err != nil {
		return nil, err
	}
	if m.ID == "" || !m.Interval.Valid() {
		return nil, streams.Permanent(fmt.Errorf("model record: id %q, interval %d", m.ID, int(m.Interval)))
	}
	features, _ := json.Marshal(m.Features)
	coefs, err := json.Marshal(m.Coefficients)
	if err != nil {
		return nil, streams.Permanent(fmt.Errorf("model %s coefficients: %w", m.ID, err))
	}
	metrics, err := json.Marshal(m.Metrics)
	if err != nil {
		return nil, streams.Permanent(fmt.Errorf("model %s metrics: %w", m.ID, err))
	}
	return &statement{`INSERT INTO model_evaluations (model_id, symbol, interval, horizon, features, coefficients, residual_std,
		train_from, train_to, test_from, test_to, metrics, champion, decision, artifact, created_at, kv_revision)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
		ON CONFLICT (model_id) DO UPDATE SET symbol = excluded.symbol, interval = excluded.interval, horizon = excluded.horizon,
		features = excluded.features, coefficients = excluded.coefficients, residual_std = excluded.residual_std,
		train_from = excluded.train_from, train_to = excluded.train_to, test_from = excluded.test_from, test_to = excluded.test_to,
		metrics = excluded.metrics, champion = excluded.champion, decision = excluded.decision, artifact = excluded.artifact,
		created_at = excluded.created_at, kv_revision = excluded.kv_revision
		WHERE model_evaluations.kv_revision <= excluded.kv_revision`,
		[]any{m.ID, m.Symbol, int32(m.Interval), int32(m.Horizon), features, coefs, m.ResidualStd,
			nullTime(m.TrainFrom), nullTime(m.TrainTo), nullTime(m.TestFrom), nullTime(m.TestTo), metrics,
			m.Champion, m.Decision, m.Artifact, nullTime(m.CreatedAt), int64(rev)}}, nil
}

// watch projects every entry of a bucket, deletes too: WatchAll first
// replays the latest value of every key, then follows changes.
func (s *Sink) watch(ctx context.Context, b bucketProjection) error {
	kv, err := s.bus.KeyValue(ctx, b.bucket)
	if err != nil {
		return fmt.Errorf("store: sink bucket %s: %w", b.bucket, err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("store: watch bucket %s: %w", b.bucket, err)
	}
	defer w.Stop() //nolint:errcheck // stopping a watcher on the way out
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil
		case e = <-w.Updates():
		}
		if e == nil {
			s.loaded.Add(1) // the end of the initial values, all written
			continue
		}
		if !s.project(ctx, b, e) {
			return nil
		}
		s.settled[b.bucket].Store(e.Revision())
	}
}

// project writes one bucket entry; false means ctx ended first.
func (s *Sink) project(ctx context.Context, b bucketProjection, e jetstream.KeyValueEntry) bool {
	var st *statement
	if e.Operation() != jetstream.KeyValuePut {
		st = b.delete(e.Key(), e.Revision())
	} else {
		var err error
		st, err = b.put(e.Key(), e.Value(), e.Revision())
		if errors.Is(err, errSkip) {
			return true
		}
		if err != nil {
			s.rejected.WithLabelValues(b.bucket).Inc()
			s.log.Warn("bucket entry rejected", "bucket", b.bucket, "key", e.Key(), "err", err)
			return true
		}
	}
	if st == nil {
		return true
	}
	if !s.retry(ctx, nil, func(wctx context.Context) error { return exec(wctx, s.db, st) }) {
		return false
	}
	s.rows.WithLabelValues(b.bucket).Inc()
	return true
}

func exec(ctx context.Context, db *pgxpool.Pool, st *statement) error {
	if _, err := db.Exec(ctx, st.sql, st.args...); err != nil {
		return fmt.Errorf("store: write bucket entry: %w", err)
	}
	return nil
}
