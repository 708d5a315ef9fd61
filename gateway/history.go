package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"cryptostream/readmodel"
	"cryptostream/streams"
)

// defaultAsset is what the proof of concept answered for when no asset was
// given.
const defaultAsset = "BTC/USD"

type candleView struct {
	Time    time.Time       `json:"time"`
	Open    float64         `json:"open"`
	High    float64         `json:"high"`
	Low     float64         `json:"low"`
	Close   float64         `json:"close"`
	Volume  float64         `json:"volume"`
	Trades  int64           `json:"trades"`
	Quality streams.Quality `json:"quality"`
}

func viewCandle(c streams.Candle) candleView {
	return candleView{c.Start.UTC(), c.Open, c.High, c.Low, c.Close, c.Volume, c.Trades, c.Quality}
}

// parseTime accepts RFC3339 or unix seconds.
func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > 1<<40 {
			return time.Time{}, errorf(http.StatusBadRequest, "invalid_"+name, "%s out of range", name)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errorf(http.StatusBadRequest, "invalid_"+name, "%s must be RFC3339 or unix seconds", name)
	}
	return t.UTC(), nil
}

// rangeParams reads the from, to and limit a history query shares.
func rangeParams(q url.Values) (from, to time.Time, limit int, err error) {
	if from, err = parseTime("from", q.Get("from")); err != nil {
		return
	}
	if to, err = parseTime("to", q.Get("to")); err != nil {
		return
	}
	if s := q.Get("limit"); s != "" {
		// Above the maximum is refused rather than clamped: a client asking
		// for 5000 and silently getting 1000 would take a short page for the
		// end of the data.
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > readmodel.MaxLimit {
			err = errorf(http.StatusBadRequest, "invalid_limit", "limit must be a positive integer (at most %d)", readmodel.MaxLimit)
		}
	}
	return
}

func intervalParam(s string) (streams.Interval, error) {
	if s == "" {
		return streams.Interval1m, nil
	}
	iv, err := streams.ParseInterval(s)
	if err != nil {
		return 0, errorf(http.StatusBadRequest, "invalid_interval", "interval must be one of 1m 5m 15m 30m 1h 4h 1d 1w 15d")
	}
	return iv, nil
}

// tracked reports whether an asset is tracked, from the watched copy of
// the assets bucket.
func (g *Gateway) tracked(r *http.Request, sym string) (bool, error) {
	ctx, cancel := g.io(r)
	defer cancel()
	return g.assets.Tracked(ctx, sym)
}

