package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"cryptostream/backtest"
	"cryptostream/bus"
	"cryptostream/registry"
	"cryptostream/streams"
)

const backtestSynopsis = `Replays a range of MARKET through the very features and predictor code the live
workers run, in process (nothing is published), with a fixed model, none (the
no-change forecast) or walk-forward retraining, and reports the point errors
beside the two naive forecasts, the intervals' coverage, and a long/flat
strategy with fees and slippage beside buy-and-hold.

Usage: cryptostream backtest --asset BTC/USD --interval 1m --from T1 --to T2
         [--model ID | --train walk-forward --retrain-every N] [--json] [--html FILE]
         [--sweep fees=0,0.001 threshold=0,0.0005,0.001]
Times are RFC 3339 (2025-06-01T00:00:00Z), a date (2025-06-01) or unix seconds.`

func cmdBacktest(ctx context.Context, args []string, e *env) error {
	var (
		cc                        commonConfig
		pf                        predictorFlags
		asset, ivName, from, to   string
		q                         backtest.Request
		asJSON                    bool
		htmlPath, sweep           string
		fees, slippage, threshold float64
		retrainEvery, horizon     int
		model, train              string
	)
	fs := newFlagSet("backtest", backtestSynopsis, e)
	cc.register(fs, "", "")
	pf.register(fs)
	fs.stringVar(&asset, "asset", "", "BTC/USD", "pair")
	fs.stringVar(&ivName, "interval", "", "1m", "candle interval")
	fs.stringVar(&from, "from", "", "", "first candle start of the range (required)")
	fs.stringVar(&to, "to", "", "", "last candle start of the range (required)")
	fs.stringVar(&model, "model", "", "", "registry id of the model to hold as champion throughout (empty: none, the no-change forecast)")
	fs.stringVar(&train, "train", "", "", "walk-forward: retrain every --retrain-every candles on the past only, with the trainer's promotion rule")
	fs.intVar(&retrainEvery, "retrain-every", "", 0, "candles between walk-forward retrainings")
	fs.intVar(&horizon, "horizon", "", 0, "walk-forward model horizon in intervals (0: the trainer's default)")
	fs.float64Var(&fees, "fees", "", 0.001, "fee per change of position, as a fraction of its value")
	fs.float64Var(&slippage, "slippage", "", 0.0005, "slippage per change of position, as a fraction of its value")
	fs.float64Var(&threshold, "threshold", "", 0, "predicted log return above which the strategy goes long")
	fs.boolVar(&asJSON, "json", "", false, "print the report as JSON (versioned, byte-identical for the same range, model and settings)")
	fs.stringVar(&htmlPath, "html", "", "", "also write the report as one self-contained HTML page to this file")
	fs.stringVar(&sweep, "sweep", "", "", "a grid of strategy settings (name=v1,v2 ...: fees, slippage, threshold; further ones as arguments), traded in parallel over one read and ranked")
	pos, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if sweep != "" {
		q.Sweep = append([]string{sweep}, pos...)
	} else if len(pos) > 0 {
		return fmt.Errorf("unexpected arguments %q", pos)
	}
	if err := cc.validate(); err != nil {
		return err
	}
	if err := pf.validate(); err != nil {
		return err
	}
	if q.Symbol, err = streams.NormalizeSymbol(asset); err != nil {
		return fmt.Errorf("--asset: %w", err)
	}
	if q.Interval, err = streams.ParseInterval(ivName); err != nil {
		return fmt.Errorf("--interval: %w", err)
	}
	if q.From, err = parseTime("--from", from); err != nil {
		return err
	}
	if q.To, err = parseTime("--to", to); err != nil {
		return err
	}
	q.Model, q.Train, q.RetrainEvery, q.Horizon = model, train, retrainEvery, horizon
	q.Strategy = backtest.Strategy{Fees: fees, Slippage: slippage, Threshold: threshold}
	if err := q.Validate(); err != nil {
		return err
	}
	log := cc.logger(e)
	b, err := bus.Open(ctx, cc.toolBusConfig("cryptostream-backtest"), log)
	if err != nil {
		return err
	}
	defer b.Close()
	models, err := registry.OpenModels(ctx, b.JS)
	if err != nil {
		return err
	}
	deps := backtest.Deps{JS: b.JS, Models: models, Horizons: pf.horizons, Log: log}
	var bar *progressbar.ProgressBar
	if e.isTerminal {
		deps.Progress = func(read, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(max(total, 1), progressbar.OptionSetWriter(e.stderr),
					progressbar.OptionSetDescription("backtest "+q.Symbol+" "+q.Interval.String()),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("candles"),
					progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish())
			}
			_ = bar.Set(min(read, total))
		}
	}
	run, rep, err := backtest.Execute(ctx, q, deps)
	if bar != nil {
		_ = bar.Finish()
	}
	if err != nil {
		return err
	}
	if htmlPath != "" {
		page, err := backtest.HTML(run, rep)
		if err != nil {
			return err
		}
		if err := os.WriteFile(htmlPath, page, 0o644); err != nil {
			return err
		}
	}
	if asJSON {
		out, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return fmt.Errorf("encode report: %w", err)
		}
		_, err = fmt.Fprintf(e.stdout, "%s\n", out)
		return err
	}
	_, err = fmt.Fprint(e.stdout, rep.Text())
	return err
}

// parseTime reads RFC 3339, a date, or unix seconds.
func parseTime(flag, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, fmt.Errorf("%s is required", flag)
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	var unix int64
	if _, err := fmt.Sscanf(s, "%d", &unix); err == nil && fmt.Sprint(unix) == s {
		return time.Unix(unix, 0).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want RFC 3339, a date or unix seconds", flag, s)
}
