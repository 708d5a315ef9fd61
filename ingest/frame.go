package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"cryptostream/streams"
)

// Kind says what a WebSocket v2 frame is.
type Kind int

// The frame kinds the ingester acts on; everything else is KindOther.
const (
	KindOther Kind = iota
	KindStatus
	KindHeartbeat
	KindPong
	KindSubscribe   // a subscribe ack, success or failure
	KindUnsubscribe // an unsubscribe ack
	KindOHLC        // snapshot or update
	KindError       // a response to a request that failed, other than subscribe
)

// Frame is one decoded server frame. Only the fields of its kind are set.
type Frame struct {
	Kind Kind

	System string // status: online, maintenance, cancel_only, post_only

	// Acks and other method responses.
	Method   string
	Success  bool
	Error    string
	Symbol   string // the acked symbol; on failure Kraken puts it top level
	Interval int
	ReqID    int64

	// OHLC data.
	Snapshot bool
	Sent     time.Time // message-level timestamp: when the server sent it
	Candles  []streams.Candle
	// Rejected holds one error per candle that failed validation; the good
	// candles of the same frame are still in Candles.
	Rejected []error
}

// RejectReason is the bounded label of a rejected frame or candle.
type RejectReason string

// The reasons a frame or candle is rejected.
const (
	ReasonMalformed     RejectReason = "malformed"
	ReasonInvalidCandle RejectReason = "invalid_candle"
	ReasonUnknownSymbol RejectReason = "unknown_symbol"
	ReasonSubscribe     RejectReason = "subscribe_failed"
	ReasonStale         RejectReason = "stale"
	ReasonRateLimited   RejectReason = "rate_limited"
	ReasonFuture        RejectReason = "future_candle"
)

// RejectError carries the reason a frame or candle was refused.
type RejectError struct {
	Reason RejectReason
	Err    error
}

func (e *RejectError) Error() string { return "ingest: " + string(e.Reason) + ": " + e.Err.Error() }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(reason RejectReason, format string, args ...any) error {
	return &RejectError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the label of err, malformed for anything unexpected.
func ReasonOf(err error) RejectReason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ReasonMalformed
}

type wireCandle struct {
	Symbol        string   `json:"symbol"`
	Open          *float64 `json:"open"`
	High          *float64 `json:"high"`
	Low           *float64 `json:"low"`
	Close         *float64 `json:"close"`
	VWAP          *float64 `json:"vwap"`
	Volume        *float64 `json:"volume"`
	Trades        *float64 `json:"trades"`
	IntervalBegin string   `json:"interval_begin"`
	Interval      int      `json:"interval"`
}