func (g *Gateway) assetHistory(w http.ResponseWriter, r *http.Request) {
	sym, err := assetParam(r.PathValue("asset"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	iv, err := intervalParam(q.Get("interval"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	from, to, limit, err := rangeParams(q)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	page, err := g.d.Reader.Candles(ctx, readmodel.CandleQuery{Symbol: sym, Interval: iv, From: from, To: to, Limit: limit, After: q.Get("cursor")})
	if g.pageFailed(w, r, sym, len(page.Candles), err) {
		return
	}
	out := make([]candleView, len(page.Candles))
	for i, c := range page.Candles {
		out[i] = viewCandle(c)
	}
	writeJSON(w, http.StatusOK, map[string]any{"asset": sym, "interval": iv.String(), "candles": out, "next": cursorView(page.Next)})
}

// cursorView is a page's next as the API spells it: null on the last page.
func cursorView(next string) *string {
	if next == "" {
		return nil
	}
	return &next
}

// pageFailed answers a history page's read error, or the 404 of an empty
// page of an asset that is not tracked (empty is an answer for a tracked
// one), and reports whether it answered.
func (g *Gateway) pageFailed(w http.ResponseWriter, r *http.Request, sym string, n int, err error) bool {
	if errors.Is(err, readmodel.ErrBadQuery) {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_query", "%s", err.Error()))
		return true
	}
	if err != nil && !errors.Is(err, readmodel.ErrNotFound) {
		g.fail(w, r, err)
		return true
	}
	if n > 0 {
		return false
	}
	ok, err := g.tracked(r, sym)
	if err != nil {
		g.fail(w, r, err)
		return true
	}
	if !ok {
		g.fail(w, r, errorf(http.StatusNotFound, "unknown_asset", "%s is not tracked and has no history", sym))
		return true
	}
	return false
}

func (g *Gateway) assetLatest(w http.ResponseWriter, r *http.Request) {
	sym, err := assetParam(r.PathValue("asset"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	iv, err := intervalParam(r.URL.Query().Get("interval"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	c, err := newest(g, r, sym, iv, latestAnswers.CachedCandle, readmodel.Reader.LatestCandle)
	if errors.Is(err, readmodel.ErrNotFound) {
		g.fail(w, r, errorf(http.StatusNotFound, "unknown_asset", "no %s candle for %s", iv, sym))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	writeBody(w, http.StatusOK, g.latestBodies.get(seriesKey{sym, iv}, viewCandle(c)))
}

// newest answers the newest value of a series from memory when the reader
// holds the newest answers (readmodel.Latest), so that the common answer
// sets up no I/O deadline (found false is ErrNotFound), and otherwise from
// read under the I/O deadline. cached and read are method expressions
// (latestAnswers.CachedCandle, readmodel.Reader.LatestCandle), which the
// candle and the prediction answers share.
func newest[T any](g *Gateway, r *http.Request, sym string, iv streams.Interval,
	cached func(latestAnswers, string, streams.Interval) (v T, found, ok bool),
	read func(readmodel.Reader, context.Context, string, streams.Interval) (T, error)) (T, error) {
	if g.latest != nil {
		if v, found, ok := cached(g.latest, sym, iv); ok {
			if !found {
				return v, readmodel.ErrNotFound
			}
			return v, nil
		}
	}
	ctx, cancel := g.io(r)
	defer cancel()
	return read(g.d.Reader, ctx, sym, iv)
}

// latestAnswers is what a reader holding the newest candle and prediction
// of every series in memory (readmodel.Latest) offers beside Reader.
type latestAnswers interface {
	CachedCandle(symbol string, iv streams.Interval) (c streams.Candle, found, ok bool)
	CachedPrediction(symbol string, iv streams.Interval) (p streams.Prediction, found, ok bool)
}

type seriesKey struct {
	symbol   string
	interval streams.Interval
}

// latestBodies keeps the encoded asset_latest answer of each series with
// the candle it encodes: the answer changes once a minute and is asked for
// thousands of times a second, and encoding it was the handler's largest
// cost. An answer is reused only for an equal candle, so a revision (same
// start, new values) is encoded afresh. It holds one entry per series that
// was found, which the streams bound.
type latestBodies struct {
	mu sync.RWMutex
	m  map[seriesKey]encodedCandle
}

type encodedCandle struct {
	view candleView
	body []byte
}

func (lb *latestBodies) get(k seriesKey, v candleView) []byte {
	lb.mu.RLock()
	e, ok := lb.m[k]
	lb.mu.RUnlock()
	if ok && e.view == v {
		return e.body
	}
	body, err := json.Marshal(map[string]any{"asset": k.symbol, "interval": k.interval.String(), "candle": v})
	if err != nil {
		// A candle of floats and a time: cannot fail but for NaN, which
		// validation refuses before it is stored.
		panic(fmt.Sprintf("gateway: encode latest candle: %v", err))
	}
	// As json.Encoder writes it, so that the bytes do not change.
	body = append(body, '\n')
	lb.mu.Lock()
	if lb.m == nil {
		lb.m = map[seriesKey]encodedCandle{}
	}
	lb.m[k] = encodedCandle{v, body}
	lb.mu.Unlock()
	return body
}

type alertView struct {
	ID        string    `json:"id"`
	RuleID    string    `json:"rule_id"`
	Interval  string    `json:"interval"`
	Kind      string    `json:"kind"`
	Message   string    `json:"message"`
	Value     float64   `json:"value"`
	Threshold float64   `json:"threshold"`
	At        time.Time `json:"at"`
}

// alertHistory answers the alerts fired for an asset, oldest first, from
// the read model (SQL when configured, the ALERTS stream otherwise).
func (g *Gateway) alertHistory(w http.ResponseWriter, r *http.Request) {
	sym, err := assetParam(r.PathValue("asset"))
	if err != nil {
		g.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	from, to, limit, err := rangeParams(q)
	if err != nil {
		g.fail(w, r, err)
		return
	}
	ctx, cancel := g.io(r)
	defer cancel()
	alerts, err := g.d.Reader.Alerts(ctx, readmodel.AlertQuery{Symbol: sym, From: from, To: to, Limit: limit})
	if errors.Is(err, readmodel.ErrBadQuery) {
		g.fail(w, r, errorf(http.StatusBadRequest, "invalid_query", "%s", err.Error()))
		return
	}
	if err != nil {
		g.fail(w, r, err)
		return
	}
	out := make([]alertView, len(alerts))
	for i, a := range alerts {
		out[i] = alertView{a.ID, a.RuleID, a.Interval.String(), a.Kind, a.Message, a.Value, a.Threshold, a.At.UTC()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"asset": sym, "alerts": out})
}
