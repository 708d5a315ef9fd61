package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"cryptostream/streams"
)

// ErrBadChannel reports a channel name that does not parse.
var ErrBadChannel = errors.New("hub: bad channel")

// spec is a parsed channel: its canonical name and what it reads.
type spec struct {
	name   string // canonical, the name frames carry
	stream string
	filter string
	// symbol and interval are what must be tracked for the channel to
	// carry anything; symbol is empty for "alerts", interval zero for
	// alerts.
	symbol   string
	interval streams.Interval
	// conflate: a client that is behind gets the newest event, not every
	// one (running-candle ticks, each of which replaces the last).
	conflate bool
}

// parseChannel accepts
//
//	ticks:BTC-USD[:interval]        running candle updates (default 1m)
//	candles:BTC-USD[:interval]      closed candles (default 1m)
//	predictions:BTC-USD[:interval]  predictions (default 1m)
//	alerts[:BTC-USD]                fired alerts, all or one symbol
//
// The symbol may be spelt BTC-USD or BTC/USD. The canonical name spells the
// symbol BTC-USD, drops a 1m interval for ticks and predictions, and always
// names it for candles.
func parseChannel(s string) (spec, error) {
	if len(s) > 64 {
		return spec{}, fmt.Errorf("%w: too long", ErrBadChannel)
	}
	parts := strings.Split(s, ":")
	kind := parts[0]
	if kind == "alerts" {
		switch len(parts) {
		case 1:
			return spec{name: "alerts", stream: streams.StreamAlerts, filter: streams.AlertSubject("*")}, nil
		case 2:
			sym, err := streams.NormalizeSymbol(parts[1])
			if err != nil {
				return spec{}, fmt.Errorf("%w: %q: %w", ErrBadChannel, s, err)
			}
			return spec{name: "alerts:" + streams.AssetKey(sym), stream: streams.StreamAlerts, filter: streams.AlertSubject(sym), symbol: sym}, nil
		}
		return spec{}, fmt.Errorf("%w: %q", ErrBadChannel, s)
	}
	if len(parts) < 2 || len(parts) > 3 {
		return spec{}, fmt.Errorf("%w: %q: want kind:SYMBOL[:interval]", ErrBadChannel, s)
	}
	sym, err := streams.NormalizeSymbol(parts[1])
	if err != nil {
		return spec{}, fmt.Errorf("%w: %q: %w", ErrBadChannel, s, err)
	}
	iv := streams.Interval1m
	if len(parts) == 3 {
		if iv, err = streams.ParseInterval(parts[2]); err != nil {
			return spec{}, fmt.Errorf("%w: %q: %w", ErrBadChannel, s, err)
		}
	}
	tok := streams.AssetKey(sym)
	suffix := ""
	if iv != streams.Interval1m {
		suffix = ":" + iv.String()
	}
	switch kind {
	case "ticks":
		return spec{name: "ticks:" + tok + suffix, stream: streams.StreamTicks, filter: streams.TickSubject(iv, sym), symbol: sym, interval: iv, conflate: true}, nil
	case "candles":
		return spec{name: "candles:" + tok + ":" + iv.String(), stream: streams.StreamMarket, filter: streams.CandleSubject(iv, sym), symbol: sym, interval: iv}, nil
	case "predictions":
		return spec{name: "predictions:" + tok + suffix, stream: streams.StreamPredictions, filter: streams.PredictionSubject(iv, sym), symbol: sym, interval: iv}, nil
	}
	return spec{}, fmt.Errorf("%w: %q: unknown kind %q", ErrBadChannel, s, kind)
}

// appendEvent appends an event message; it is encoded once per event
// whatever the number of subscribers.
func appendEvent(b []byte, channel string, seq uint64, snapshot bool, data []byte) []byte {
	b = append(b, `{"type":"event","channel":`...)
	b = strconv.AppendQuote(b, channel)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, `,"snapshot":`...)
	b = strconv.AppendBool(b, snapshot)
	b = append(b, `,"data":`...)
	if json.Valid(data) {
		b = append(b, data...)
	} else {
		b = append(b, "null"...)
	}
	return append(b, '}')
}
