package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"cryptostream/readmodel"
	"cryptostream/streams"
)

// Reader answers readmodel queries from the projection. It pages exactly
// like readmodel.JetStream (same cursor, limits and bounds), which the
// readmodeltest contract checks.
type Reader struct {
	db *pgxpool.Pool
}

var _ readmodel.Reader = (*Reader)(nil)

// NewReader returns a Reader over db.
func NewReader(db *pgxpool.Pool) *Reader { return &Reader{db: db} }

// Unbounded ends of a range, inside timestamptz's range, so that one
// statement with plain comparisons serves every query and keeps its plan.
var (
	beginning = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	end       = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
)

// bounds closes an open (zero) end of a range.
func bounds(from, to time.Time) (time.Time, time.Time) {
	if from.IsZero() {
		from = beginning
	}
	if to.IsZero() {
		to = end
	}
	return from, to
}

const candleColumns = "start, open, high, low, close, vwap, volume, trades, quality"

// Candles implements readmodel.Reader.
func (r *Reader) Candles(ctx context.Context, q readmodel.CandleQuery) (readmodel.CandlePage, error) {
	q, err := q.Normalize()
	if err != nil {
		return readmodel.CandlePage{}, err
	}
	cs, next, err := readPage(ctx, r.db, "candles", candleColumns, collectCandles,
		func(c streams.Candle) time.Time { return c.Start }, q.Symbol, q.Interval, q.From, q.To, q.Limit)
	if err != nil {
		return readmodel.CandlePage{}, err
	}
	return readmodel.CandlePage{Candles: cs, Next: next}, nil
}

// collector reads the rows of one series into out.
type collector[T any] func(rows pgx.Rows, symbol string, iv streams.Interval, out []T) ([]T, error)

// readPage reads one page of a series from table (candles or predictions,
// which key and order their rows alike) and the cursor of the next page.
func readPage[T any](ctx context.Context, db *pgxpool.Pool, table, columns string, collect collector[T],
	start func(T) time.Time, symbol string, iv streams.Interval, from, to time.Time, limit int) ([]T, string, error) {
	from, to = bounds(from, to)
	// One row past the page tells whether there is a next one, and where.
	rows, err := db.Query(ctx, "SELECT "+columns+" FROM "+table+`
		WHERE symbol = $1 AND interval = $2 AND start >= $3 AND start < $4
		ORDER BY start LIMIT $5`, symbol, int32(iv), from, to, limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("store: read %s: %w", table, err)
	}
	got, err := collect(rows, symbol, iv, make([]T, 0, min(limit, 64)))
	if err != nil {
		return nil, "", fmt.Errorf("store: read %s: %w", table, err)
	}
	got, next := cut(got, limit, start)
	return got, next, nil
}

// latest reads the newest row of a series from table; what names the row
// in errors.
func latest[T any](ctx context.Context, db *pgxpool.Pool, what, table, columns string, collect collector[T],
	symbol string, iv streams.Interval) (T, error) {
	var zero T
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return zero, fmt.Errorf("%w: %s %s", readmodel.ErrBadQuery, symbol, iv)
	}
	rows, err := db.Query(ctx, "SELECT "+columns+" FROM "+table+`
		WHERE symbol = $1 AND interval = $2 ORDER BY start DESC LIMIT 1`, symbol, int32(iv))
	if err != nil {
		return zero, fmt.Errorf("store: latest %s: %w", what, err)
	}
	got, err := collect(rows, symbol, iv, nil)
	if err != nil {
		return zero, fmt.Errorf("store: latest %s: %w", what, err)
	}
	if len(got) == 0 {
		return zero, fmt.Errorf("%w: no %s %s of %s", readmodel.ErrNotFound, iv, what, symbol)
	}
	return got[0], nil
}

// cut ends a page read one row long at limit, and names that row's start as
// the next page's cursor: the extra row is how a query tells a next page is
// there.
func cut[T any](rows []T, limit int, start func(T) time.Time) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	return rows[:limit], readmodel.FormatCursor(start(rows[limit]))
}

