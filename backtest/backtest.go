// Package backtest owns backtests: a range of MARKET replayed through the
// very stages the live features and predictor workers run (pipeline.Replay,
// in process, nothing republished), optionally retrained walk-forward with
// the trainer's own functions and promotion rule, and the report made from
// what they predicted: point errors beside the two naive forecasts, the
// coverage of the intervals against their nominal level, and a long/flat
// strategy with fees and slippage beside buy-and-hold.
package backtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/forecast"
	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// Errors of a backtest's settings and range; each is the caller's to fix.
var (
	ErrEmptyRange = errors.New("backtest: no candles in the range")
	ErrBadRange   = errors.New("backtest: --from is after --to")
	ErrSettings   = errors.New("backtest: invalid settings")
)

// Config is one backtest's settings.
type Config struct {
	Symbol   string
	Interval streams.Interval
	// From and To bound the candle starts reported, both included.
	From, To time.Time
	// Model is the champion the predictor stage holds throughout; nil is
	// none (the no-change forecast), unless RetrainEvery is set.
	Model *streams.ModelRecord
	// RetrainEvery, when positive, trains a model every RetrainEvery
	// vectors on the vectors before it, as the trainer's schedule does,
	// and promotes it by the trainer's rule; Horizon and Split are the
	// trainer's settings (1 and trainer.DefaultSplit when zero).
	RetrainEvery int
	Horizon      int
	Split        trainer.Split
	// Rule is the promotion rule (forecast.DefaultRule, the trainer's
	// default, when zero).
	Rule forecast.Rule
	// Warmup is how many candles before From go through the stages
	// unreported, so that the volatility model and its calibration are
	// where a running predictor's would be (WarmupFor when 0; negative:
	// none).
	Warmup int
	// Spec is the features' specification (features.DefaultSpec when
	// it has no feature at all); Predictions the predictor stage's
	// settings, the live worker's when zero.
	Spec        features.Spec
	Predictions predictor.PredictionsConfig
	// Progress, when set, is called with the number of candles read so
	// far, every 1024 candles and at the end, from the goroutine reading
	// them (one call at a time; the last before Replay returns).
	Progress func(read int)
	Log      *slog.Logger
}

// WarmupFor is the default warm-up: what the features' window and the
// volatility model's warm-up, calibration and longest horizon need.
func WarmupFor(iv streams.Interval, spec features.Spec) int {
	fc := forecast.DefaultConfig(iv.Duration())
	return spec.Need() + fc.History()
}

func (c *Config) validate() error {
	var bad []string
	if err := streams.ValidateSymbol(c.Symbol); err != nil {
		bad = append(bad, err.Error())
	}
	if !c.Interval.Valid() {
		bad = append(bad, fmt.Sprintf("unknown interval %d", int(c.Interval)))
	}
	if c.From.IsZero() || c.To.IsZero() {
		bad = append(bad, "from and to are required")
	}
	if c.RetrainEvery < 0 {
		bad = append(bad, fmt.Sprintf("retrain every %d", c.RetrainEvery))
	}
	if c.Model != nil && c.RetrainEvery > 0 {
		bad = append(bad, "a fixed model and walk-forward retraining exclude each other")
	}
	if c.Model != nil && (c.Model.Symbol != c.Symbol || c.Model.Interval != c.Interval) {
		bad = append(bad, fmt.Sprintf("model %s is for %s %s, not %s %s", c.Model.ID, c.Model.Symbol, c.Model.Interval, c.Symbol, c.Interval))
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrSettings, strings.Join(bad, "; "))
	}
	if c.From.After(c.To) {
		return fmt.Errorf("%w (%s > %s)", ErrBadRange, c.From.Format(time.RFC3339), c.To.Format(time.RFC3339))
	}
	if len(c.Spec.Lags)+len(c.Spec.SMA)+len(c.Spec.EMA)+c.Spec.RSI+c.Spec.Vol == 0 {
		c.Spec = features.DefaultSpec()
	}
	if err := c.Spec.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrSettings, err)
	}
	if c.Horizon <= 0 {
		c.Horizon = 1
	}
	if c.Split.TrainSize == 0 {
		c.Split = trainer.DefaultSplit()
	}
	if c.Rule == (forecast.Rule{}) {
		c.Rule = forecast.DefaultRule()
	}
	if c.Warmup == 0 {
		c.Warmup = WarmupFor(c.Interval, c.Spec)
	}
	c.Warmup = max(c.Warmup, 0)
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Bar is one candle the features stage accepted: the prices the report
// is judged on.
type Bar struct {
	Start  time.Time
	Close  float64
	Filled bool
}

