package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cryptostream/backtest"
	"cryptostream/bus"
	"cryptostream/streams"
)

const replaySynopsis = `Republishes a range of MARKET (every series) into a sandbox: its own streams
(<PREFIX>_MARKET, _FEATURES, _PREDICTIONS, _ALERTS) on subjects under <prefix>.,
created by the command and removed when it ends, so that workers pointed at the
prefix run on history without touching a live subject. --speed N replays at N
times market speed (10 to 1000 are the useful ones); without it, as fast as the
sandbox stores them. The sandbox is kept until the command is interrupted, or
removed as soon as the replay ends with --exit.

Usage: cryptostream replay --from T1 --to T2 --prefix NAME [--speed N] [--exit]`

func cmdReplay(ctx context.Context, args []string, e *env) error {
	var (
		cc               commonConfig
		from, to, prefix string
		speed            float64
		exit             bool
	)
	fs := newFlagSet("replay", replaySynopsis, e)
	cc.register(fs, "", "")
	fs.stringVar(&from, "from", "", "", "first candle start to replay (required)")
	fs.stringVar(&to, "to", "", "", "last candle start to replay (required)")
	fs.stringVar(&prefix, "prefix", "", "", "sandbox subject prefix, a lower-case token (required)")
	fs.float64Var(&speed, "speed", "", 0, "times market speed (0: as fast as possible)")
	fs.boolVar(&exit, "exit", "", false, "remove the sandbox and exit when the replay ends")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cc.validate(); err != nil {
		return err
	}
	r := backtest.Republish{Prefix: prefix, Speed: speed}
	var err error
	if r.From, err = parseTime("--from", from); err != nil {
		return err
	}
	if r.To, err = parseTime("--to", to); err != nil {
		return err
	}
	if err := streams.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("--prefix: %w", err)
	}
	if speed < 0 {
		return fmt.Errorf("--speed %v: want 0 or a positive factor", speed)
	}
	if r.From.After(r.To) {
		return fmt.Errorf("%w (%s > %s)", backtest.ErrBadRange, from, to)
	}
	log := cc.logger(e)
	b, err := bus.Open(ctx, cc.toolBusConfig("cryptostream-replay"), log)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := backtest.CreateSandbox(ctx, b.JS, prefix, cc.Replicas); err != nil {
		return err
	}
	defer func() {
		// Removed on an interrupt too: the command's context has ended.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := backtest.RemoveSandbox(rctx, b.JS, prefix); err != nil {
			log.Error("sandbox not removed", "prefix", prefix, "err", err)
			return
		}
		fmt.Fprintf(e.stderr, "sandbox %s removed\n", prefix)
	}()
	began := time.Now()
	n, err := r.Run(ctx, b.JS)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	cfgs, _ := streams.Sandbox(prefix, 1)
	names := make([]string, len(cfgs))
	for i, c := range cfgs {
		names[i] = c.Name
	}
	fmt.Fprintf(e.stdout, "%d candles replayed into %s in %s; sandbox streams %s on subjects %s.>\n",
		n, streams.SandboxStream(prefix, streams.StreamMarket), time.Since(began).Round(time.Millisecond), strings.Join(names, ", "), prefix)
	if exit || ctx.Err() != nil {
		return nil
	}
	fmt.Fprintln(e.stdout, "sandbox kept until interrupted")
	<-ctx.Done()
	return nil
}