func collectCandles(rows pgx.Rows, symbol string, iv streams.Interval, out []streams.Candle) ([]streams.Candle, error) {
	defer rows.Close()
	for rows.Next() {
		c := streams.Candle{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol, Interval: iv}
		var quality string
		if err := rows.Scan(&c.Start, &c.Open, &c.High, &c.Low, &c.Close, &c.VWAP, &c.Volume, &c.Trades, &quality); err != nil {
			return nil, err
		}
		c.Start = c.Start.UTC()
		c.Quality = streams.Quality(quality)
		out = append(out, c)
	}
	return out, rows.Err()
}

// LatestCandle implements readmodel.Reader.
func (r *Reader) LatestCandle(ctx context.Context, symbol string, iv streams.Interval) (streams.Candle, error) {
	return latest(ctx, r.db, "candle", "candles", candleColumns, collectCandles, symbol, iv)
}

const predictionColumns = `start, target, horizon, model_id, close, log_return, predicted_close,
	lower_bound, upper_bound, candle_seq, window_quality, model, sigma, forecasts`

// LatestPrediction implements readmodel.Reader.
func (r *Reader) LatestPrediction(ctx context.Context, symbol string, iv streams.Interval) (streams.Prediction, error) {
	return latest(ctx, r.db, "prediction", "predictions", predictionColumns, collectPredictions, symbol, iv)
}

// Predictions implements readmodel.Reader.
func (r *Reader) Predictions(ctx context.Context, q readmodel.PredictionQuery) (readmodel.PredictionPage, error) {
	q, err := q.Normalize()
	if err != nil {
		return readmodel.PredictionPage{}, err
	}
	ps, next, err := readPage(ctx, r.db, "predictions", predictionColumns, collectPredictions,
		func(p streams.Prediction) time.Time { return p.Start }, q.Symbol, q.Interval, q.From, q.To, q.Limit)
	if err != nil {
		return readmodel.PredictionPage{}, err
	}
	return readmodel.PredictionPage{Predictions: ps, Next: next}, nil
}