// Retrain is one walk-forward training and its decision.
type Retrain struct {
	At       time.Time `json:"at"` // start of the first vector it could predict
	ModelID  string    `json:"model_id,omitempty"`
	Promoted bool      `json:"promoted"`
	Demoted  string    `json:"demoted,omitempty"`
	Decision string    `json:"decision"`
	TestMSE  float64   `json:"test_mse,omitempty"`
}

// Counts are what the replay read and how the data policy treated it.
type Counts struct {
	// Read is every candle message of the series the source gave.
	Read int `json:"read"`
	// Warmup candles went through the stages before From, unreported.
	Warmup int `json:"warmup"`
	// Candles are the accepted candles in the range, Filled those of
	// them the ingester synthesised for a minute with no trades.
	Candles int `json:"candles"`
	Filled  int `json:"filled"`
	// Skipped are duplicates and late candles (not after the last
	// accepted one), Rejected invalid ones.
	Skipped  int `json:"skipped"`
	Rejected int `json:"rejected"`
	// Gaps are the intervals with no candle at all between the first
	// and the last accepted candle of the range.
	Gaps        int `json:"gaps"`
	Predictions int `json:"predictions"`
}

// Run is what a backtest's replay produced, from which reports are made;
// Report can be called for many strategies over one run.
type Run struct {
	cfg         Config
	Bars        []Bar                 // warm-up included, by start
	first       int                   // index in Bars of the first in range
	Predictions []*streams.Prediction // by start, each start once
	Retrains    []Retrain
	Counts      Counts
	ModelID     string
}

// seriesKey is the predictor's name of a series ("1m.BTC-USD").
func seriesKey(iv streams.Interval, symbol string) string {
	return strings.TrimPrefix(streams.ChampionKey(iv, symbol), "champion.")
}

// marketOnly answers the features' warm-up from MARKET, and the
// predictor's from nothing: the live FEATURES and PREDICTIONS streams
// hold another model's outputs, so the predictor starts cold at the
// warm-up instead.
type marketOnly struct{ h pipeline.History }

func (m marketOnly) Tail(ctx context.Context, stream, subject string, n int, before uint64) ([]pipeline.Msg, error) {
	if m.h == nil || stream != streams.StreamMarket {
		return nil, nil
	}
	return m.h.Tail(ctx, stream, subject, n, before)
}

// Next implements pipeline.NextFinder when the history does: the features
// stage asks it at every gap in the market before it reads a window.
func (m marketOnly) Next(ctx context.Context, stream, subject string, from uint64) (uint64, error) {
	nf, ok := m.h.(pipeline.NextFinder)
	if !ok || stream != streams.StreamMarket {
		return 0, nil // no proof: the stage reads the window
	}
	return nf.Next(ctx, stream, subject, from)
}

