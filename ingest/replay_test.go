package ingest_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

// testLog logs to the test output when -v is given with INGEST_TEST_LOG=1.
func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("INGEST_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// bench is an embedded JetStream with the topology and the assets seeded.
type harness struct {
	srv    *server.Server
	js     jetstream.JetStream
	kv     jetstream.KeyValue
	market jetstream.Stream
	sim    *krakensim.Server
	wsURL  string
	rest   string
}

func newHarness(t *testing.T, cfg krakensim.Config) *harness {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, streams.BucketAssets)
	if err != nil {
		t.Fatal(err)
	}
	market, err := js.Stream(ctx, streams.StreamMarket)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{srv: srv, js: js, kv: kv, market: market}
	if cfg.Feeds != nil {
		sim, err := krakensim.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		url := newSimServer(t, sim)
		h.sim, h.rest, h.wsURL = sim, url, "ws"+strings.TrimPrefix(url, "http")+"/v2"
	}
	return h
}

// newSimServer serves sim on a loopback port and runs its replay until the
// test ends; it returns the base URL.
func newSimServer(t testing.TB, sim *krakensim.Server) string {
	hs := httptest.NewServer(sim)
	simCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { sim.Run(simCtx) })
	t.Cleanup(func() { cancel(); hs.CloseClientConnections(); hs.Close(); wg.Wait() })
	return hs.URL
}

func (h *harness) addAsset(t *testing.T, sym string) {
	t.Helper()
	b, _ := json.Marshal(streams.Asset{Schema: streams.Schema{V: 1}, Symbol: sym, AddedAt: time.Now()})
	if _, err := h.kv.Put(t.Context(), streams.AssetKey(sym), b); err != nil {
		t.Fatal(err)
	}
}

// startWorker runs an ingester against the harness until the test ends.
func (h *harness) startWorker(t *testing.T, cfg ingest.Config) *prometheus.Registry {
	t.Helper()
	return h.startWorkerWith(t, cfg, &ingest.JetStreamSink{JS: h.js})
}

// startWorkerWith is startWorker storing through sink.
func (h *harness) startWorkerWith(t *testing.T, cfg ingest.Config, sink ingest.Sink) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.WSURL, cfg.RESTURL = h.wsURL, h.rest
	w, err := ingest.New(cfg, ingest.Deps{
		Sink:     sink,
		Assets:   &ingest.KVAssets{KV: h.kv},
		Log:      testLog(t),
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	return reg
}

// stored reads every candle of a series from MARKET, in stream order.
func (h *harness) stored(t *testing.T, iv streams.Interval, sym string) []streams.Candle {
	t.Helper()
	ctx := t.Context()
	info, err := h.market.Info(ctx, jetstream.WithSubjectFilter(streams.CandleSubject(iv, sym)))
	if err != nil {
		t.Fatal(err)
	}
	n := info.State.Subjects[streams.CandleSubject(iv, sym)]
	if n == 0 {
		return nil
	}
	cons, err := h.market.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.CandleSubject(iv, sym)}})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]streams.Candle, 0, n)
	batch, err := cons.FetchNoWait(int(n))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		c, err := streams.Decode[streams.Candle](m.Data())
		if err != nil {
			t.Fatalf("stored candle: %v", err)
		}
		out = append(out, c)
	}
	for uint64(len(out)) < n {
		more, err := cons.Fetch(int(n)-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range more.Messages() {
			c, err := streams.Decode[streams.Candle](m.Data())
			if err != nil {
				t.Fatalf("stored candle: %v", err)
			}
			out = append(out, c)
			got++
		}
		if got == 0 {
			t.Fatalf("read %d of %d stored candles", len(out), n)
		}
	}
	return out
}

func (h *harness) lastStored(t *testing.T, iv streams.Interval, sym string) (streams.Candle, bool) {
	c, ok, err := (&ingest.JetStreamSink{JS: h.js}).LastCandle(t.Context(), iv, sym)
	if err != nil {
		t.Fatal(err)
	}
	return c, ok
}

// expectedGrid is the recording after the empty-interval policy, by start.
func expectedGrid(t *testing.T, f krakensim.Feed) map[time.Time]streams.Candle {
	t.Helper()
	cs := make([]streams.Candle, len(f.Rows))
	for i, r := range f.Rows {
		cs[i] = streams.Candle{Symbol: f.Symbol, Interval: f.Interval, Start: r.Start, Open: r.Open, High: r.High,
			Low: r.Low, Close: r.Close, Volume: r.Volume, Trades: r.Trades}
	}
	out := map[time.Time]streams.Candle{}
	for _, c := range ingest.Regularize(nil, cs) {
		out[c.Start] = c
	}
	return out
}

func sameValues(a, b streams.Candle) bool {
	return a.Open == b.Open && a.High == b.High && a.Low == b.Low && a.Close == b.Close && a.Volume == b.Volume && a.Trades == b.Trades
}

