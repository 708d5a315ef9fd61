// Package krakenrest is a client for the few public Kraken REST endpoints the
// ingester needs: OHLC history to heal gaps, AssetPairs to learn which pairs
// exist and how each is named, and Ticker for a last price.
//
// Kraken answers errors as HTTP 200 with a non-empty "error" array (a
// throttled call included), so every response's envelope is checked before
// its HTTP status is trusted.
package krakenrest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"cryptostream/streams"
)

// DefaultBaseURL is Kraken's public REST API.
const DefaultBaseURL = "https://api.kraken.com"

// MaxOHLCRows is how many rows Kraken keeps per pair and interval: older
// history cannot be fetched with since.
const MaxOHLCRows = 720

// maxBody bounds what is read from one response; the largest real answer
// (AssetPairs for every pair) is well under it.
const maxBody = 16 << 20

// ErrRateLimited is wrapped by an APIError that reports throttling, so a
// caller can back off longer than after another failure.
var ErrRateLimited = errors.New("krakenrest: rate limited")

// APIError is a non-empty error array in Kraken's envelope.
type APIError struct {
	Endpoint string
	Errors   []string
}

func (e *APIError) Error() string {
	return "krakenrest: " + e.Endpoint + ": " + strings.Join(e.Errors, "; ")
}

// Is makes errors.Is(err, ErrRateLimited) true for a throttling error.
func (e *APIError) Is(target error) bool {
	if target != ErrRateLimited {
		return false
	}
	for _, s := range e.Errors {
		if strings.Contains(s, "Too many requests") || strings.Contains(s, "Rate limit") {
			return true
		}
	}
	return false
}

// Client calls Kraken's public REST API. The zero value uses DefaultBaseURL
// and a client with a 15 s timeout.
type Client struct {
	BaseURL string
	HTTP    *http.Client
}

var defaultHTTP = &http.Client{Timeout: 15 * time.Second}

func (c *Client) get(ctx context.Context, endpoint string, q url.Values) (map[string]json.RawMessage, error) {
	base := c.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	u := strings.TrimRight(base, "/") + "/0/public/" + endpoint
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("krakenrest: %s: %w", endpoint, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("krakenrest: %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("krakenrest: %s: read body: %w", endpoint, err)
	}
	var env struct {
		Error  []string                   `json:"error"`
		Result map[string]json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("krakenrest: %s: HTTP %d", endpoint, resp.StatusCode)
		}
		return nil, fmt.Errorf("krakenrest: %s: decode envelope: %w", endpoint, err)
	}
	if len(env.Error) > 0 {
		return nil, &APIError{Endpoint: endpoint, Errors: env.Error}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("krakenrest: %s: HTTP %d", endpoint, resp.StatusCode)
	}
	return env.Result, nil
}

// Pair is one tradable pair as AssetPairs describes it.
type Pair struct {
	Key     string // REST result key, e.g. XXBTZUSD; OHLC accepts it as pair
	Altname string // e.g. XBTUSD
	WSName  string // WebSocket v1 name, e.g. XBT/USD
	Base    string // internal asset code, e.g. XXBT
	Quote   string // internal asset code, e.g. ZUSD
	Status  string // online, cancel_only, ...
	Symbol  string // WebSocket v2 symbol, e.g. BTC/USD
}

// AssetPairs lists every pair that has a WebSocket name, sorted by Symbol.
// Pairs without one (such as dark-pool pairs) cannot be streamed and are left
// out.
func (c *Client) AssetPairs(ctx context.Context) ([]Pair, error) {
	res, err := c.get(ctx, "AssetPairs", nil)
	if err != nil {
		return nil, err
	}
	pairs := make([]Pair, 0, len(res))
	for key, raw := range res {
		var p struct {
			Altname string `json:"altname"`
			WSName  string `json:"wsname"`
			Base    string `json:"base"`
			Quote   string `json:"quote"`
			Status  string `json:"status"`
		}
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("krakenrest: AssetPairs: pair %s: %w", key, err)
		}
		if p.WSName == "" {
			continue
		}
		sym, err := streams.NormalizeSymbol(p.WSName)
		if err != nil {
			continue
		}
		pairs = append(pairs, Pair{Key: key, Altname: p.Altname, WSName: p.WSName, Base: p.Base, Quote: p.Quote, Status: p.Status, Symbol: sym})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].Symbol < pairs[j].Symbol })
	return pairs, nil
}

// Row is one OHLC row. Start is the candle's open time.
type Row struct {
	Start  time.Time
	Open   float64
	High   float64
	Low    float64
	Close  float64
	VWAP   float64
	Volume float64
	Trades int64
	// InProgress marks the still-open candle: Kraken always appends it as
	// the last row, and it must never be stored as final.
	InProgress bool
}

// Filler reports a row Kraken synthesised for an interval without trades.
func (r Row) Filler() bool { return r.Trades == 0 && r.Volume == 0 }

// OHLCResult is one OHLC answer.
type OHLCResult struct {
	PairKey string
	Rows    []Row // ascending; the last one is InProgress
	// Last is the open time of the newest committed candle, to be passed
	// back as since.
	Last time.Time
}

// Committed returns the rows that are final.
func (r OHLCResult) Committed() []Row {
	out := make([]Row, 0, len(r.Rows))
	for _, row := range r.Rows {
		if !row.InProgress {
			out = append(out, row)
		}
	}
	return out
}