// Replay runs the range through the features and predictor stages.
// candles are MARKET messages in stream order (other series are ignored);
// hist, when set, answers the features' warm-up from what MARKET holds
// before them.
func Replay(ctx context.Context, cfg Config, candles iter.Seq2[pipeline.Msg, error], hist pipeline.History) (*Run, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// Outputs are stamped with a fixed instant: a report must not depend
	// on when it ran.
	now := func() time.Time { return cfg.To }
	reg := prometheus.NewRegistry()
	vecStage, err := features.NewVectors(cfg.Spec, now, reg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSettings, err)
	}
	predStage := predictor.NewPredictions(cfg.Predictions, now, cfg.Log, reg)
	key := seriesKey(cfg.Interval, cfg.Symbol)
	run := &Run{cfg: cfg, ModelID: streams.ModelNoChange}
	if cfg.Model != nil {
		if err := predStage.SetChampion(key, cfg.Model); err != nil {
			return nil, fmt.Errorf("%w: model %s: %w", ErrSettings, cfg.Model.ID, err)
		}
		run.ModelID = cfg.Model.ID
	} else if cfg.RetrainEvery > 0 {
		run.ModelID = "walk-forward"
	}
	subject := streams.CandleSubject(cfg.Interval, cfg.Symbol)
	warmFrom := cfg.From.Add(-time.Duration(cfg.Warmup) * cfg.Interval.Duration())
	run.first = -1
	var last time.Time
	// The candle is decoded once, here, and handed to the features stage
	// as the message's Value; cur is reused, since the stage copies it.
	var cur streams.Candle
	tap := func(yield func(pipeline.Msg, error) bool) {
		defer func() {
			if cfg.Progress != nil {
				cfg.Progress(run.Counts.Read)
			}
		}()
		for m, err := range candles {
			if err != nil {
				yield(m, err)
				return
			}
			if m.Subject != subject {
				continue
			}
			if run.Counts.Read++; cfg.Progress != nil && run.Counts.Read%1024 == 0 {
				cfg.Progress(run.Counts.Read)
			}
			c, derr := pipeline.Decode[streams.Candle](m)
			if derr == nil {
				cur = c
				m.Value = &cur
				if c.Start.Before(warmFrom) || c.Start.After(cfg.To) {
					continue
				}
				if !c.Start.After(last) {
					run.Counts.Skipped++
				} else {
					last = c.Start
					if run.first < 0 && !c.Start.Before(cfg.From) {
						run.first = len(run.Bars)
					}
					run.Bars = append(run.Bars, Bar{Start: c.Start, Close: c.Close, Filled: c.Quality == streams.QualityFilled})
				}
			}
			// An undecodable candle goes on to the stage, which rejects
			// and counts it as the live worker does.
			if !yield(m, nil) {
				return
			}
		}
	}
	// Every vector is of the one series the tap lets through.
	vecSubject := streams.FeaturesSubject(cfg.Interval, cfg.Symbol)
	// The candles are read and the vectors made on a goroutine of their
	// own (ahead), the predictions on this one.
	features := func(yield func(pipeline.Msg, error) bool) {
		var seq uint64
		rcfg := pipeline.ReplayConfig{History: marketOnly{hist}, Rejected: func(m pipeline.Msg, err error) {
			run.Counts.Rejected++
			cfg.Log.Debug("candle rejected", "seq", m.Seq, "err", err)
		}}
		for out, err := range pipeline.Replay(ctx, vecStage, tap, rcfg) {
			if err != nil {
				yield(pipeline.Msg{}, err)
				return
			}
			v, ok := out.Event.(*streams.FeatureVector)
			if !ok {
				continue
			}
			// Handed on decoded: the binary encoding the live worker
			// publishes (streams.NewMsg) gives back the same vector.
			seq++
			if !yield(pipeline.Msg{Stream: streams.StreamFeatures, Subject: vecSubject, Seq: seq, Time: out.In.Time, Value: v}, nil) {
				return
			}
		}
	}
	wf := walkForward{cfg: &cfg, stage: predStage, key: key, run: run}
	vectors := func(yield func(pipeline.Msg, error) bool) {
		for m, err := range ahead(features) {
			if err == nil {
				// Retrained on this goroutine, so that a new champion
				// takes over at the very vector it would live.
				err = wf.before(*m.Value.(*streams.FeatureVector))
			}
			if err != nil {
				yield(pipeline.Msg{}, err)
				return
			}
			if !yield(m, nil) {
				return
			}
		}
	}
	for out, err := range pipeline.Replay(ctx, predStage, vectors, pipeline.ReplayConfig{History: marketOnly{}}) {
		if err != nil {
			return nil, fmt.Errorf("backtest: %w", err)
		}
		p, ok := out.Event.(*streams.Prediction)
		if !ok || p.Start.Before(cfg.From) {
			continue
		}
		run.Predictions = append(run.Predictions, p)
	}
	if run.first < 0 {
		return nil, fmt.Errorf("%w: %s %s from %s to %s", ErrEmptyRange, cfg.Symbol, cfg.Interval,
			cfg.From.Format(time.RFC3339), cfg.To.Format(time.RFC3339))
	}
	run.count()
	return run, nil
}

func (r *Run) count() {
	r.Counts.Warmup = r.first
	in := r.Bars[r.first:]
	r.Counts.Candles = len(in)
	step := r.cfg.Interval.Duration()
	for i, b := range in {
		if b.Filled {
			r.Counts.Filled++
		}
		if i > 0 {
			r.Counts.Gaps += int(b.Start.Sub(in[i-1].Start)/step) - 1
		}
	}
	r.Counts.Predictions = len(r.Predictions)
}

// InRange is the accepted candles from From to To.
func (r *Run) InRange() []Bar { return r.Bars[r.first:] }

// priceAt is the close of the last bar at or before t, the price through
// a minute with no trades, as the trainer's labels and the predictor's
// scorer take it; ok is false when no bar is at or after t (the range
// ends before t) or none is at or before it.
func (r *Run) priceAt(t time.Time) (float64, bool) {
	i, found := slices.BinarySearchFunc(r.Bars, t, func(b Bar, t time.Time) int { return b.Start.Compare(t) })
	switch {
	case found:
		return r.Bars[i].Close, true
	case i == 0 || i == len(r.Bars):
		return 0, false
	}
	return r.Bars[i-1].Close, true
}
