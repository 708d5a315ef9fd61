package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"cryptostream/streams"
)

// projection maps one stream's events to rows of one table. Each row's last
// column is the stream sequence that guards against an older redelivery.
type projection struct {
	stream   string
	consumer string
	table    string
	columns  []string
	keys     []string
	// row decodes one message; an error is permanent.
	row func(data []byte, seq uint64) (key string, row []any, err error)
}

func candleRow(data []byte, seq uint64) (string, []any, error) {
	c, err := streams.Decode[streams.Candle](data)
	if err != nil {
		return "", nil, err
	}
	return seriesKey(c.Symbol, c.Interval, c.Start), []any{
		c.Symbol, int32(c.Interval), c.Start.UTC(), c.Open, c.High, c.Low, c.Close, c.VWAP, c.Volume,
		c.Trades, string(c.Quality), int64(seq),
	}, nil
}

func predictionRow(data []byte, seq uint64) (string, []any, error) {
	p, err := streams.Decode[streams.Prediction](data)
	if err != nil {
		return "", nil, err
	}
	var window []byte
	if p.Window != nil {
		if window, err = json.Marshal(p.Window); err != nil {
			return "", nil, streams.Permanent(fmt.Errorf("prediction window: %w", err))
		}
	}
	var forecasts []byte
	if p.Forecasts != nil {
		if forecasts, err = json.Marshal(p.Forecasts); err != nil {
			return "", nil, streams.Permanent(fmt.Errorf("prediction forecasts: %w", err))
		}
	}
	return seriesKey(p.Symbol, p.Interval, p.Start), []any{
		p.Symbol, int32(p.Interval), p.Start.UTC(), p.Target.UTC(), int32(p.Horizon), p.ModelID,
		p.Close, p.LogReturn, p.PredictedClose, p.Lower, p.Upper, int64(p.CandleSeq), window,
		p.Model, p.Sigma, forecasts, int64(seq),
	}, nil
}

func alertRow(data []byte, seq uint64) (string, []any, error) {
	a, err := streams.Decode[streams.Alert](data)
	if err != nil {
		return "", nil, err
	}
	return a.ID, []any{
		a.ID, a.RuleID, a.Symbol, int32(a.Interval), a.Kind, a.Message, a.Value, a.Threshold, a.At.UTC(), int64(seq),
	}, nil
}

func auditRow(data []byte, seq uint64) (string, []any, error) {
	a, err := streams.Decode[streams.AuditEvent](data)
	if err != nil {
		return "", nil, err
	}
	return a.ID, []any{
		a.ID, a.Action, a.Actor, a.Target, a.Outcome, a.Remote, a.Detail, a.At.UTC(), int64(seq),
	}, nil
}

func seriesKey(symbol string, iv streams.Interval, start time.Time) string {
	return fmt.Sprintf("%s|%d|%d", symbol, iv, start.UnixNano())
}

// projections are the streams the sink reads, one durable consumer each.
var projections = []projection{
	{
		stream: streams.StreamMarket, consumer: streams.ConsumerSinkMarket, table: "candles",
		columns: []string{"symbol", "interval", "start", "open", "high", "low", "close", "vwap", "volume", "trades", "quality", "stream_seq"},
		keys:    []string{"symbol", "interval", "start"},
		row:     candleRow,
	},
	{
		stream: streams.StreamPredictions, consumer: streams.ConsumerSinkPredictions, table: "predictions",
		columns: []string{"symbol", "interval", "start", "target", "horizon", "model_id", "close", "log_return",
			"predicted_close", "lower_bound", "upper_bound", "candle_seq", "window_quality", "model", "sigma", "forecasts", "stream_seq"},
		keys: []string{"symbol", "interval", "start"},
		row:  predictionRow,
	},
	{
		stream: streams.StreamAlerts, consumer: streams.ConsumerSinkAlerts, table: "alerts",
		columns: []string{"id", "rule_id", "symbol", "interval", "kind", "message", "value", "threshold", "at", "stream_seq"},
		keys:    []string{"id"},
		row:     alertRow,
	},
	{
		stream: streams.StreamAudit, consumer: streams.ConsumerSinkAudit, table: "audit_events",
		columns: []string{"id", "action", "actor", "target", "outcome", "remote", "detail", "at", "stream_seq"},
		keys:    []string{"id"},
		row:     auditRow,
	},
}

// upsertSQL moves the staged rows into the table: a row replaces the stored
// one only if it comes from the same or a later stream sequence, so a replay
// or an old redelivery never undoes a newer revision.
func (p projection) upsertSQL(staging string) string {
	var set []string
	for _, c := range p.columns {
		if !contains(p.keys, c) {
			set = append(set, fmt.Sprintf("%s = excluded.%s", c, c))
		}
	}
	cols := strings.Join(p.columns, ", ")
	return fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM %s ON CONFLICT (%s) DO UPDATE SET %s WHERE %s.stream_seq <= excluded.stream_seq",
		p.table, cols, cols, staging, strings.Join(p.keys, ", "), strings.Join(set, ", "), p.table)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// nullTime stores a zero time as NULL rather than year 1.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC()
}
