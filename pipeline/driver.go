package pipeline

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cryptostream/streams"
)

// driver is what the Runner and Replay share: a stage's series warmed
// once each, then stepped.
type driver struct {
	stage Stage
	hist  History
	// warm holds, per series warmed, the sequence of the last input it
	// covers.
	warm map[string]uint64
	// warmed is told how long each warm-up took.
	warmed func(time.Duration)
}

// errCovered says an input is at or before what its series already
// covers: delivered again (a redelivery racing its ack, a failover) after
// the stage stepped it, so its outputs are stored or on their way.
var errCovered = errors.New("pipeline: input already covered")

// step warms m's series when needed, then steps m. A permanent error
// rejects m; any other is worth retrying.
func (d *driver) step(ctx context.Context, m Msg) ([]streams.Event, error) {
	key := d.stage.Key(m)
	if key == "" {
		return d.stage.Step(ctx, m)
	}
	last, ok := d.warm[key]
	if !ok {
		began := time.Now()
		if err := d.stage.Warm(ctx, d.hist, key, m); err != nil {
			return nil, fmt.Errorf("pipeline: warm %s: %w", key, err)
		}
		last = m.Seq - 1
		if d.warmed != nil {
			d.warmed(time.Since(began))
		}
	}
	if m.Seq <= last {
		return nil, errCovered
	}
	evs, err := d.stage.Step(ctx, m)
	if err == nil || errors.Is(err, streams.ErrPermanent) {
		d.warm[key] = m.Seq
	}
	return evs, err
}

// resetAll forgets every series the stage holds.
func (d *driver) resetAll() {
	for key := range d.warm {
		d.stage.Reset(key)
	}
	clear(d.warm)
}

// invalidOutput is the rejection of an input whose output does not
// validate: a stage bug no retry fixes, so the input is rejected and the
// stream goes on.
func invalidOutput(m Msg, err error) error {
	return streams.Permanent(fmt.Errorf("pipeline: output of %s seq %d: %w", m.Subject, m.Seq, err))
}
