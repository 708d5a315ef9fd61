package backtest_test

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/backtest"
	"cryptostream/datatest"
	"cryptostream/features"
	"cryptostream/natstest"
	"cryptostream/predictor"
	"cryptostream/registry"
	"cryptostream/streams"
)

// reversal bets on a fifth of the last minute's move coming back.
var reversal = streams.ModelRecord{ID: "m-reversal", Symbol: symbol, Interval: streams.Interval1m, Horizon: 1,
	Features: []string{"ret_1"}, Coefficients: []float64{0, -0.2},
	TrainTo: time.Date(2023, 2, 1, 0, 0, 0, 0, time.UTC), Champion: true}

func count(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestParityWithLiveWorkers: the live features and predictor workers run
// over the first 6,000 recorded minutes (gaps included) on an embedded
// JetStream with a champion in the registry; the backtest over the same
// range with the same model finds every prediction equal, value for value:
// the point forecasts, every horizon's intervals and their coverage.
func TestParityWithLiveWorkers(t *testing.T) {
	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	ctx := t.Context()
	if err := streams.Ensure(ctx, js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	models, err := registry.OpenModels(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if err := models.Put(ctx, reversal); err != nil {
		t.Fatal(err)
	}
	if err := models.Promote(ctx, reversal.Interval, symbol, reversal.ID, registry.Champion{}); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	fw, err := features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: js, Log: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	pw, err := predictor.New(predictor.Config{}, predictor.Deps{JS: js, Log: log, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	for _, w := range []interface{ Run(context.Context) error }{fw, pw} {
		go func() { done <- w.Run(wctx) }()
	}
	t.Cleanup(func() {
		stop()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	})

	cs := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, symbol, streams.Interval1m, 6000)
	for i := range cs {
		if _, err := streams.Publish(ctx, js, &cs[i]); err != nil {
			t.Fatal(err)
		}
	}
	_, rep, err := backtest.Execute(ctx, backtest.Request{Symbol: symbol, Interval: streams.Interval1m,
		From: cs[0].Start, To: cs[len(cs)-1].Start, Model: reversal.ID}, backtest.Deps{JS: js, Models: models})
	if err != nil {
		t.Fatal(err)
	}
	run, err := backtest.Replay(ctx, backtest.Config{Symbol: symbol, Interval: streams.Interval1m, From: cs[0].Start, To: cs[len(cs)-1].Start, Model: &reversal},
		backtest.Market(ctx, js, streams.Interval1m, symbol, cs[0].Start.Add(-time.Hour)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Counts.Predictions != len(run.Predictions) || rep.Model != reversal.ID {
		t.Fatalf("Execute made %d predictions with %s, Replay %d", rep.Counts.Predictions, rep.Model, len(run.Predictions))
	}
	want := uint64(len(run.Predictions))
	natstest.WaitProgress(t, time.Minute, "the live predictions", func() (bool, string) {
		n := count(t, js, streams.StreamPredictions)
		return n >= want, fmt.Sprint(n)
	})
	msgs, err := streams.Tail(ctx, js, streams.StreamPredictions, streams.PredictionSubject(streams.Interval1m, symbol), int(want)+1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(run.Predictions) {
		t.Fatalf("%d live predictions, %d in the backtest", len(msgs), len(run.Predictions))
	}
	champion, ready := 0, 0
	for i, m := range msgs {
		live, err := streams.Decode[streams.Prediction](m.Data)
		if err != nil {
			t.Fatal(err)
		}
		bt := *run.Predictions[i]
		// The trace says when each stage ran, which differs by design.
		live.Trace, bt.Trace = nil, nil
		live.V, bt.V = 0, 0
		if !reflect.DeepEqual(live, bt) {
			t.Fatalf("prediction %d differs:\nlive     %+v\nbacktest %+v", i, live, bt)
		}
		if live.ModelID == reversal.ID {
			champion++
		}
		if len(live.Forecasts) > 0 && live.Forecasts[0].Ready {
			ready++
		}
	}
	// Both code paths were exercised: the champion's forecast and the
	// calibrated intervals after the volatility model's warm-up.
	if champion != len(msgs) || ready < 1000 {
		t.Fatalf("%d of %d predictions by the champion, %d with intervals", champion, len(msgs), ready)
	}
}
