// Package readmodel owns the query side the gateway serves history from: the
// Reader interface, its JetStream implementation (used when no database is
// configured) and the contract suite (readmodeltest) that every
// implementation, JetStream and PostgreSQL alike, must pass with identical
// answers.
package readmodel

import (
	"context"
	"errors"
	"time"

	"cryptostream/streams"
)

// ErrNotFound reports that nothing matches: an asset with no candles yet, a
// series with no prediction.
var ErrNotFound = errors.New("readmodel: not found")

// CandleQuery selects candles of one series in [From, To), ascending.
type CandleQuery struct {
	Symbol   string
	Interval streams.Interval
	From     time.Time // inclusive; zero means from the first candle
	To       time.Time // exclusive; zero means up to the newest
	Limit    int       // page size; the reader caps it
	// After is the cursor of the previous page (its Next), empty at first.
	After string
}

// CandlePage is one page of candles; Next is empty on the last page.
type CandlePage struct {
	Candles []streams.Candle
	Next    string
}

// Reader answers the gateway's history questions.
type Reader interface {
	Candles(ctx context.Context, q CandleQuery) (CandlePage, error)
	LatestCandle(ctx context.Context, symbol string, iv streams.Interval) (streams.Candle, error)
	LatestPrediction(ctx context.Context, symbol string, iv streams.Interval) (streams.Prediction, error)
	// Predictions is one page of the series' past predictions, by the
	// start of the candle each was made on, ascending.
	Predictions(ctx context.Context, q PredictionQuery) (PredictionPage, error)
	// Champion is the series' champion model with its train, test and live
	// figures.
	Champion(ctx context.Context, symbol string, iv streams.Interval) (streams.ModelRecord, error)
	// Alerts is the alert history of one symbol, oldest first.
	Alerts(ctx context.Context, q AlertQuery) ([]streams.Alert, error)
}

// AlertQuery selects the alerts of one symbol fired in [From, To).
type AlertQuery struct {
	Symbol string
	From   time.Time // inclusive; zero is open
	To     time.Time // exclusive; zero is open
	Limit  int       // capped like a candle page
}

// PredictionQuery selects the predictions of one series made on candles
// starting in [From, To), ascending, paged like candles (same limits, same
// cursor: the unix seconds of the next page's first candle start).
type PredictionQuery struct {
	Symbol   string
	Interval streams.Interval
	From     time.Time // inclusive; zero means from the first
	To       time.Time // exclusive; zero means up to the newest
	Limit    int
	After    string
}

// PredictionPage is one page of predictions; Next is empty on the last.
type PredictionPage struct {
	Predictions []streams.Prediction
	Next        string
}

// Normalize validates q and folds its cursor into From, as
// CandleQuery.Normalize does.
func (q PredictionQuery) Normalize() (PredictionQuery, error) {
	c, err := CandleQuery{Symbol: q.Symbol, Interval: q.Interval, From: q.From, To: q.To, Limit: q.Limit, After: q.After}.Normalize()
	if err != nil {
		return q, err
	}
	return PredictionQuery{Symbol: c.Symbol, Interval: c.Interval, From: c.From, To: c.To, Limit: c.Limit}, nil
}
