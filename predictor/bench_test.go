package predictor_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/features"
	"cryptostream/features/featurestest"
	"cryptostream/natstest"
	"cryptostream/predictor"
	"cryptostream/streams"
	"cryptostream/trainer"
)

// benchModel is a champion over every default feature, so the benchmark
// pays for a full dot product.
func benchModel() streams.ModelRecord {
	names := features.DefaultSpec().Names()
	coef := make([]float64, len(names)+1)
	for i := range coef {
		coef[i] = 1e-4 * float64(i%5-2)
	}
	return streams.ModelRecord{ID: "bench", Symbol: symbol, Interval: streams.Interval1m, Horizon: 1,
		Features: names, Coefficients: coef, ResidualStd: 0.001}
}

// BenchmarkFeaturesPredict is the pure per-candle cost: window update,
// features, forecast, scoring. incremental is the live path (features.Series
// stepping its grid one candle at a time); batch is the reference it
// replaced, in the same run: the window of candles resampled and every
// statistic recomputed on each candle (featurestest.Batch).
func BenchmarkFeaturesPredict(b *testing.B) {
	type series interface {
		Add(streams.Candle, uint64) (streams.FeatureVector, features.Outcome)
	}
	for _, bb := range []struct {
		name string
		new  func(*features.Calculator) series
	}{
		{"batch", func(c *features.Calculator) series { return featurestest.NewBatch(c) }},
		{"incremental", func(c *features.Calculator) series { return features.NewSeries(c) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			candles := meanReverting(20000, 1)
			calc, err := features.NewCalculator(features.DefaultSpec())
			if err != nil {
				b.Fatal(err)
			}
			rec := benchModel()
			m, _ := trainer.FromRecord(rec)
			bound, err := m.Bind(calc.Names())
			if err != nil {
				b.Fatal(err)
			}
			series := bb.new(calc)
			scorer := predictor.NewScorer(time.Time{}, 0, nil)
			// Warm the window so every iteration computes a vector.
			for i := range 200 {
				series.Add(candles[i], uint64(i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			shift := time.Duration(0)
			for i := 0; i < b.N; i++ {
				j := 200 + i%(len(candles)-200)
				if j == 200 && i > 0 {
					// Wrap around: move the series forward in time so
					// candles keep arriving in order.
					shift += candles[len(candles)-1].Start.Sub(candles[0].Start) + time.Minute
				}
				c := candles[j]
				c.Start = c.Start.Add(shift)
				v, o := series.Add(c, uint64(i))
				if o != features.Computed {
					continue
				}
				scorer.Observe(v.Start, v.Close)
				scorer.Await(predictor.Forecast(rec, bound, v, 1.96))
			}
		})
	}
}

func embedded(b *testing.B) jetstream.JetStream {
	s := natstest.Server(b)
	_, js := natstest.Connect(b, s)
	if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
		b.Fatal(err)
	}
	return js
}

func loadCandles(b *testing.B, js jetstream.JetStream, candles []streams.Candle) {
	for _, c := range candles {
		msg, err := streams.NewMsg(&c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("async publish did not complete")
	}
}

func putChampion(b *testing.B, js jetstream.JetStream) {
	reg, err := js.KeyValue(b.Context(), streams.BucketModelRegistry)
	if err != nil {
		b.Fatal(err)
	}
	data, _ := json.Marshal(benchModel())
	if _, err := reg.Put(b.Context(), streams.ModelKey("bench"), data); err != nil {
		b.Fatal(err)
	}
	if _, err := reg.Put(b.Context(), streams.ChampionKey(streams.Interval1m, symbol), []byte("bench")); err != nil {
		b.Fatal(err)
	}
}

// startPipeline runs a features and a predictor worker until the benchmark
// ends.
func startPipeline(b *testing.B, js jetstream.JetStream) {
	ctx, cancel := context.WithCancel(b.Context())
	fw, err := features.New(features.Config{Spec: features.DefaultSpec()}, features.Deps{JS: js, Log: discard, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	pw, err := predictor.New(predictor.Config{}, predictor.Deps{JS: js, Log: discard, Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{}, 2)
	go func() { _ = fw.Run(ctx); done <- struct{}{} }()
	go func() { _ = pw.Run(ctx); done <- struct{}{} }()
	b.Cleanup(func() { cancel(); <-done; <-done })
}

func streamCount(b *testing.B, js jetstream.JetStream, name string) uint64 {
	s, err := js.Stream(b.Context(), name)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}

// rawConsume is the reference: n messages of size bytes already stored,
// read by a durable pull consumer with explicit acks, at the given
// MaxAckPending. It returns messages per second.
func rawConsume(b *testing.B, n, size, maxAckPending int) float64 {
	js := embedded(b)
	ctx := b.Context()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, size)
	for range n {
		if _, err := js.PublishAsync("raw.x", payload); err != nil {
			b.Fatal(err)
		}
	}
	<-js.PublishAsyncComplete()
	cons, err := js.CreateConsumer(ctx, "RAW", jetstream.ConsumerConfig{Durable: "raw", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: maxAckPending})
	if err != nil {
		b.Fatal(err)
	}
	got := make(chan struct{}, n)
	began := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack(); got <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	for range n {
		<-got
	}
	elapsed := time.Since(began)
	cc.Stop()
	return float64(n) / elapsed.Seconds()
}

// BenchmarkPipelineThroughput: candles already in MARKET, a champion in
// the registry, then features and predictor started; the figure is candles
// per second until the last prediction is stored, next to raw durable
// consumption of as many same-sized messages on the same server config,
// with the consumer's default MaxAckPending and with 1 as ours.
func BenchmarkPipelineThroughput(b *testing.B) {
	const n = 3000
	candles := meanReverting(n, 2)
	sample, _ := streams.Encode(&candles[0])
	var pipe, raw, raw1 float64
	for range b.N {
		raw += rawConsume(b, n, len(sample), 1024)
		raw1 += rawConsume(b, n, len(sample), 1)

		js := embedded(b)
		putChampion(b, js)
		loadCandles(b, js, candles)
		want := uint64(n - features.DefaultSpec().Need())
		began := time.Now()
		startPipeline(b, js)
		for streamCount(b, js, streams.StreamPredictions) < want {
			time.Sleep(5 * time.Millisecond)
		}
		pipe += float64(n) / time.Since(began).Seconds()
	}
	k := float64(b.N)
	b.ReportMetric(pipe/k, "candles/s")
	b.ReportMetric(raw/k, "raw_msgs/s")
	b.ReportMetric(raw1/k, "raw_ack1_msgs/s")
	b.ReportMetric(pipe/raw, "ratio_to_raw")
	b.ReportMetric(pipe/raw1, "ratio_to_raw_ack1")
}

// BenchmarkPublishToPrediction: one candle at a time, the time from before
// its publish to its prediction arriving on a subscription to PREDICTIONS'
// subjects.
func BenchmarkPublishToPrediction(b *testing.B) {
	const n = 1000
	candles := meanReverting(n+100, 4)
	var all []time.Duration
	for range b.N {
		s := natstest.Server(b)
		nc, js := natstest.Connect(b, s)
		if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
			b.Fatal(err)
		}
		putChampion(b, js)
		loadCandles(b, js, candles[:100])
		startPipeline(b, js)
		arrived := make(chan time.Time, 1)
		sub, err := nc.Subscribe(streams.PredictionSubject(streams.Interval1m, symbol), func(*nats.Msg) { arrived <- time.Now() })
		if err != nil {
			b.Fatal(err)
		}
		// The warm-up candles' predictions.
		for streamCount(b, js, streams.StreamPredictions) < uint64(100-features.DefaultSpec().Need()) {
			time.Sleep(5 * time.Millisecond)
		}
		for len(arrived) > 0 {
			<-arrived
		}
		time.Sleep(50 * time.Millisecond)
		for len(arrived) > 0 {
			<-arrived
		}
		for _, c := range candles[100:] {
			began := time.Now()
			if _, err := streams.Publish(b.Context(), js, &c); err != nil {
				b.Fatal(err)
			}
			select {
			case at := <-arrived:
				all = append(all, at.Sub(began))
			case <-time.After(30 * time.Second):
				b.Fatal("no prediction")
			}
		}
		_ = sub.Unsubscribe()
	}
	slices.Sort(all)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99_ms")
}
