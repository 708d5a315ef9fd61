package pipeline

import (
	"context"
	"errors"
	"iter"

	"cryptostream/streams"
)

// Output is an event a stage produced and the input it came from.
type Output struct {
	In    Msg
	Event streams.Event
}

// ReplayConfig tunes Replay.
type ReplayConfig struct {
	// History answers the stage's warm-ups. Nil is an empty history: every
	// series starts from nothing, as it does at the start of a stream.
	// To replay a range from its middle, pass a History over what comes
	// before it (StreamHistory, or MemoryHistory over stored events).
	History History
	// Rejected, when set, sees every input the stage rejected as
	// permanent; Replay goes on past them, as the runner does.
	Rejected func(Msg, error)
}

// Replay drives stage over events in order with no NATS, exactly as a
// Runner would over the same stored events with no failure: each series
// warmed once, every input stepped, every output validated and yielded in
// the order the runner would store it, with the input it came from. A
// failure the runner would retry (a step error that is not
// streams.Permanent, a failed warm-up) or an error from events is yielded
// once and ends the replay; so does ctx ending. Breaking out of the loop
// stops it early.
//
//	for out, err := range pipeline.Replay(ctx, stage, pipeline.Msgs(stored), pipeline.ReplayConfig{}) {
//		if err != nil {
//			return err
//		}
//		p := out.Event.(*streams.Prediction)
//		...
//	}
func Replay(ctx context.Context, stage Stage, events iter.Seq2[Msg, error], cfg ReplayConfig) iter.Seq2[Output, error] {
	return func(yield func(Output, error) bool) {
		h := cfg.History
		if h == nil {
			h = MemoryHistory(nil)
		}
		d := driver{stage: stage, hist: h, warm: map[string]uint64{}}
		for m, err := range events {
			if err == nil {
				err = ctx.Err()
			}
			if err != nil {
				yield(Output{In: m}, err)
				return
			}
			evs, err := d.step(ctx, m)
			if errors.Is(err, errCovered) {
				continue
			}
			if err == nil {
				for _, ev := range evs {
					if verr := ev.Validate(); verr != nil {
						err, evs = invalidOutput(m, verr), nil
						break
					}
				}
			}
			if errors.Is(err, streams.ErrPermanent) {
				if cfg.Rejected != nil {
					cfg.Rejected(m, err)
				}
				continue
			}
			if err != nil {
				yield(Output{In: m}, err)
				return
			}
			for _, ev := range evs {
				if !yield(Output{In: m, Event: ev}, nil) {
					return
				}
			}
		}
	}
}

// Msgs is events for Replay from a slice.
func Msgs(ms []Msg) iter.Seq2[Msg, error] {
	return func(yield func(Msg, error) bool) {
		for _, m := range ms {
			if !yield(m, nil) {
				return
			}
		}
	}
}

// MemoryHistory is a History over events held in memory, in stream order.
type MemoryHistory []Msg

// Next implements NextFinder.
func (h MemoryHistory) Next(_ context.Context, stream, subject string, from uint64) (uint64, error) {
	// Sequences rise along h within a stream; h may hold several.
	for _, m := range h {
		if m.Stream == stream && m.Subject == subject && m.Seq >= from {
			return m.Seq, nil
		}
	}
	return 0, nil
}

// Tail implements History.
func (h MemoryHistory) Tail(_ context.Context, stream, subject string, n int, before uint64) ([]Msg, error) {
	var out []Msg
	for i := len(h) - 1; i >= 0 && len(out) < n; i-- {
		m := h[i]
		if m.Stream == stream && m.Subject == subject && (before == 0 || m.Seq < before) {
			out = append(out, m)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
