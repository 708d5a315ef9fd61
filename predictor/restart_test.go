package predictor_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/forecast"
	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/predictor"
	"cryptostream/streams"
)

// randomWalk is n 1-minute candles of a random walk whose volatility
// drifts, with some minutes missing.
func randomWalk(n int, seed uint64) []streams.Candle {
	rng := rand.New(rand.NewPCG(seed, seed+7))
	start := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	price, logVol := 30000.0, math.Log(1e-3)
	var out []streams.Candle
	for i := 0; len(out) < n; i++ {
		logVol += 0.02*rng.NormFloat64() - 0.001*(logVol-math.Log(1e-3))
		open := price
		price *= math.Exp(math.Exp(logVol) * rng.NormFloat64())
		if rng.IntN(40) == 0 {
			continue
		}
		out = append(out, streams.Candle{Symbol: symbol, Interval: streams.Interval1m, Start: start.Add(time.Duration(i) * time.Minute),
			Open: open, High: math.Max(open, price), Low: math.Min(open, price), Close: price, Volume: 1, Trades: 5, Quality: streams.QualityImported})
	}
	return out
}

// vectorsOf is the default features of candles.
func vectorsOf(t *testing.T, candles []streams.Candle) []streams.FeatureVector {
	t.Helper()
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	series := features.NewSeries(calc)
	var vs []streams.FeatureVector
	for i, c := range candles {
		if v, o := series.Add(c, uint64(i+1)); o == features.Computed {
			vs = append(vs, v)
		}
	}
	return vs
}

// featureMsgs is vs as FEATURES would deliver them, for pipeline.Replay.
func featureMsgs(t *testing.T, vs []streams.FeatureVector) []pipeline.Msg {
	t.Helper()
	msgs := make([]pipeline.Msg, len(vs))
	for i := range vs {
		m, err := streams.NewMsg(&vs[i])
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = pipeline.Msg{Stream: streams.StreamFeatures, Subject: m.Subject, Seq: uint64(i + 1), Data: m.Data}
	}
	return msgs
}

// fastRedelivery shortens the consumers' AckWait and PinnedTTL: a killed
// client's batch comes back after AckWait and its pin is released after
// PinnedTTL; production waits 30s and 2m, a test need not.
func fastRedelivery(t *testing.T, js jetstream.JetStream, consumers ...string) {
	t.Helper()
	for _, name := range consumers {
		spec, _ := streams.Declare(1).Consumer(name)
		spec.Config.AckWait, spec.Config.BackOff, spec.Config.PinnedTTL = time.Second, nil, time.Second
		if _, err := js.CreateOrUpdateConsumer(t.Context(), spec.Stream, spec.Config); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForecastEveryCandleAcrossRestart: with no champion, the predictor
// publishes exactly one prediction per vector, every horizon ready with its
// intervals once the volatility model has warmed up, and killing it after
// the warm-up and restarting it on the rest changes nothing: each
// forecast is the one an uninterrupted volatility model makes, to the bit.
func TestForecastEveryCandleAcrossRestart(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	fastRedelivery(t, js, streams.ConsumerPredictor)
	vs := vectorsOf(t, randomWalk(3700, 5))
	cfg := forecast.DefaultConfig(time.Minute)
	ref, err := forecast.NewSeries(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := map[time.Time][]forecast.Forecast{}
	for _, v := range vs {
		st, err := ref.Add(v.Start, v.Close, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The step's slices are the series' own until the next Add.
		fs := append([]forecast.Forecast(nil), st.Forecasts...)
		for i := range fs {
			fs[i].Intervals = append([]forecast.Interval(nil), fs[i].Intervals...)
		}
		want[v.Start] = fs
	}
	startPredictor := func() *instance {
		return start(t, s, func(js jetstream.JetStream, reg *prometheus.Registry) interface{ Run(context.Context) error } {
			w, err := predictor.New(predictor.Config{}, predictor.Deps{JS: js, Log: discard, Registry: reg})
			if err != nil {
				t.Fatal(err)
			}
			return w
		})
	}
	publish := func(vs []streams.FeatureVector) {
		for _, v := range vs {
			if _, err := streams.Publish(ctx, js, &v); err != nil {
				t.Fatal(err)
			}
		}
	}
	const stall = time.Minute
	pred := startPredictor()
	cut := 3300
	if !want[vs[cut-300].Start][2].Ready {
		t.Fatal("the kill would come before the warm-up: the restart would not have to restore a warm model")
	}
	publish(vs[:cut])
	natstest.WaitProgress(t, stall, "predictions past the warm-up", func() (bool, string) {
		_, n := predictionsByStart(t, js)
		return n >= cut-200, fmt.Sprint(n)
	})
	pred.kill()
	publish(vs[cut:])
	startPredictor()
	natstest.WaitProgress(t, stall, "a prediction for every vector", func() (bool, string) {
		got, n := predictionsByStart(t, js)
		return len(got) >= len(vs), fmt.Sprint(n)
	})
	got, stored := predictionsByStart(t, js)
	if stored != len(vs) || len(got) != len(vs) {
		t.Fatalf("%d predictions stored for %d vectors: want exactly one each", stored, len(vs))
	}
	ready := 0
	for _, v := range vs {
		ps := got[v.Start]
		if len(ps) != 1 || len(ps[0].Forecasts) != len(cfg.Horizons) {
			t.Fatalf("at %s: %+v", v.Start, ps)
		}
		warm := v.Start.Sub(vs[0].Start) >= time.Duration(cfg.Warmup)*time.Minute
		for k, f := range ps[0].Forecasts {
			w := want[v.Start][k]
			if f.Model != streams.ModelNoChange || f.Horizon != w.Horizon || f.Ready != w.Ready || (w.Ready && (f.Sigma != w.Sigma || f.VolatilityModel != w.Model)) {
				t.Fatalf("at %s horizon %d: published %+v, the uninterrupted model says %+v", v.Start, w.Horizon, f, w)
			}
			if warm && (!f.Ready || len(f.Intervals) != 2 || !(f.Intervals[0].Lower < v.Close && v.Close < f.Intervals[0].Upper)) {
				t.Fatalf("after the warm-up, at %s horizon %d: %+v", v.Start, f.Horizon, f)
			}
			for j, in := range f.Intervals {
				lo, up := v.Close*math.Exp(w.Intervals[j].Lower), v.Close*math.Exp(w.Intervals[j].Upper)
				if in.Level != w.Intervals[j].Level || math.Abs(in.Lower-lo) > 1e-9*lo || math.Abs(in.Upper-up) > 1e-9*up {
					t.Fatalf("at %s horizon %d: interval %+v, want [%v, %v]", v.Start, f.Horizon, in, lo, up)
				}
			}
		}
		if warm {
			ready++
		}
	}
	if ready < 300 {
		t.Fatalf("only %d candles after the warm-up", ready)
	}
}
