package predictor_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/natstest"
	"cryptostream/ops"
	"cryptostream/ops/opstest"
	"cryptostream/predictor"
	"cryptostream/registry"
	"cryptostream/streams"
	"cryptostream/trainer"
)

const symbol = "BTC/USD"

// meanReverting returns 1-minute candles whose log returns follow
// r[t] = -0.4 r[t-1] + noise, with some minutes missing: a pattern ret_1
// exposes, so a trained model is promoted and predictions flow.
func meanReverting(n int, seed uint64) []streams.Candle {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	price, r := 40000.0, 0.0
	var out []streams.Candle
	for i := 0; len(out) < n; i++ {
		r = -0.4*r + 0.001*rng.NormFloat64()
		open := price
		price *= math.Exp(r)
		if rng.IntN(50) == 0 {
			continue // no trade this minute
		}
		hi, lo := math.Max(open, price)*1.0002, math.Min(open, price)*0.9998
		out = append(out, streams.Candle{Symbol: symbol, Interval: streams.Interval1m, Start: start.Add(time.Duration(i) * time.Minute),
			Open: open, High: hi, Low: lo, Close: price, Volume: 1 + rng.Float64(), Trades: 10, Quality: streams.QualityImported})
	}
	return out
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// instance is one running worker on its own connection, so that killing
// the connection kills the worker the way a crashed process would.
type instance struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
	reg    *prometheus.Registry
}

