package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"cryptostream/bus"
	"cryptostream/loadtest"
	"cryptostream/streams"
)

// loadtestTarget is what both scenarios need: a gateway on loopback and a
// token (given, or from a login).
type loadtestTarget struct {
	URL, MetricsURL, Token, Username, Password string
	CPUProfile                                 string
}

func (t *loadtestTarget) register(fs *flagSet) {
	fs.stringVar(&t.URL, "url", "LOADTEST_URL", "http://127.0.0.1:8080", "base URL of the running gateway (loopback only)")
	fs.stringVar(&t.MetricsURL, "metrics-url", "LOADTEST_METRICS_URL", "", "the gateway's /metrics, for its memory and CPU (default <url>/metrics)")
	fs.stringVar(&t.Token, "token", "LOADTEST_TOKEN", "", "access token; empty logs in with --username and --password")
	fs.stringVar(&t.Username, "username", "ADMIN_USERNAME", "admin", "user to log in as when no --token is given")
	fs.stringVar(&t.Password, "password", "ADMIN_PASSWORD", "", "that user's password")
	fs.stringVar(&t.CPUProfile, "cpu-profile", "", "", "write the load generator's CPU profile (go tool pprof) to this file")
}

func (t *loadtestTarget) token(ctx context.Context) (string, error) {
	if err := loadtest.CheckLoopback(t.URL); err != nil {
		return "", err
	}
	if t.Token != "" {
		return t.Token, nil
	}
	body, _ := json.Marshal(map[string]string{"username": t.Username, "password": t.Password})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL+"/auth/login", strings.NewReader(string(body)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("loadtest: login: %w", err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("loadtest: login as %s: HTTP %d", t.Username, resp.StatusCode)
	}
	return tok.AccessToken, nil
}

func cmdLoadtest(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 || (args[0] != "ws" && args[0] != "rest") {
		fmt.Fprintln(e.stderr, "Usage: cryptostream loadtest ws|rest [flags]")
		return errors.New("loadtest: want ws or rest")
	}
	if args[0] == "rest" {
		return loadtestREST(ctx, args[1:], e)
	}
	return loadtestWS(ctx, args[1:], e)
}

func loadtestWS(ctx context.Context, args []string, e *env) error {
	var t loadtestTarget
	var cfg loadtest.WSConfig
	var natsURL, nkey, creds, extra string
	fs := newFlagSet("loadtest ws", "Opens --clients websocket clients to a running gateway on loopback, subscribes\nevery one to ticks of --busy and every --extra-every-th also to ticks of each\n--extra symbol, publishes --rate ticks/s on the busy channel and --extra-rate on\neach extra one through NATS (--nats-url), and reports delivered/s, the delay\nfrom publish time (p50, p99, max), closes by code, and the gateway's memory per\nconnection and CPU. --slow clients never read: they should be closed with 4008.\nMissing symbols are added to the assets bucket. It stops by itself.\n\nUsage: cryptostream loadtest ws [flags]", e)
	t.register(fs)
	fs.stringVar(&natsURL, "nats-url", "NATS_URL", "", "the running system's NATS (loopback), to publish the ticks; for run, <data-dir>/nats.url holds it")
	fs.stringVar(&nkey, "nats-nkey", "NATS_NKEY_FILE", "", "NKey user seed file to present (run's is <data-dir>/nats.nkey)")
	fs.stringVar(&creds, "nats-creds", "NATS_CREDS_FILE", "", "JWT credentials file to present")
	fs.intVar(&cfg.Clients, "clients", "", 1000, "healthy websocket clients")
	fs.intVar(&cfg.Slow, "slow", "", 0, "clients that subscribe and never read")
	fs.stringVar(&cfg.Busy, "busy", "", "BTC/USD", "the symbol every client follows")
	fs.stringVar(&extra, "extra", "", "ETH/USD,SOL/USD,ADA/USD,DOT/USD,XRP/USD,LTC/USD,LINK/USD,DOGE/USD,AVAX/USD,ATOM/USD", "comma-separated symbols one client in --extra-every follows too")
	fs.intVar(&cfg.ExtraEvery, "extra-every", "", 10, "one client in this many follows the --extra symbols")
	fs.Float64Var(&cfg.Rate, "rate", 20, "ticks/s on the busy channel")
	fs.Float64Var(&cfg.ExtraRate, "extra-rate", 2, "ticks/s on each extra channel")
	fs.durationVar(&cfg.Warmup, "warmup", "", 5*time.Second, "publishing before the measured window")
	fs.durationVar(&cfg.Duration, "duration", "", 20*time.Second, "the measured window")
	fs.durationVar(&cfg.Drain, "drain", "", 2*time.Second, "wait for the last events after the window")
	fs.durationVar(&cfg.PollGap, "poll-gap", "", 0, "after an epoll poll that found fewer than 64 sockets ready, sleep this long before the next (less generator CPU, later reads; 0: none)")
	fs.intVar(&cfg.Resumers, "resumers", "", 100, "more clients, on the busy ticks and on candles of --resume-symbol, that each drop once in the window and resume with since; the report counts their gaps and duplicates")
	fs.stringVar(&cfg.ResumeSymbol, "resume-symbol", "", loadtest.DefaultResumeSymbol, "the symbol whose candles the resumers follow (synthetic bars a million minutes back are published on it)")
	fs.Float64Var(&cfg.CandleRate, "candle-rate", 2, "candles/s on --resume-symbol while there are resumers")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := loadtest.CheckLoopback(natsURL); err != nil {
		return fmt.Errorf("--nats-url: %w", err)
	}
	for _, s := range strings.Split(extra, ",") {
		if s = strings.TrimSpace(s); s != "" {
			sym, err := streams.NormalizeSymbol(s)
			if err != nil {
				return fmt.Errorf("--extra: %w", err)
			}
			cfg.Extra = append(cfg.Extra, sym)
		}
	}
	busy, err := streams.NormalizeSymbol(cfg.Busy)
	if err != nil {
		return fmt.Errorf("--busy: %w", err)
	}
	cfg.Busy = busy
	if cfg.ResumeSymbol, err = streams.NormalizeSymbol(cfg.ResumeSymbol); err != nil {
		return fmt.Errorf("--resume-symbol: %w", err)
	}
	if cfg.Resumers < 0 || cfg.Resumers > 10_000 || cfg.CandleRate < 0 || cfg.CandleRate > 1000 {
		return errors.New("loadtest: want --resumers in [0, 10000] and --candle-rate in [0, 1000]")
	}
	if cfg.Clients < 1 || cfg.Duration <= 0 || cfg.Duration > time.Hour || cfg.Rate < 0 || cfg.Rate > 10_000 {
		return errors.New("loadtest: want --clients ≥ 1, --duration in (0, 1h], --rate in [0, 10000]")
	}
	cfg.URL, cfg.MetricsURL = t.URL, t.MetricsURL
	if cfg.Token, err = t.token(ctx); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := bus.Open(ctx, bus.Config{URL: natsURL, Replicas: 1, Name: "cryptostream-loadtest", NKeyFile: nkey, CredsFile: creds}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	kv, err := b.JS.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		return fmt.Errorf("loadtest: assets bucket: %w", err)
	}
	if err := loadtest.Track(ctx, kv, append([]string{cfg.Busy, cfg.ResumeSymbol}, cfg.Extra...)); err != nil {
		return err
	}
	// The whole run is bounded: warm-up, window, drain and the slow
	// clients' final read, plus connecting.
	ctx, cancel := context.WithTimeout(ctx, cfg.Warmup+cfg.Duration+cfg.Drain+5*time.Minute)
	defer cancel()
	var res loadtest.WSResult
	err = withCPUProfile(t.CPUProfile, func() (err error) {
		res, err = loadtest.RunWS(ctx, cfg, b.JS)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "loadtest ws: %d clients (+%d slow), busy %s at %g/s, %d extra at %g/s each for 1 in %d, %s measured\n%s\n",
		cfg.Clients, cfg.Slow, cfg.Busy, cfg.Rate, len(cfg.Extra), cfg.ExtraRate, cfg.ExtraEvery, cfg.Duration, res)
	return nil
}

func loadtestREST(ctx context.Context, args []string, e *env) error {
	var t loadtestTarget
	var cfg loadtest.RESTConfig
	fs := newFlagSet("loadtest rest", "Asks a running gateway on loopback for --path with --concurrency keep-alive\nclients and reports requests/s, latency (p50, p99, max), answers by status and\nthe gateway's CPU. It stops by itself.\n\nUsage: cryptostream loadtest rest [flags]", e)
	t.register(fs)
	fs.stringVar(&cfg.Path, "path", "", "/crypto/asset_latest/BTC-USD", "the route to ask for")
	fs.intVar(&cfg.Concurrency, "concurrency", "", 64, "concurrent keep-alive clients")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: requests/s offered in all, each one's latency from when it was due (0: closed loop, each client asks again when answered)")
	fs.durationVar(&cfg.Warmup, "warmup", "", 2*time.Second, "requests before the measured window")
	fs.durationVar(&cfg.Duration, "duration", "", 10*time.Second, "the measured window")
	if err := fs.parse(args); err != nil {
		return err
	}
	if cfg.Concurrency < 1 || cfg.Concurrency > 10_000 || cfg.Duration <= 0 || cfg.Duration > time.Hour || cfg.Rate < 0 || cfg.Rate > 1_000_000 {
		return errors.New("loadtest: want --concurrency in [1, 10000], --duration in (0, 1h] and --rate in [0, 1000000]")
	}
	cfg.URL, cfg.MetricsURL = t.URL, t.MetricsURL
	var err error
	if cfg.Token, err = t.token(ctx); err != nil {
		return err
	}
	var res loadtest.RESTResult
	err = withCPUProfile(t.CPUProfile, func() (err error) {
		res, err = loadtest.RunREST(ctx, cfg)
		return err
	})
	if err != nil {
		return err
	}
	mode := "closed loop"
	if cfg.Rate > 0 {
		mode = fmt.Sprintf("open loop at %g req/s", cfg.Rate)
	}
	fmt.Fprintf(e.stdout, "loadtest rest: GET %s, %d clients, %s, %s measured\n%s\n", cfg.Path, cfg.Concurrency, mode, cfg.Duration, res)
	return nil
}
