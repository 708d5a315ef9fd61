package backtest

import (
	"fmt"
	"math"
	"strings"
	"time"

	"cryptostream/streams"
	"cryptostream/trainer"
)

// ReportVersion is the version of the JSON report; a change of a field's
// meaning or name raises it.
const ReportVersion = 1

// Policy is the report's stated treatment of gaps and filled candles.
const Policy = "A gap (an interval with no candle) is a minute with no trades: the price through it is the last close, " +
	"as in the trainer's labels and the predictor's live scoring, and a position is held across it. " +
	"A filled candle (synthesised by the ingester for such a minute, between two accepted candles) goes through the stages " +
	"as it does live, so it yields a vector and a prediction; it is priced at its close, which is the last one, " +
	"and the strategy does not trade on its signal (no trade happened in that minute): the position is kept. " +
	"A prediction whose target lies after the last candle of the range is not scored. " +
	"Duplicate and late candles are skipped and invalid ones rejected, as the features worker does; both are counted."

// Strategy is the long/flat strategy: long over the next interval when
// the prediction's log return exceeds Threshold, flat otherwise; every
// change of position costs Fees plus Slippage, each a fraction of the
// position's value.
type Strategy struct {
	Fees      float64 `json:"fees"`
	Slippage  float64 `json:"slippage"`
	Threshold float64 `json:"threshold"`
}

// Report is a backtest's result, the JSON the command writes.
type Report struct {
	Version  int              `json:"version"`
	Symbol   string           `json:"symbol"`
	Interval streams.Interval `json:"interval"`
	From     time.Time        `json:"from"`
	To       time.Time        `json:"to"`
	// Model is the champion's id, streams.ModelNoChange, or
	// "walk-forward".
	Model        string    `json:"model"`
	RetrainEvery int       `json:"retrain_every,omitempty"`
	Strategy     Strategy  `json:"strategy"`
	Policy       string    `json:"policy"`
	Counts       Counts    `json:"counts"`
	Point        Point     `json:"point"`
	Coverage     []Cover   `json:"coverage"`
	Trading      Trading   `json:"trading"`
	Retrains     []Retrain `json:"retrains,omitempty"`
	// Sweep, when a grid of strategies was asked for, ranks them.
	Sweep *Sweep `json:"sweep,omitempty"`
}

// Point is the error of the predictions' point forecasts (log returns at
// their primary horizon) beside the two naive forecasts on the same rows:
// no change (a zero return) and the last return over the same horizon.
type Point struct {
	Horizon    int             `json:"horizon"`
	Scored     int             `json:"scored"`
	Unscored   int             `json:"unscored"`
	Model      streams.Metrics `json:"model"`
	NoChange   streams.Metrics `json:"no_change"`
	LastReturn streams.Metrics `json:"last_return"`
}

// Cover is the share of actual closes inside the interval of one nominal
// level, over the predictions whose interval was ready and could be
// scored.
type Cover struct {
	Level    float64 `json:"level"`
	N        int     `json:"n"`
	Coverage float64 `json:"coverage"`
}

// Trading is the strategy beside buy-and-hold over the same candles.
type Trading struct {
	Strategy Performance `json:"strategy"`
	BuyHold  Performance `json:"buy_and_hold"`
}

// Performance is a trading record. Returns are per interval held, net of
// costs; Sharpe and Sortino are annualised over 365 days of trading (the
// market never closes) and absent when undefined (no variation, no
// losing interval).
type Performance struct {
	TotalReturn float64  `json:"total_return"`
	Sharpe      *float64 `json:"sharpe"`
	Sortino     *float64 `json:"sortino"`
	MaxDrawdown float64  `json:"max_drawdown"`
	Trades      int      `json:"trades"`
	Exposure    float64  `json:"exposure"`
	Periods     int      `json:"periods"`
}

// Report scores the run's predictions and trades them with s.
func (r *Run) Report(s Strategy) Report {
	rep := Report{
		Version: ReportVersion, Symbol: r.cfg.Symbol, Interval: r.cfg.Interval, From: r.cfg.From.UTC(), To: r.cfg.To.UTC(),
		Model: r.ModelID, Strategy: s, Policy: Policy, Counts: r.Counts, Retrains: r.Retrains,
	}
	if r.cfg.RetrainEvery > 0 {
		rep.RetrainEvery = r.cfg.RetrainEvery
	}
	rep.Point, rep.Coverage, _ = r.score()
	strat, hold := r.Trade(s)
	rep.Trading = Trading{Strategy: strat.Performance, BuyHold: hold.Performance}
	return rep
}