func collectPredictions(rows pgx.Rows, symbol string, iv streams.Interval, out []streams.Prediction) ([]streams.Prediction, error) {
	defer rows.Close()
	for rows.Next() {
		p := streams.Prediction{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol, Interval: iv}
		var horizon int32
		var candleSeq int64
		var window, forecasts []byte
		var model *string
		var sigma *float64
		if err := rows.Scan(&p.Start, &p.Target, &horizon, &p.ModelID, &p.Close, &p.LogReturn, &p.PredictedClose,
			&p.Lower, &p.Upper, &candleSeq, &window, &model, &sigma, &forecasts); err != nil {
			return nil, err
		}
		p.Start, p.Target = p.Start.UTC(), p.Target.UTC()
		p.Horizon, p.CandleSeq = int(horizon), uint64(candleSeq)
		if window != nil {
			if err := json.Unmarshal(window, &p.Window); err != nil {
				return nil, fmt.Errorf("window of %s: %w", p.Start.Format(time.RFC3339), err)
			}
		}
		if model != nil {
			p.Model = *model
		}
		if sigma != nil {
			p.Sigma = *sigma
		}
		if forecasts != nil {
			if err := json.Unmarshal(forecasts, &p.Forecasts); err != nil {
				return nil, fmt.Errorf("forecasts of %s: %w", p.Start.Format(time.RFC3339), err)
			}
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// ModelEvaluations returns the models trained for a series with their
// metrics, newest first: the SQL side of /prediction/model-evaluation.
func (r *Reader) ModelEvaluations(ctx context.Context, symbol string, iv streams.Interval) ([]streams.ModelRecord, error) {
	rows, err := r.db.Query(ctx, `SELECT `+modelColumns+`
		FROM model_evaluations m WHERE symbol = $1 AND interval = $2 ORDER BY created_at DESC NULLS LAST, model_id`, symbol, int32(iv))
	if err != nil {
		return nil, fmt.Errorf("store: model evaluations: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (streams.ModelRecord, error) {
		return scanModel(row, symbol, iv)
	})
	if err != nil {
		return nil, fmt.Errorf("store: model evaluations: %w", err)
	}
	return out, nil
}

// Champion implements readmodel.Reader: the series' champion as projected
// from the registry bucket.
func (r *Reader) Champion(ctx context.Context, symbol string, iv streams.Interval) (streams.ModelRecord, error) {
	if err := streams.ValidateSymbol(symbol); err != nil || !iv.Valid() {
		return streams.ModelRecord{}, fmt.Errorf("%w: %s %s", readmodel.ErrBadQuery, symbol, iv)
	}
	row := r.db.QueryRow(ctx, `SELECT `+modelColumns+`
		FROM champions c JOIN model_evaluations m ON m.model_id = c.model_id
		WHERE c.symbol = $1 AND c.interval = $2`, symbol, int32(iv))
	m, err := scanModel(row, symbol, iv)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, readmodel.ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("store: champion: %w", err)
	}
	return m, nil
}

const modelColumns = `m.model_id, m.horizon, m.features, m.coefficients, m.residual_std, m.train_from, m.train_to,
		m.test_from, m.test_to, m.metrics, m.champion, m.decision, m.artifact, m.created_at`

func scanModel(row pgx.Row, symbol string, iv streams.Interval) (streams.ModelRecord, error) {
	m := streams.ModelRecord{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol, Interval: iv}
	var horizon int32
	var features, coefs, metrics []byte
	var trainFrom, trainTo, testFrom, testTo, created *time.Time
	if err := row.Scan(&m.ID, &horizon, &features, &coefs, &m.ResidualStd, &trainFrom, &trainTo, &testFrom, &testTo,
		&metrics, &m.Champion, &m.Decision, &m.Artifact, &created); err != nil {
		return m, err
	}
	m.Horizon = int(horizon)
	for _, f := range []struct {
		src []byte
		dst any
	}{{features, &m.Features}, {coefs, &m.Coefficients}, {metrics, &m.Metrics}} {
		if err := json.Unmarshal(f.src, f.dst); err != nil {
			return m, fmt.Errorf("store: model %s: %w", m.ID, err)
		}
	}
	m.TrainFrom, m.TrainTo, m.TestFrom, m.TestTo, m.CreatedAt = utc(trainFrom), utc(trainTo), utc(testFrom), utc(testTo), utc(created)
	return m, nil
}

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// Alerts implements readmodel.Reader.
func (r *Reader) Alerts(ctx context.Context, q readmodel.AlertQuery) ([]streams.Alert, error) {
	if err := streams.ValidateSymbol(q.Symbol); err != nil {
		return nil, fmt.Errorf("%w: %w", readmodel.ErrBadQuery, err)
	}
	symbol, from, to, limit := q.Symbol, q.From, q.To, q.Limit
	if from.IsZero() {
		from = beginning
	}
	if to.IsZero() {
		to = end
	}
	rows, err := r.db.Query(ctx, `SELECT id, rule_id, interval, kind, message, value, threshold, at FROM alerts
		WHERE symbol = $1 AND at >= $2 AND at < $3 ORDER BY at, id LIMIT $4`, symbol, from, to, readmodel.PageLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("store: alerts: %w", err)
	}
	defer rows.Close()
	out := []streams.Alert{}
	for rows.Next() {
		a := streams.Alert{Schema: streams.Schema{V: streams.SchemaVersion}, Symbol: symbol}
		var iv int32
		if err := rows.Scan(&a.ID, &a.RuleID, &iv, &a.Kind, &a.Message, &a.Value, &a.Threshold, &a.At); err != nil {
			return nil, fmt.Errorf("store: alerts: %w", err)
		}
		a.Interval, a.At = streams.Interval(iv), a.At.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: alerts: %w", err)
	}
	return out, nil
}
