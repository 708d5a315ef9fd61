package features_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/datatest"
	"cryptostream/features"
	"cryptostream/natstest"
	"cryptostream/ops/opstest"
	"cryptostream/streams"
)

func publishCandles(t *testing.T, js jetstream.JetStream, candles []streams.Candle) {
	t.Helper()
	for _, c := range candles {
		if _, err := streams.Publish(t.Context(), js, &c); err != nil {
			t.Fatal(err)
		}
	}
}

// startWorker runs a features worker with its own metrics registry until
// the returned stop is called.
func startWorker(t *testing.T, js jetstream.JetStream, reg *prometheus.Registry) (stop func()) {
	t.Helper()
	w, err := features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{
		JS: js, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func readVectors(t *testing.T, js jetstream.JetStream) []streams.FeatureVector {
	t.Helper()
	msgs, err := streams.Tail(t.Context(), js, streams.StreamFeatures, streams.FeaturesSubject(streams.Interval1m, "BTC/USD"), 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]streams.FeatureVector, 0, len(msgs))
	for _, m := range msgs {
		v, err := streams.Decode[streams.FeatureVector](m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// TestWorkerRestartSameVectors: a worker stopped halfway and a new one
// started on the rest publish exactly the vectors of one uninterrupted pass
// of the pure functions, once each.
func TestWorkerRestartSameVectors(t *testing.T) {
	candles := datatest.KrakenCandles(t, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, 6400)[5600:]
	calc, err := features.NewCalculator(features.DefaultSpec())
	if err != nil {
		t.Fatal(err)
	}
	series := features.NewSeries(calc)
	var want []streams.FeatureVector
	wantBefore := 0
	for i, c := range candles {
		if v, o := series.Add(c, uint64(i+1)); o == features.Computed {
			want = append(want, v)
		}
		if i == 399 {
			wantBefore = len(want)
		}
	}

	s := natstest.Server(t)
	_, js := natstest.Connect(t, s)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	publishCandles(t, js, candles[:400])
	stop := startWorker(t, js, prometheus.NewRegistry())
	natstest.WaitAtLeast(t, 30*time.Second, "first half of the vectors", uint64(wantBefore), func() uint64 {
		return streamMsgs(t, js, streams.StreamFeatures)
	})
	stop()
	// A duplicate of the last candle and a candle older than the window,
	// stored without message ids as a replay past the dedup window would
	// be: the first is skipped, the second rejected, neither makes a vector.
	for _, c := range []streams.Candle{candles[399], candles[0]} {
		data, err := streams.Encode(&c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(t.Context(), c.Subject(), data); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	startWorker(t, js, reg)
	publishCandles(t, js, candles[400:])
	natstest.WaitAtLeast(t, 30*time.Second, "all vectors", uint64(len(want)), func() uint64 {
		return streamMsgs(t, js, streams.StreamFeatures)
	})
	for outcome, want := range map[string]float64{"duplicate": 1, "too_old": 1, "computed": float64(len(want) - wantBefore)} {
		if got := opstest.Value(t, reg, "cryptostream_features_candles_total", map[string]string{"outcome": outcome}); got != want {
			t.Errorf("candles %s: %v, want %v", outcome, got, want)
		}
	}
	got := readVectors(t, js)
	if len(got) != len(want) {
		t.Fatalf("%d vectors, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		// MARKET holds the two extra messages, so sequences after them
		// are shifted by two.
		wantSeq := w.CandleSeq
		if wantSeq > 400 {
			wantSeq += 2
		}
		if !g.Start.Equal(w.Start) || !slices.Equal(g.Values, w.Values) || g.CandleSeq != wantSeq {
			t.Fatalf("vector %d at %s (seq %d) differs from the uninterrupted run at %s (seq %d)", i, g.Start, g.CandleSeq, w.Start, wantSeq)
		}
		if _, ok := g.Trace.At(features.Stage); !ok {
			t.Fatalf("vector %d has no %s hop", i, features.Stage)
		}
	}
}