// score is the point errors, the coverage and each scored prediction's
// error (predicted minus actual log return).
func (r *Run) score() (Point, []Cover, []float64) {
	var pt Point
	n := len(r.Predictions)
	pred, zero, last, actual := make([]float64, 0, n), make([]float64, n), make([]float64, 0, n), make([]float64, 0, n)
	var covers []Cover
	var inside []int
	for _, p := range r.Predictions {
		if pt.Horizon == 0 {
			pt.Horizon = p.Horizon
		}
		at, ok := r.priceAt(p.Target)
		lag := p.Start.Add(-time.Duration(p.Horizon) * p.Interval.Duration())
		before, okLag := r.priceAt(lag)
		if !ok || !okLag {
			pt.Unscored++
			continue
		}
		pt.Scored++
		a := math.Log(at / p.Close)
		actual = append(actual, a)
		pred = append(pred, p.LogReturn)
		last = append(last, math.Log(p.Close/before))
		for _, f := range p.Forecasts {
			if f.Horizon != p.Horizon || !f.Ready {
				continue
			}
			for _, iv := range f.Intervals {
				k := coverIndex(&covers, &inside, iv.Level)
				covers[k].N++
				if iv.Lower <= at && at <= iv.Upper {
					inside[k]++
				}
			}
		}
	}
	zero = zero[:len(actual)]
	pt.Model, pt.NoChange, pt.LastReturn = trainer.Evaluate(pred, actual), trainer.Evaluate(zero, actual), trainer.Evaluate(last, actual)
	for k := range covers {
		covers[k].Coverage = float64(inside[k]) / float64(covers[k].N)
	}
	if covers == nil {
		covers = []Cover{}
	}
	errs := make([]float64, len(pred))
	for i := range pred {
		errs[i] = pred[i] - actual[i]
	}
	return pt, covers, errs
}

func coverIndex(covers *[]Cover, inside *[]int, level float64) int {
	for k, c := range *covers {
		if c.Level == level {
			return k
		}
	}
	*covers = append(*covers, Cover{Level: level})
	*inside = append(*inside, 0)
	return len(*covers) - 1
}

// Curve is a trading record with its equity after each interval (Equity[0]
// is 1, before the first close).
type Curve struct {
	Performance
	Starts []time.Time
	Equity []float64
}

// Trade runs the strategy and buy-and-hold over the candles in range.
func (r *Run) Trade(s Strategy) (strategy, hold Curve) {
	bars := r.InRange()
	// Bars and predictions are both in start order, each start once: a
	// bar's prediction is found walking the two together.
	preds := r.Predictions
	want := make([]bool, len(bars))
	long := false
	j := 0
	for i, b := range bars {
		for j < len(preds) && preds[j].Start.Before(b.Start) {
			j++
		}
		if j < len(preds) && preds[j].Start.Equal(b.Start) && !b.Filled {
			long = preds[j].LogReturn > s.Threshold
		}
		want[i] = long
	}
	cost := s.Fees + s.Slippage
	strategy = Simulate(bars, want, cost, r.cfg.Interval)
	all := make([]bool, len(bars))
	for i := range all {
		all[i] = true
	}
	hold = Simulate(bars, all, cost, r.cfg.Interval)
	return strategy, hold
}

// Simulate trades bars: long[i] is the position held from the close of
// bars[i] to the close of bars[i+1]. A change of position at a close
// costs cost times the equity; an open position is closed, at the same
// cost, at the last close. The drawdown is measured after every cost and
// every move: a cost is a loss like any other.
func Simulate(bars []Bar, long []bool, cost float64, iv streams.Interval) Curve {
	c := Curve{Equity: make([]float64, 1, max(len(bars), 1))}
	c.Equity[0] = 1
	if len(bars) == 0 {
		return c
	}
	c.Starts = make([]time.Time, 1, len(bars))
	c.Starts[0] = bars[0].Start
	eq, peak := 1.0, 1.0
	mark := func() {
		peak = math.Max(peak, eq)
		c.MaxDrawdown = math.Max(c.MaxDrawdown, 1-eq/peak)
	}
	trade := func() {
		eq *= 1 - cost
		c.Trades++
		mark()
	}
	held := false
	rets := make([]float64, 0, len(bars)-1)
	periodsLong := 0
	for i := 0; i+1 < len(bars); i++ {
		start := eq
		if long[i] != held {
			trade()
			held = long[i]
		}
		if held {
			eq *= bars[i+1].Close / bars[i].Close
			periodsLong++
			mark()
		}
		if i+2 == len(bars) && held {
			trade()
			held = false
		}
		rets = append(rets, eq/start-1)
		c.Equity = append(c.Equity, eq)
		c.Starts = append(c.Starts, bars[i+1].Start)
	}
	c.TotalReturn = eq - 1
	c.Periods = len(rets)
	if c.Periods > 0 {
		c.Exposure = float64(periodsLong) / float64(c.Periods)
	}
	perYear := float64(365*24*time.Hour) / float64(iv.Duration())
	c.Sharpe, c.Sortino = ratios(rets, perYear)
	return c
}

