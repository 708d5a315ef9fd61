package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"cryptostream/ingest/krakensim"
	"cryptostream/streams"
)

func cmdKrakensim(ctx context.Context, args []string, e *env) error {
	var (
		addr, logFormat, logLevel, data string
		speed                           float64
		shift                           bool
		maxUpdates                      int
		idle                            time.Duration
	)
	fs := newFlagSet("krakensim", "Serves a Kraken-compatible WebSocket v2 (/v2) and public REST (/0/public/*) API\nreplaying recorded candles. With no --data it replays the embedded BTC/USD recording.", e)
	fs.stringVar(&addr, "addr", "KRAKENSIM_ADDR", "127.0.0.1:8090", "listen address (beside the roles' 8080-8085)")
	fs.stringVar(&data, "data", "KRAKENSIM_DATA", "", "comma-separated SYMBOL=FILE.csv feeds (1-minute OHLC CSV); empty: the embedded recording")
	fs.float64Var(&speed, "speed", "KRAKENSIM_SPEED", defaultSimSpeed, "market seconds per second (1: real time, as run --demo; 60: a minute per second); 0 = as fast as clients read")
	fs.boolVar(&shift, "shift", "KRAKENSIM_SHIFT", true, "shift recorded times to the present so the replay looks live")
	fs.intVar(&maxUpdates, "max-updates", "KRAKENSIM_MAX_UPDATES", 12, "simulated trades (updates) per recorded candle at most")
	fs.durationVar(&idle, "idle-timeout", "KRAKENSIM_IDLE_TIMEOUT", time.Minute, "close connections without client messages for this long")
	fs.stringVar(&logFormat, "log-format", "LOG_FORMAT", "auto", "log format: text, json, or auto")
	fs.stringVar(&logLevel, "log-level", "LOG_LEVEL", "info", "log level")
	if err := fs.parse(args); err != nil {
		return err
	}
	cc := commonConfig{LogFormat: logFormat, LogLevel: logLevel, ShutdownTimeout: 5 * time.Second}
	if err := cc.validate(); err != nil {
		return err
	}
	log := cc.logger(e)
	var feeds []krakensim.Feed
	if data == "" {
		f, err := krakensim.DemoFeed()
		if err != nil {
			return err
		}
		feeds = append(feeds, f)
	}
	for _, spec := range strings.Split(data, ",") {
		if spec = strings.TrimSpace(spec); spec == "" {
			continue
		}
		sym, file, ok := strings.Cut(spec, "=")
		if !ok {
			return fmt.Errorf("--data %q: want SYMBOL=FILE", spec)
		}
		fh, err := os.Open(file)
		if err != nil {
			return err
		}
		f, err := krakensim.LoadFeed(sym, streams.Interval1m, fh)
		fh.Close()
		if err != nil {
			return err
		}
		feeds = append(feeds, f)
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: feeds, Speed: speed, Shift: shift, MaxUpdatesPerCandle: maxUpdates, IdleTimeout: idle, Log: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	log.Info("krakensim serving", "ws", "ws://"+ln.Addr().String()+"/v2", "rest", "http://"+ln.Addr().String(),
		"speed", speed, "replay_start", sim.Start().Add(sim.Shift()))
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return sim.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		srv.Close()
		return nil
	})
	return g.Wait()
}