func connect(t *testing.T, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func start(t *testing.T, s *server.Server, build func(js jetstream.JetStream, reg *prometheus.Registry) interface {
	Run(context.Context) error
}) *instance {
	t.Helper()
	nc, js := connect(t, s)
	in := &instance{nc: nc, done: make(chan error, 1), reg: prometheus.NewRegistry()}
	w := build(js, in.reg)
	ctx, cancel := context.WithCancel(t.Context())
	in.cancel = cancel
	go func() { in.done <- w.Run(ctx) }()
	t.Cleanup(in.stop)
	return in
}

func (in *instance) stop() {
	if in.cancel == nil {
		return
	}
	in.cancel()
	<-in.done
	in.cancel = nil
}

// kill drops the connection without draining or acking, then lets Run
// return: what the server sees is a client that vanished mid-stream.
func (in *instance) kill() {
	in.nc.Close()
	in.stop()
}

func predictionsByStart(t *testing.T, js jetstream.JetStream) (map[time.Time][]streams.Prediction, int) {
	t.Helper()
	msgs, err := streams.Tail(t.Context(), js, streams.StreamPredictions, streams.PredictionSubject(streams.Interval1m, symbol), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[time.Time][]streams.Prediction{}
	for _, m := range msgs {
		p, err := streams.Decode[streams.Prediction](m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[p.Start] = append(out[p.Start], p)
	}
	return out, len(msgs)
}

// TestEndToEnd: candles in, vectors out, a model trained and promoted,
// predictions published and scored; the features and predictor workers are
// killed mid-stream and restarted, and every candle after the champion
// still has exactly one prediction.
func TestEndToEnd(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	fastRedelivery(t, js, streams.ConsumerFeatures, streams.ConsumerPredictor)

	health := ops.NewHealth()
	startFeatures := func() *instance {
		return start(t, s, func(js jetstream.JetStream, reg *prometheus.Registry) interface{ Run(context.Context) error } {
			w, err := features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: js, Log: discard, Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			return w
		})
	}
	startPredictor := func(h *ops.Health) *instance {
		return start(t, s, func(js jetstream.JetStream, reg *prometheus.Registry) interface{ Run(context.Context) error } {
			w, err := predictor.New(predictor.Config{FlushEvery: 20, LiveWindow: 1000}, predictor.Deps{JS: js, Log: discard, Registry: reg, Health: h})
			if err != nil {
				t.Fatal(err)
			}
			return w
		})
	}
	start(t, s, func(js jetstream.JetStream, reg *prometheus.Registry) interface{ Run(context.Context) error } {
		w, err := trainer.New(trainer.Config{Horizon: 1, Split: trainer.Split{TrainSize: 800, TestSize: 300, Folds: 2, Gap: 2}},
			trainer.Deps{JS: js, Log: discard, Registry: reg})
		if err != nil {
			t.Fatal(err)
		}
		return w
	})
	feat := startFeatures()
	pred := startPredictor(health)

	candles := meanReverting(2400, 11)
	var seqMu sync.Mutex
	seqs := map[time.Time]uint64{}
	publish := func(cs []streams.Candle) {
		for _, c := range cs {
			c.Trace = streams.Trace{}.Stamp("ingest", time.Now())
			ack, err := streams.Publish(ctx, js, &c)
			if err != nil {
				t.Error(err)
				return
			}
			seqMu.Lock()
			seqs[c.Start] = ack.Sequence
			seqMu.Unlock()
		}
	}
	vectors := func() uint64 {
		st, err := js.Stream(ctx, streams.StreamFeatures)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	// Before any champion: vectors flow, each with the no-change
	// forecast, and /readyz says why.
	warm := features.DefaultSpec().Lookback()
	publish(candles[:1700])
	// Every wait fails only when its figure stops moving for a minute:
	// the machine may be slow, the pipeline must not be stuck.
	const stall = time.Minute
	natstest.WaitProgress(t, stall, "vectors of the first candles", func() (bool, string) {
		n := vectors()
		return n >= uint64(1700-warm-1), fmt.Sprint(int(n))
	})
	natstest.WaitProgress(t, stall, "no_champion outcomes", func() (bool, string) {
		handled := opstest.Value(t, pred.reg, "cryptostream_predictor_vectors_total", nil)
		return opstest.Value(t, pred.reg, "cryptostream_predictor_vectors_total", map[string]string{"outcome": "no_champion"}) > 0, fmt.Sprint(int(handled))
	})
	natstest.WaitProgress(t, stall, "a no-change forecast per vector", func() (bool, string) {
		_, n := predictionsByStart(t, js)
		return n >= int(vectors()), fmt.Sprint(n)
	})
	noChange, _ := predictionsByStart(t, js)
	for start, ps := range noChange {
		if len(ps) != 1 || ps[0].Model != streams.ModelNoChange || ps[0].ModelID != streams.ModelNoChange || ps[0].LogReturn != 0 || len(ps[0].Forecasts) != 3 {
			t.Fatalf("before any champion, at %s: %+v", start, ps)
		}
	}
	if d := health.Evaluate(ctx).Details["predictor"]; !strings.Contains(d, "no champion") {
		t.Fatalf("readyz detail %q", d)
	}

	job := streams.Job{ID: "e2e-train", Kind: streams.JobTrain, Symbol: symbol, Interval: streams.Interval1m, RequestedAt: time.Now()}
	if err := registry.Submit(ctx, js, &job); err != nil {
		t.Fatal(err)
	}
	reg, err := js.KeyValue(ctx, streams.BucketModelRegistry)
	if err != nil {
		t.Fatal(err)
	}
	jobsKV, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		t.Fatal(err)
	}
	// The job's status revisions are its progress: queued, running, done.
	natstest.WaitProgress(t, stall, "a champion", func() (bool, string) {
		rev := 0
		if e, err := jobsKV.Get(ctx, job.ID); err == nil {
			rev = int(e.Revision())
		}
		_, err := reg.Get(ctx, streams.ChampionKey(streams.Interval1m, symbol))
		return err == nil, fmt.Sprint(rev)
	})
	natstest.WaitProgress(t, stall, "the predictor to load the champion", func() (bool, string) {
		return opstest.Value(t, pred.reg, "cryptostream_predictor_champion_swaps_total", nil) >= 1, fmt.Sprint(0)
	})

	// Stream the rest, killing both workers mid-stream (while candles are
	// still arriving and being handled) and restarting them; the last
	// candles come while they are down, so the new instances have work
	// whatever the timing.
	from, down := 1700, 2100
	done := make(chan struct{})
	go func() { defer close(done); publish(candles[from:down]) }()
	natstest.WaitProgress(t, stall, "predictions to start", func() (bool, string) {
		_, n := predictionsByStart(t, js)
		return n >= 100, fmt.Sprint(n)
	})
	feat.kill()
	pred.kill()
	<-done
	publish(candles[down:])
	health2 := ops.NewHealth()
	feat = startFeatures()
	pred = startPredictor(health2)

	want := len(candles) - warm
	// Progress is anything stored down the chain; the restarted workers
	// first wait for the killed ones' batches to come back.
	natstest.WaitProgress(t, stall, "a prediction for every vector", func() (bool, string) {
		got, n := predictionsByStart(t, js)
		return len(got) >= want && len(got) >= int(vectors()), fmt.Sprint(n + int(vectors()))
	})
	got, stored := predictionsByStart(t, js)
	if stored != len(got) || len(got) != int(vectors()) {
		t.Fatalf("%d predictions stored for %d vectors: want exactly one each", stored, vectors())
	}
	champ, err := reg.Get(ctx, streams.ChampionKey(streams.Interval1m, symbol))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range candles[from:] {
		ps := got[c.Start]
		if len(ps) != 1 {
			t.Fatalf("%d predictions at %s", len(ps), c.Start)
		}
		p := ps[0]
		if p.ModelID != string(champ.Value()) || p.Model != streams.ModelLinear || p.CandleSeq != seqs[c.Start] || p.Window[streams.QualityImported] == 0 || p.Close != c.Close {
			t.Fatalf("prediction at %s: %+v (candle seq %d)", c.Start, p, seqs[c.Start])
		}
		// The champion forecasts its horizon; the others are no-change.
		if len(p.Forecasts) != 3 || p.Forecasts[0].ModelID != p.ModelID || p.Forecasts[0].LogReturn != p.LogReturn ||
			p.Forecasts[1].Model != streams.ModelNoChange || p.Forecasts[2].Horizon != 60 || !(p.Lower <= p.PredictedClose && p.PredictedClose <= p.Upper) {
			t.Fatalf("forecasts at %s: %+v", c.Start, p.Forecasts)
		}
		for _, stage := range []string{"ingest", features.Stage, predictor.Stage} {
			if _, ok := p.Trace.At(stage); !ok {
				t.Fatalf("prediction at %s has no %s hop", c.Start, stage)
			}
		}
	}

	// Any prediction is reproduced exactly by replaying the candles through
	// the pure functions with the model it names.
	rec, _, err := registry.NewModels(reg).Get(ctx, string(champ.Value()))
	if err != nil {
		t.Fatal(err)
	}
	model, err := trainer.FromRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	series := features.NewSeries(calc)
	for _, c := range candles {
		v, o := series.Add(c, seqs[c.Start])
		if o != features.Computed || got[c.Start] == nil {
			continue
		}
		b, err := model.Bind(v.Names)
		if err != nil {
			t.Fatal(err)
		}
		replay, live := predictor.Forecast(rec, b, v, 1.96), got[c.Start][0]
		if live.ModelID != rec.ID {
			continue // before the champion: no-change
		}
		if replay.LogReturn != live.LogReturn || replay.PredictedClose != live.PredictedClose {
			t.Fatalf("replay at %s: %+v, live %+v", c.Start, replay, live)
		}
	}

	// Scored: the live figures reach the registry and Prometheus.
	natstest.WaitProgress(t, stall, "live metrics in the registry", func() (bool, string) {
		rec, _, err := registry.NewModels(reg).Get(ctx, string(champ.Value()))
		return err == nil && rec.Metrics["live"].N >= 20, fmt.Sprint(rec.Metrics["live"].N)
	})
	if n := opstest.Value(t, pred.reg, "cryptostream_predictor_prediction_abs_error", nil); n == 0 {
		t.Fatal("no scored prediction in the restarted predictor's histogram")
	}
	for _, in := range []*instance{feat, pred} {
		if opstest.Value(t, in.reg, "cryptostream_pipeline_latency_seconds", nil) == 0 {
			t.Fatal("no pipeline latency observed")
		}
	}
	if d := health2.Evaluate(ctx).Details["predictor"]; d != "" {
		t.Fatalf("readyz detail with a champion: %q", d)
	}
	// Stopping flushes the live figures: they cover every scored
	// prediction (all but the last, whose target has not come), those
	// scored before the kill included.
	pred.stop()
	rec, _, err = registry.NewModels(reg).Get(ctx, string(champ.Value()))
	if err != nil {
		t.Fatal(err)
	}
	if n, champs := rec.Metrics["live"].N, len(candles)-from; n != champs-1 {
		t.Fatalf("live figures over %d scores, want %d", n, champs-1)
	}
}
