package notifier

import (
	"cmp"
	"slices"
	"time"

	"cryptostream/streams"
)

// Input is one stored event for Preview: exactly one of the pointers set.
type Input struct {
	Candle     *streams.Candle
	Tick       *streams.Tick
	Prediction *streams.Prediction
	Audit      *streams.AuditEvent
	Source     Source
}

// At is the event time the engine takes an input at, and Preview orders
// inputs by.
func (in Input) At() time.Time {
	switch {
	case in.Candle != nil:
		return in.Candle.End()
	case in.Tick != nil:
		return in.Tick.ReceivedAt
	case in.Prediction != nil:
		return in.Prediction.Start.Add(in.Prediction.Interval.Duration())
	case in.Audit != nil:
		return in.Audit.At
	}
	return time.Time{}
}

// Feed gives one input to the engine.
func (e *Engine) Feed(in Input) []streams.Alert {
	switch {
	case in.Candle != nil:
		return e.Candle(*in.Candle, in.Source)
	case in.Tick != nil:
		return e.Tick(*in.Tick, in.Source)
	case in.Prediction != nil:
		return e.Prediction(*in.Prediction, in.Source)
	case in.Audit != nil:
		return e.Audit(*in.Audit, in.Source)
	}
	return nil
}

// Preview answers every time the rules would have fired over the inputs,
// with the very engine the worker runs: same cooldown, hysteresis and
// trigger modes, nothing stored or delivered. Inputs are taken in event
// time (stably, so a candle and a prediction of the same instant keep the
// order given).
func Preview(cfg EngineConfig, rs []Rule, inputs []Input) []streams.Alert {
	e := NewEngine(cfg)
	e.SetRules(rs)
	slices.SortStableFunc(inputs, func(a, b Input) int { return cmp.Compare(a.At().UnixNano(), b.At().UnixNano()) })
	out := []streams.Alert{}
	for _, in := range inputs {
		out = append(out, e.Feed(in)...)
	}
	return out
}