// TestReplayWithFaults replays a real day of Kraken XBT/USD through
// krakensim with every fault injected in turn and checks that MARKET holds
// exactly the recording: each candle of the grid once, in order, with the
// recorded values.
func TestReplayWithFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("replays a day of data")
	}
	feed, err := krakensim.DemoFeed()
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: 3000, MaxUpdatesPerCandle: 4,
		Heartbeat: 100 * time.Millisecond, IdleTimeout: 10 * time.Second})
	h.addAsset(t, "BTC/USD")
	reg := h.startWorker(t, ingest.Config{
		Grace: 2 * time.Second, PingEvery: time.Second, ReadTimeout: 700 * time.Millisecond,
		SubscriptionTimeout: 500 * time.Millisecond, SubscribePace: 20 * time.Millisecond,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, MaintenanceBackoff: 100 * time.Millisecond,
		RESTInterval: 5 * time.Millisecond, HealRetry: 50 * time.Millisecond, MaxHealAttempts: 20,
	})

	start := h.sim.Start()
	day := start.Add(24 * time.Hour)
	metric := func(name string, labels map[string]string) func() float64 {
		return func() float64 { return opstest.Value(t, reg, name, labels) }
	}
	conns := func() float64 { return float64(h.sim.Connections()) }
	// Each fault is injected once the stored series reaches its time, and
	// the next one waits until this one's effect has been seen (a new
	// connection, a counter moved): on a busy machine the series can jump
	// past several fault times at once, and faults injected together
	// overwrite each other.
	faults := []struct {
		at       time.Duration // of market time after start
		name     string
		inject   func()
		evidence func() float64 // grows once the fault took effect
	}{
		{2 * time.Hour, "drop mid-candle", func() { h.sim.DropAfter(2) }, conns},
		{5 * time.Hour, "stall", func() { h.sim.Stall(1500 * time.Millisecond) }, conns},
		{8 * time.Hour, "silent subscription", func() { h.sim.SilenceNext(1); h.sim.DropAfter(1) },
			metric("cryptostream_ingest_silent_resubscribes_total", nil)},
		{11 * time.Hour, "malformed frames", func() { h.sim.MalformNext(3) },
			metric("cryptostream_ingest_rejected_total", map[string]string{"reason": "malformed"})},
		{14 * time.Hour, "rate limit", func() { h.sim.RateLimitNext(1); h.sim.DropAfter(1) },
			metric("cryptostream_ingest_rejected_total", map[string]string{"reason": "rate_limited"})},
		{17 * time.Hour, "REST throttled", func() { h.sim.RESTRateLimitNext(2); h.sim.DropAfter(1) }, conns},
		{20 * time.Hour, "maintenance", func() {
			h.sim.SetSystemStatus("maintenance")
			time.AfterFunc(300*time.Millisecond, func() { h.sim.SetSystemStatus("online") })
		}, conns},
	}
	stored := func() time.Time {
		last, _ := h.lastStored(t, streams.Interval1m, "BTC/USD")
		return last.Start
	}
	for _, f := range faults {
		natstest.WaitProgress(t, 3*time.Minute, "candles up to the "+f.name, func() (bool, string) {
			s := stored()
			return !s.Before(start.Add(f.at)), s.String()
		})
		before := f.evidence()
		t.Logf("injecting %s at %s", f.name, stored())
		f.inject()
		natstest.WaitFor(t, 3*time.Minute, "the effect of the "+f.name, func() bool { return f.evidence() > before })
	}
	natstest.WaitProgress(t, 3*time.Minute, "a day of candles in MARKET", func() (bool, string) {
		s := stored()
		return !s.Before(day), s.String()
	})
	if conns := h.sim.Connections(); conns < 7 {
		t.Errorf("only %d connections: the faults did not force reconnects", conns)
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"cryptostream_ingest_rejected_total", map[string]string{"reason": "malformed"}, 3},
		{"cryptostream_ingest_rejected_total", map[string]string{"reason": "rate_limited"}, 1},
		{"cryptostream_ingest_silent_resubscribes_total", nil, 1},
		{"cryptostream_ingest_reconnects_total", nil, 4},
		{"cryptostream_ingest_gaps_healed_total", nil, 5},
	} {
		if got := opstest.Value(t, reg, c.name, c.labels); got < c.min {
			t.Errorf("%s%v = %v, want at least %v", c.name, c.labels, got, c.min)
		}
	}

	want := expectedGrid(t, feed)
	got := h.stored(t, streams.Interval1m, "BTC/USD")
	first := got[0].Start
	if first.After(start) {
		t.Fatalf("first stored candle %s is after the replay start %s: the initial heal did not backfill", first, start)
	}
	seen := map[time.Time]bool{}
	qualities := map[streams.Quality]int{}
	for i, c := range got {
		if seen[c.Start] {
			t.Errorf("candle %s stored twice", c.Start)
		}
		seen[c.Start] = true
		if i > 0 && !c.Start.Equal(got[i-1].Start.Add(time.Minute)) {
			t.Errorf("candle %d at %s follows %s: not the next minute", i, c.Start, got[i-1].Start)
		}
		w, ok := want[c.Start]
		if !ok {
			t.Errorf("candle %s is not in the recording", c.Start)
			continue
		}
		if !sameValues(c, w) {
			t.Errorf("candle %s (%s) = %+v, recording has %+v", c.Start, c.Quality, c, w)
		}
		if (c.Quality == streams.QualityFilled) != (w.Quality == streams.QualityFilled) {
			t.Errorf("candle %s quality %s, recording says filled=%v", c.Start, c.Quality, w.Quality == streams.QualityFilled)
		}
		qualities[c.Quality]++
	}
	t.Logf("%d candles from %s to %s: %v; %d connections", len(got), first, got[len(got)-1].Start, qualities, h.sim.Connections())
	if qualities[streams.QualityLive] == 0 || qualities[streams.QualityBackfilled] == 0 {
		t.Errorf("want live and backfilled candles, got %v", qualities)
	}
}
