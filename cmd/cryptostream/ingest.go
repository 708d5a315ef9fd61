package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"cryptostream/bus"
	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// ingestFlags are the ingester's settings, shared by `ingest` and `run`.
type ingestFlags struct {
	WSURL     string
	RESTURL   string
	Assets    string
	Intervals string
	Demo      bool
	DemoSpeed float64
	symbols   []string
	intervals []streams.Interval
}

func (f *ingestFlags) register(fs *flagSet) {
	fs.stringVar(&f.WSURL, "kraken-ws-url", "KRAKEN_WS_URL", ingest.DefaultWSURL, "Kraken WebSocket v2 URL")
	fs.stringVar(&f.RESTURL, "kraken-rest-url", "KRAKEN_REST_URL", ingest.DefaultRESTURL, "Kraken REST base URL")
	fs.stringVar(&f.Assets, "assets", "ASSETS", "BTC/USD", "comma-separated pairs that seed the assets bucket when it is empty")
	fs.stringVar(&f.Intervals, "intervals", "INTERVALS", "1m", "comma-separated candle intervals, one Kraken connection each (1m,5m,15m,30m,1h,4h,1d)")
	fs.boolVar(&f.Demo, "demo", "DEMO", false, "start krakensim in process on the embedded recording and ingest from it (no network needed)")
	fs.float64Var(&f.DemoSpeed, "demo-speed", "DEMO_SPEED", defaultSimSpeed, "market seconds per second of the --demo replay (1: real time, as krakensim)")
}

// defaultSimSpeed is the replay speed of krakensim and of run --demo: real
// time, so that a demo looks live and stores no candle from the future.
const defaultSimSpeed = 1.0

// demoURL stands for krakensim's address in the start-up log: the demo
// never reaches the real Kraken, whose URLs are the flags' defaults.
const demoURL = "(krakensim in process)"

// LogValue logs the ingester's settings.
func (f ingestFlags) LogValue() slog.Value {
	ws, rest := f.WSURL, f.RESTURL
	if f.Demo {
		ws, rest = demoURL, demoURL
	}
	return slog.GroupValue(
		slog.String("ws_url", ws), slog.String("rest_url", rest),
		slog.Any("assets", f.symbols), slog.String("intervals", f.Intervals),
		slog.Bool("demo", f.Demo), slog.Float64("demo_speed", f.DemoSpeed),
	)
}

func (f *ingestFlags) validate() error {
	f.symbols, f.intervals = nil, nil
	for _, s := range strings.Split(f.Assets, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		sym, err := streams.NormalizeSymbol(s)
		if err != nil {
			return fmt.Errorf("--assets: %w", err)
		}
		f.symbols = append(f.symbols, sym)
	}
	for _, s := range strings.Split(f.Intervals, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		iv, err := streams.ParseInterval(s)
		if err != nil {
			return fmt.Errorf("--intervals: %w", err)
		}
		f.intervals = append(f.intervals, iv)
	}
	if len(f.intervals) == 0 {
		return errors.New("--intervals: none given")
	}
	if f.DemoSpeed <= 0 {
		return fmt.Errorf("--demo-speed %v: must be positive", f.DemoSpeed)
	}
	return nil
}

// demoSim is krakensim on the embedded recording, on a loopback port.
type demoSim struct {
	feed krakensim.Feed
	sim  *krakensim.Server
	srv  *http.Server
	ln   net.Listener
}

func startDemoSim(speed float64, log *slog.Logger) (*demoSim, error) {
	feed, err := krakensim.DemoFeed()
	if err != nil {
		return nil, err
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: speed, Shift: true, Log: log,
		Start: demoStart(feed, time.Now())})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("krakensim listen: %w", err)
	}
	log.Info("demo: krakensim serving the embedded BTC/USD recording", "addr", ln.Addr().String(), "speed", speed)
	return &demoSim{feed: feed, sim: sim, srv: &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}, ln: ln}, nil
}

// demoSeedDays is how much of the recording comes before the replay: what
// the predictor's volatility model needs to publish calibrated intervals
// at once (two days of warm-up, then scored outcomes; the 60-minute
// calibration window, 8 days, is part filled and fills as the demo runs).
const demoSeedDays = 5

// demoStart is the data time the demo's replay begins at: the present time
// of day, demoSeedDays after the recording's first day, so that its
// history before the replay seeds the volatility model.
func demoStart(f krakensim.Feed, now time.Time) time.Time {
	now = now.UTC()
	day := f.Rows[0].Start.UTC().Truncate(24*time.Hour).AddDate(0, 0, demoSeedDays)
	return day.Add(now.Sub(now.Truncate(24 * time.Hour)))
}

// Seed implements predictor.Seeder with the recording before the replay,
// at the times krakensim serves it: candles of the recorded symbol and
// interval that start before before and before the replay, never one the
// replay has yet to serve.
func (d *demoSim) Seed(symbol string, iv streams.Interval, before time.Time) []predictor.SeedCandle {
	if symbol != d.feed.Symbol || iv != d.feed.Interval {
		return nil
	}
	shift := d.sim.Shift()
	var out []predictor.SeedCandle
	for _, r := range d.feed.Rows {
		at := r.Start.Add(shift)
		if !r.Start.Before(d.sim.Start()) || !at.Before(before) {
			break
		}
		out = append(out, predictor.SeedCandle{Start: at, Close: r.Close})
	}
	return out
}

func (d *demoSim) urls() (ws, rest string) {
	return "ws://" + d.ln.Addr().String() + "/v2", "http://" + d.ln.Addr().String()
}

// Run serves until ctx ends.
func (d *demoSim) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := d.srv.Serve(d.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error { return d.sim.Run(gctx) })
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		d.srv.Shutdown(sctx)
		d.srv.Close() // hijacked websockets are not closed by Shutdown
		return nil
	})
	return g.Wait()
}

// newIngestWorker seeds the assets bucket and builds the ingester on b.
func newIngestWorker(ctx context.Context, b *bus.Bus, f ingestFlags, reg prometheus.Registerer, log *slog.Logger) (*ingest.Worker, error) {
	kv, err := b.JS.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		return nil, fmt.Errorf("assets bucket: %w", err)
	}
	assets := &ingest.KVAssets{KV: kv, Log: log}
	if err := assets.Seed(ctx, f.symbols, time.Now()); err != nil {
		return nil, err
	}
	// Active/standby: of several ingesters on one bus, one publishes.
	leases, err := b.JS.KeyValue(ctx, streams.BucketLeases)
	if err != nil {
		return nil, fmt.Errorf("leases bucket: %w", err)
	}
	return ingest.New(ingest.Config{WSURL: f.WSURL, RESTURL: f.RESTURL, Intervals: f.intervals},
		ingest.Deps{Sink: &ingest.JetStreamSink{JS: b.JS, Log: log}, Assets: assets, Log: log, Registry: reg, Leases: leases})
}