// OHLC fetches up to 720 candles of pair (a REST name such as XXBTZUSD or
// XBTUSD) at interval, newer than since (exclusive; zero for all).
func (c *Client) OHLC(ctx context.Context, pair string, interval streams.Interval, since time.Time) (OHLCResult, error) {
	q := url.Values{"pair": {pair}, "interval": {strconv.Itoa(interval.Minutes())}}
	if !since.IsZero() {
		q.Set("since", strconv.FormatInt(since.Unix(), 10))
	}
	res, err := c.get(ctx, "OHLC", q)
	if err != nil {
		return OHLCResult{}, err
	}
	return ParseOHLCResult(res)
}

// ParseOHLCResult decodes the result object of an OHLC answer: one pair key
// (whatever its spelling) holding the rows, and last as a number or a string.
func ParseOHLCResult(res map[string]json.RawMessage) (OHLCResult, error) {
	var out OHLCResult
	for k, raw := range res {
		if k == "last" {
			t, err := parseLast(raw)
			if err != nil {
				return OHLCResult{}, err
			}
			out.Last = t
			continue
		}
		if out.PairKey != "" {
			return OHLCResult{}, fmt.Errorf("krakenrest: OHLC: two pair keys %q and %q", out.PairKey, k)
		}
		out.PairKey = k
		var rows [][]json.RawMessage
		if err := json.Unmarshal(raw, &rows); err != nil {
			return OHLCResult{}, fmt.Errorf("krakenrest: OHLC: rows of %s: %w", k, err)
		}
		out.Rows = make([]Row, 0, len(rows))
		for i, r := range rows {
			row, err := parseRow(r)
			if err != nil {
				return OHLCResult{}, fmt.Errorf("krakenrest: OHLC: %s row %d: %w", k, i, err)
			}
			out.Rows = append(out.Rows, row)
		}
	}
	if out.PairKey == "" {
		return OHLCResult{}, errors.New("krakenrest: OHLC: no pair key in result")
	}
	sort.SliceStable(out.Rows, func(i, j int) bool { return out.Rows[i].Start.Before(out.Rows[j].Start) })
	for i := range out.Rows {
		// The last row is always the running candle; a row newer than last
		// is too, whichever Kraken sends.
		if i == len(out.Rows)-1 || (!out.Last.IsZero() && out.Rows[i].Start.After(out.Last)) {
			out.Rows[i].InProgress = true
		}
	}
	return out, nil
}

func parseLast(raw json.RawMessage) (time.Time, error) {
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("krakenrest: OHLC: last %s: %w", raw, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func parseRow(r []json.RawMessage) (Row, error) {
	if len(r) != 8 {
		return Row{}, fmt.Errorf("%d fields, want 8", len(r))
	}
	var row Row
	ts, err := number(r[0])
	if err != nil {
		return Row{}, fmt.Errorf("time: %w", err)
	}
	row.Start = time.Unix(int64(ts), 0).UTC()
	for i, p := range []*float64{&row.Open, &row.High, &row.Low, &row.Close, &row.VWAP, &row.Volume} {
		if *p, err = number(r[i+1]); err != nil {
			return Row{}, fmt.Errorf("field %d: %w", i+1, err)
		}
	}
	n, err := number(r[7])
	if err != nil {
		return Row{}, fmt.Errorf("count: %w", err)
	}
	row.Trades = int64(n)
	return row, nil
}

// number accepts a JSON number or a string holding one, as Kraken mixes both.
func number(raw json.RawMessage) (float64, error) {
	s := strings.Trim(string(raw), `"`)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	return v, nil
}

// Ticker is the part of a Ticker answer the system uses.
type Ticker struct {
	PairKey string
	Last    float64
	Bid     float64
	Ask     float64
	Open    float64 // today's open (00:00 UTC)
	Volume  float64 // last 24 h
}

// Ticker fetches the ticker of one pair.
func (c *Client) Ticker(ctx context.Context, pair string) (Ticker, error) {
	res, err := c.get(ctx, "Ticker", url.Values{"pair": {pair}})
	if err != nil {
		return Ticker{}, err
	}
	for k, raw := range res {
		var t struct {
			A []json.RawMessage `json:"a"`
			B []json.RawMessage `json:"b"`
			C []json.RawMessage `json:"c"`
			V []json.RawMessage `json:"v"`
			O json.RawMessage   `json:"o"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return Ticker{}, fmt.Errorf("krakenrest: Ticker: %s: %w", k, err)
		}
		if len(t.A) == 0 || len(t.B) == 0 || len(t.C) == 0 || len(t.V) < 2 {
			return Ticker{}, fmt.Errorf("krakenrest: Ticker: %s: missing fields", k)
		}
		out := Ticker{PairKey: k}
		for _, f := range []struct {
			dst *float64
			raw json.RawMessage
		}{{&out.Ask, t.A[0]}, {&out.Bid, t.B[0]}, {&out.Last, t.C[0]}, {&out.Volume, t.V[1]}, {&out.Open, t.O}} {
			if f.raw == nil {
				continue
			}
			if *f.dst, err = number(f.raw); err != nil {
				return Ticker{}, fmt.Errorf("krakenrest: Ticker: %s: %w", k, err)
			}
		}
		return out, nil
	}
	return Ticker{}, errors.New("krakenrest: Ticker: empty result")
}
