package backtest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// SandboxJS is what a replay into a sandbox needs of JetStream.
type SandboxJS interface {
	streams.StreamLookup
	CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error)
	DeleteStream(ctx context.Context, name string) error
	PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// ErrSandboxExists reports a prefix whose sandbox is already there: a
// replay never writes into streams it did not create.
var ErrSandboxExists = errors.New("backtest: sandbox already exists")

// CreateSandbox creates prefix's streams, and none if one of them exists.
func CreateSandbox(ctx context.Context, js SandboxJS, prefix string, replicas int) error {
	cfgs, err := streams.Sandbox(prefix, replicas)
	if err != nil {
		return err
	}
	for _, c := range cfgs {
		if _, err := js.Stream(ctx, c.Name); err == nil {
			return fmt.Errorf("%w: stream %s (remove it, or choose another --prefix)", ErrSandboxExists, c.Name)
		} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("backtest: sandbox: %w", err)
		}
	}
	for _, c := range cfgs {
		if _, err := js.CreateStream(ctx, c); err != nil {
			return fmt.Errorf("backtest: create sandbox stream %s: %w", c.Name, err)
		}
	}
	return nil
}

// RemoveSandbox deletes prefix's streams; those already gone are fine.
func RemoveSandbox(ctx context.Context, js SandboxJS, prefix string) error {
	cfgs, err := streams.Sandbox(prefix, 1)
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range cfgs {
		if err := js.DeleteStream(ctx, c.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("backtest: remove sandbox stream %s: %w", c.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Republish is a replay of MARKET into a sandbox.
type Republish struct {
	From, To time.Time // candle starts, both included
	Prefix   string
	// Speed replays at Speed times market speed: the wait between two
	// candles is the time between their starts divided by Speed. Zero is
	// as fast as the sandbox stores them.
	Speed float64
	// Sleep waits d or until ctx ends (a timer when nil): tests pass
	// their own clock.
	Sleep    func(ctx context.Context, d time.Duration) error
	Progress func(published int)
}

// Run republishes every candle of the range, of every series, in MARKET's
// order, under the prefix, each with its own message id so that a
// second run into the same sandbox stores nothing twice. It returns how
// many it published.
func (r Republish) Run(ctx context.Context, js SandboxJS) (int, error) {
	if err := streams.ValidatePrefix(r.Prefix); err != nil {
		return 0, err
	}
	if r.From.After(r.To) {
		return 0, fmt.Errorf("%w (%s > %s)", ErrBadRange, r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
	}
	if r.Speed < 0 {
		return 0, fmt.Errorf("%w: speed %v", ErrSettings, r.Speed)
	}
	sleep := r.Sleep
	if sleep == nil {
		sleep = func(ctx context.Context, d time.Duration) error {
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-t.C:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	n := 0
	var last time.Time
	for m, err := range readMarket(ctx, js, streams.CandleFilter(0, ""), r.From.Add(-streams.MaxClockSkew)) {
		if err != nil {
			return n, err
		}
		c, err := streams.Decode[streams.Candle](m.Data)
		if err != nil || c.Start.Before(r.From) || c.Start.After(r.To) {
			continue // what the live workers reject is not replayed either
		}
		if r.Speed > 0 && !last.IsZero() && c.Start.After(last) {
			if err := sleep(ctx, time.Duration(float64(c.Start.Sub(last))/r.Speed)); err != nil {
				return n, err
			}
		}
		if c.Start.After(last) {
			last = c.Start
		}
		msg := nats.NewMsg(streams.SandboxSubject(r.Prefix, m.Subject))
		msg.Data = m.Data
		msg.Header.Set(jetstream.MsgIDHeader, c.MsgID())
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return n, fmt.Errorf("backtest: republish %s: %w", msg.Subject, err)
		}
		if n++; r.Progress != nil && n%256 == 0 {
			r.Progress(n)
		}
	}
	if r.Progress != nil {
		r.Progress(n)
	}
	return n, nil
}