type wireFrame struct {
	Channel   string          `json:"channel"`
	Type      string          `json:"type"`
	Timestamp string          `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
	Method    string          `json:"method"`
	Success   *bool           `json:"success"`
	Error     string          `json:"error"`
	Symbol    string          `json:"symbol"`
	ReqID     *json.Number    `json:"req_id"`
	Result    *struct {
		Channel  string `json:"channel"`
		Symbol   string `json:"symbol"`
		Interval int    `json:"interval"`
	} `json:"result"`
}

// ParseFrame decodes one Kraken WebSocket v2 frame. It never panics; a frame
// that cannot be understood is a *RejectError with ReasonMalformed. The
// candle timestamp Kraken still sends is ignored: it is the interval end,
// deprecated, and interval_begin is the start.
func ParseFrame(b []byte) (Frame, error) {
	var w wireFrame
	if err := json.Unmarshal(b, &w); err != nil {
		return Frame{}, reject(ReasonMalformed, "decode frame: %v", err)
	}
	var f Frame
	if w.ReqID != nil {
		n, err := w.ReqID.Int64()
		if err != nil {
			return Frame{}, reject(ReasonMalformed, "req_id %s: %v", *w.ReqID, err)
		}
		f.ReqID = n
	}
	switch {
	case w.Method != "":
		return parseResponse(w, f)
	case w.Channel == "heartbeat":
		f.Kind = KindHeartbeat
		return f, nil
	case w.Channel == "status":
		var data []struct {
			System string `json:"system"`
		}
		if err := json.Unmarshal(w.Data, &data); err != nil || len(data) != 1 || data[0].System == "" {
			return Frame{}, reject(ReasonMalformed, "status frame without one system")
		}
		f.Kind, f.System = KindStatus, data[0].System
		return f, nil
	case w.Channel == "ohlc":
		return parseOHLC(w, f)
	case w.Channel != "":
		f.Kind = KindOther
		return f, nil
	}
	return Frame{}, reject(ReasonMalformed, "frame has neither method nor channel")
}

func parseResponse(w wireFrame, f Frame) (Frame, error) {
	f.Method, f.Error = w.Method, w.Error
	if w.Method == "pong" {
		f.Kind, f.Success = KindPong, true
		return f, nil
	}
	if w.Success == nil {
		return Frame{}, reject(ReasonMalformed, "%s response without success", w.Method)
	}
	f.Success = *w.Success
	switch w.Method {
	case "subscribe":
		f.Kind = KindSubscribe
	case "unsubscribe":
		f.Kind = KindUnsubscribe
	default:
		f.Kind = KindError
		if f.Success {
			f.Kind = KindOther
		}
		return f, nil
	}
	if w.Result != nil {
		if w.Result.Channel != "" && w.Result.Channel != "ohlc" {
			f.Kind = KindOther
			return f, nil
		}
		f.Symbol, f.Interval = w.Result.Symbol, w.Result.Interval
	}
	if f.Symbol == "" {
		f.Symbol = w.Symbol
	}
	if f.Success && f.Symbol == "" {
		return Frame{}, reject(ReasonMalformed, "%s ack without symbol", w.Method)
	}
	return f, nil
}

func parseOHLC(w wireFrame, f Frame) (Frame, error) {
	f.Kind = KindOHLC
	switch w.Type {
	case "snapshot":
		f.Snapshot = true
	case "update":
	default:
		return Frame{}, reject(ReasonMalformed, "ohlc type %q", w.Type)
	}
	if w.Timestamp != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Timestamp)
		if err != nil {
			return Frame{}, reject(ReasonMalformed, "ohlc timestamp %q", w.Timestamp)
		}
		f.Sent = t.UTC()
	}
	// One pass for the usual frame; candle by candle only when one of them
	// does not decode, so that the good ones of the frame are kept.
	var whole []wireCandle
	if err := json.Unmarshal(w.Data, &whole); err == nil {
		for i, wc := range whole {
			c, err := candleFrom(wc)
			if err != nil {
				f.Rejected = append(f.Rejected, fmt.Errorf("candle %d: %w", i, err))
				continue
			}
			f.Candles = append(f.Candles, c)
		}
		return f, nil
	}
	var data []json.RawMessage
	if err := json.Unmarshal(w.Data, &data); err != nil {
		return Frame{}, reject(ReasonMalformed, "ohlc data is not an array: %v", err)
	}
	for i, raw := range data {
		c, err := parseCandle(raw)
		if err != nil {
			f.Rejected = append(f.Rejected, fmt.Errorf("candle %d: %w", i, err))
			continue
		}
		f.Candles = append(f.Candles, c)
	}
	return f, nil
}

func parseCandle(raw json.RawMessage) (streams.Candle, error) {
	var wc wireCandle
	if err := json.Unmarshal(raw, &wc); err != nil {
		return streams.Candle{}, reject(ReasonMalformed, "decode candle: %v", err)
	}
	return candleFrom(wc)
}

func candleFrom(wc wireCandle) (streams.Candle, error) {
	for _, p := range []struct {
		name string
		v    *float64
	}{{"open", wc.Open}, {"high", wc.High}, {"low", wc.Low}, {"close", wc.Close}, {"volume", wc.Volume}, {"trades", wc.Trades}} {
		if p.v == nil {
			return streams.Candle{}, reject(ReasonMalformed, "candle without %s", p.name)
		}
	}
	iv, err := streams.IntervalFromMinutes(wc.Interval)
	if err != nil {
		return streams.Candle{}, reject(ReasonInvalidCandle, "%v", err)
	}
	start, err := time.Parse(time.RFC3339Nano, wc.IntervalBegin)
	if err != nil {
		return streams.Candle{}, reject(ReasonMalformed, "interval_begin %q", wc.IntervalBegin)
	}
	trades := *wc.Trades
	if trades < 0 || trades != math.Trunc(trades) || trades > math.MaxInt32 {
		return streams.Candle{}, reject(ReasonInvalidCandle, "trades %v", trades)
	}
	c := streams.Candle{
		Schema:   streams.Schema{V: streams.SchemaVersion},
		Symbol:   wc.Symbol,
		Interval: iv,
		Start:    start.UTC(),
		Open:     *wc.Open,
		High:     *wc.High,
		Low:      *wc.Low,
		Close:    *wc.Close,
		Volume:   *wc.Volume,
		Trades:   int64(trades),
		Quality:  streams.QualityLive,
	}
	if wc.VWAP != nil {
		c.VWAP = *wc.VWAP
	}
	if err := c.Validate(); err != nil {
		reason := ReasonInvalidCandle
		if errors.Is(err, streams.ErrFutureCandle) {
			reason = ReasonFuture
		}
		return streams.Candle{}, reject(reason, "%s %s: %w", c.Symbol, wc.IntervalBegin, err)
	}
	return c, nil
}