// ratios are the annualised Sharpe (mean over sample standard deviation)
// and Sortino (mean over the root mean square of the losses) ratios of
// per-period returns, with a zero risk-free rate.
func ratios(rets []float64, perYear float64) (sharpe, sortino *float64) {
	n := float64(len(rets))
	if n < 2 {
		return nil, nil
	}
	var mean float64
	for _, x := range rets {
		mean += x
	}
	mean /= n
	var ss, down float64
	for _, x := range rets {
		ss += (x - mean) * (x - mean)
		if x < 0 {
			down += x * x
		}
	}
	if sd := math.Sqrt(ss / (n - 1)); sd > 0 {
		v := mean / sd * math.Sqrt(perYear)
		sharpe = &v
	}
	if dd := math.Sqrt(down / n); dd > 0 {
		v := mean / dd * math.Sqrt(perYear)
		sortino = &v
	}
	return sharpe, sortino
}

// Text is the report for a person at a terminal.
func (rep Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "backtest %s %s from %s to %s, model %s\n", rep.Symbol, rep.Interval,
		rep.From.Format(time.RFC3339), rep.To.Format(time.RFC3339), rep.Model)
	c := rep.Counts
	fmt.Fprintf(&b, "candles %d (%d filled, %d missing intervals, %d skipped, %d rejected), warm-up %d, predictions %d\n",
		c.Candles, c.Filled, c.Gaps, c.Skipped, c.Rejected, c.Warmup, c.Predictions)
	p := rep.Point
	fmt.Fprintf(&b, "\npoint forecast, horizon %d, %d scored (%d not: target past the range)\n", p.Horizon, p.Scored, p.Unscored)
	fmt.Fprintf(&b, "  %-12s %12s %12s %9s %9s\n", "", "MSE", "MAE", "R2", "direction")
	for _, m := range []struct {
		name string
		m    streams.Metrics
	}{{"model", p.Model}, {"no change", p.NoChange}, {"last return", p.LastReturn}} {
		fmt.Fprintf(&b, "  %-12s %12.4g %12.4g %9.4f %9.4f\n", m.name, m.m.MSE, m.m.MAE, m.m.R2, m.m.DirectionAccuracy)
	}
	b.WriteString("\ninterval coverage\n")
	for _, cv := range rep.Coverage {
		fmt.Fprintf(&b, "  nominal %.0f%%: %.1f%% of %d\n", 100*cv.Level, 100*cv.Coverage, cv.N)
	}
	s := rep.Strategy
	fmt.Fprintf(&b, "\nlong/flat, threshold %g, fees %g, slippage %g\n", s.Threshold, s.Fees, s.Slippage)
	fmt.Fprintf(&b, "  %-13s %10s %8s %8s %9s %7s %9s\n", "", "return", "Sharpe", "Sortino", "drawdown", "trades", "exposure")
	for _, t := range []struct {
		name string
		p    Performance
	}{{"strategy", rep.Trading.Strategy}, {"buy and hold", rep.Trading.BuyHold}} {
		fmt.Fprintf(&b, "  %-13s %9.2f%% %8s %8s %8.2f%% %7d %8.1f%%\n", t.name, 100*t.p.TotalReturn, opt(t.p.Sharpe), opt(t.p.Sortino),
			100*t.p.MaxDrawdown, t.p.Trades, 100*t.p.Exposure)
	}
	if len(rep.Retrains) > 0 {
		promoted := 0
		for _, r := range rep.Retrains {
			if r.Promoted {
				promoted++
			}
		}
		fmt.Fprintf(&b, "\nwalk-forward: %d trainings every %d candles, %d promoted\n", len(rep.Retrains), rep.RetrainEvery, promoted)
	}
	if sw := rep.Sweep; sw != nil {
		fmt.Fprintf(&b, "\nsweep of %d settings, best first\n", len(sw.Results))
		for _, r := range sw.Results[:min(len(sw.Results), 10)] {
			fmt.Fprintf(&b, "  %3d. fees %g slippage %g threshold %g: return %.2f%%, Sharpe %s, %d trades\n", r.Rank,
				r.Strategy.Fees, r.Strategy.Slippage, r.Strategy.Threshold, 100*r.Trading.TotalReturn, opt(r.Trading.Sharpe), r.Trading.Trades)
		}
		fmt.Fprintf(&b, "  warning: %s\n", sw.Warning)
	}
	return b.String()
}

func opt(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f", *v)
}
