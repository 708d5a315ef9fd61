package backtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// Errors of a request naming what does not exist.
var (
	ErrUnknownAsset = errors.New("backtest: unknown asset")
	ErrUnknownModel = errors.New("backtest: unknown model")
)

// TrainWalkForward is the one training mode: retrain every RetrainEvery
// candles on the past only.
const TrainWalkForward = "walk-forward"

// Request is a backtest as the command and a JOBS job ask for it.
type Request struct {
	Symbol   string           `json:"symbol"`
	Interval streams.Interval `json:"interval"`
	From     time.Time        `json:"from"`
	To       time.Time        `json:"to"`
	// Model is a registry model id; empty with Train empty is no model
	// (the no-change forecast).
	Model        string   `json:"model,omitempty"`
	Train        string   `json:"train,omitempty"`
	RetrainEvery int      `json:"retrain_every,omitempty"`
	Horizon      int      `json:"horizon,omitempty"`
	Strategy     Strategy `json:"strategy"`
	Sweep        []string `json:"sweep,omitempty"`
}

// ModelGetter reads a model record from the registry.
type ModelGetter interface {
	Get(ctx context.Context, id string) (streams.ModelRecord, uint64, error)
}

// Deps are what Execute reads.
type Deps struct {
	JS     streams.StreamLookup
	Models ModelGetter
	// Horizons are the predictor's forecast horizons (its default when
	// empty): the backtest must forecast what the live predictor does.
	Horizons []time.Duration
	// Progress, when set, sees the candles read and the series' total
	// in MARKET (an upper bound on what the read covers).
	Progress func(read, total int)
	Log      *slog.Logger
}

// Validate checks what can be checked without the bus.
func (q Request) Validate() error {
	switch {
	case q.Train != "" && q.Train != TrainWalkForward:
		return fmt.Errorf("%w: --train %q: the one mode is %s", ErrSettings, q.Train, TrainWalkForward)
	case q.Train != "" && q.Model != "":
		return fmt.Errorf("%w: --model and --train exclude each other", ErrSettings)
	case q.Train != "" && q.RetrainEvery <= 0:
		return fmt.Errorf("%w: --train %s needs --retrain-every N > 0", ErrSettings, TrainWalkForward)
	case q.Train == "" && q.RetrainEvery != 0:
		return fmt.Errorf("%w: --retrain-every needs --train %s", ErrSettings, TrainWalkForward)
	case q.Horizon < 0 || q.Horizon > 1440:
		return fmt.Errorf("%w: horizon %d", ErrSettings, q.Horizon)
	case q.Strategy.Fees < 0 || q.Strategy.Slippage < 0 || q.Strategy.Fees+q.Strategy.Slippage >= 1:
		return fmt.Errorf("%w: fees %v and slippage %v: each at least 0, together below 1", ErrSettings, q.Strategy.Fees, q.Strategy.Slippage)
	}
	if _, err := ParseSweep(q.Sweep); err != nil {
		return err
	}
	if q.From.After(q.To) {
		return fmt.Errorf("%w (%s > %s)", ErrBadRange, q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	cfg := Config{Symbol: q.Symbol, Interval: q.Interval, From: q.From, To: q.To}
	return cfg.validate()
}

// Execute runs a request against MARKET and the registry: the replay and
// its report, with the sweep when one is asked for.
func Execute(ctx context.Context, q Request, deps Deps) (*Run, Report, error) {
	if err := q.Validate(); err != nil {
		return nil, Report{}, err
	}
	dims, _ := ParseSweep(q.Sweep)
	st, err := deps.JS.Stream(ctx, streams.StreamMarket)
	if err != nil {
		return nil, Report{}, fmt.Errorf("backtest: %w", err)
	}
	subject := streams.CandleSubject(q.Interval, q.Symbol)
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, Report{}, fmt.Errorf("backtest: %w", err)
	}
	total := int(info.State.Subjects[subject])
	if total == 0 {
		return nil, Report{}, fmt.Errorf("%w: MARKET holds no %s candles of %s", ErrUnknownAsset, q.Interval, q.Symbol)
	}
	cfg := Config{Symbol: q.Symbol, Interval: q.Interval, From: q.From, To: q.To, Horizon: q.Horizon,
		Predictions: predictor.PredictionsConfig{Horizons: deps.Horizons}, Log: deps.Log}
	if q.Train != "" {
		cfg.RetrainEvery = q.RetrainEvery
	}
	if q.Model != "" {
		if deps.Models == nil {
			return nil, Report{}, fmt.Errorf("%w %s: no registry", ErrUnknownModel, q.Model)
		}
		rec, _, err := deps.Models.Get(ctx, q.Model)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, Report{}, fmt.Errorf("%w %s: not in the registry", ErrUnknownModel, q.Model)
		}
		if err != nil {
			return nil, Report{}, fmt.Errorf("backtest: %w", err)
		}
		cfg.Model = &rec
	}
	if deps.Progress != nil {
		cfg.Progress = func(read int) { deps.Progress(read, total) }
	}
	run, err := Replay(ctx, cfg, Market(ctx, deps.JS, q.Interval, q.Symbol, ReadStart(cfg)), pipeline.StreamHistory{JS: deps.JS})
	if err != nil {
		return nil, Report{}, err
	}
	rep := run.Report(q.Strategy)
	if len(dims) > 0 {
		sw, err := run.Sweep(ctx, q.Strategy, dims)
		if err != nil {
			return nil, Report{}, err
		}
		rep.Sweep = &sw
	}
	return run, rep, nil
}
