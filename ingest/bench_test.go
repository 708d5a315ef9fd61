package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/ingest"
	"cryptostream/ingest/krakensim"
	"cryptostream/natstest"
	"cryptostream/streams"
)

// benchJS is an embedded JetStream with the topology, as the tests use.
func benchJS(b *testing.B) jetstream.JetStream {
	b.Helper()
	srv := natstest.Server(b)
	_, js := natstest.Connect(b, srv)
	if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
		b.Fatal(err)
	}
	return js
}

// sampleCandle is a realistic encoded candle: the reference publishes
// payloads of its size.
func sampleCandle(i int) streams.Candle {
	return streams.Candle{Schema: streams.Schema{V: 1}, Symbol: "BTC/USD", Interval: streams.Interval1m,
		Start: time.Unix(1677646800+int64(i)*60, 0).UTC(), Open: 23797.6, High: 23819.4, Low: 23797.6, Close: 23799.7,
		Volume: 10.42065301, Trades: 41, Quality: streams.QualityImported}
}

// BenchmarkRawJetStreamPublishAsync is the reference: plain PublishMsgAsync
// of candle-sized payloads with distinct message ids onto MARKET, at most
// 4096 pending, on the same embedded server configuration.
func BenchmarkRawJetStreamPublishAsync(b *testing.B) {
	js := benchJS(b)
	c := sampleCandle(0)
	payload, err := streams.Encode(&c)
	if err != nil {
		b.Fatal(err)
	}
	subj := streams.CandleSubject(streams.Interval1m, "BTC/USD")
	b.SetBytes(int64(len(payload)))
	b.ResetTimer()
	futs := make([]jetstream.PubAckFuture, 0, b.N)
	for i := 0; i < b.N; i++ {
		if len(futs) >= 4096 {
			<-futs[len(futs)-4096].Ok()
		}
		msg := nats.NewMsg(subj)
		msg.Data = payload
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("raw:%d", i))
		f, err := js.PublishMsgAsync(msg)
		if err != nil {
			b.Fatal(err)
		}
		futs = append(futs, f)
	}
	<-js.PublishAsyncComplete()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkImport imports the real 1-minute file (repeated, shifted, when
// b.N asks for more candles than it has) into MARKET.
func BenchmarkImport(b *testing.B) {
	js := benchJS(b)
	raw := embeddedCSV(b)
	read, err := ingest.ReadFile("bench.csv", bytes.NewReader(raw), "BTC/USD", streams.Interval1m, time.Now(), func(*ingest.BadRowError) {})
	if err != nil {
		b.Fatal(err)
	}
	file := read.Candles
	span := file[len(file)-1].Start.Sub(file[0].Start) + time.Minute
	var cs []streams.Candle
	for round := 0; len(cs) < b.N; round++ {
		for _, c := range file {
			c.Start = c.Start.Add(time.Duration(round) * span)
			cs = append(cs, c)
			if len(cs) == b.N {
				break
			}
		}
	}
	im := &ingest.Importer{Pub: js, Stored: ingest.StoredStarts(js)}
	b.ResetTimer()
	st, err := im.Import(b.Context(), ingest.Series{Candles: cs})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(st.Published)/b.Elapsed().Seconds(), "candles/s")
}

// lagSink records, for every live candle, the time from receipt of the
// frame that made it final to the ack of its storage.
type lagSink struct {
	ingest.Sink
	mu   sync.Mutex
	lags []time.Duration
}

func (s *lagSink) PublishCandle(ctx context.Context, c streams.Candle) error {
	err := s.Sink.PublishCandle(ctx, c)
	if at, ok := c.Trace.At("ingest"); ok && err == nil && c.Quality == streams.QualityLive {
		s.mu.Lock()
		s.lags = append(s.lags, time.Since(at))
		s.mu.Unlock()
	}
	return err
}

// BenchmarkIngest runs the ingester against krakensim and counts OHLC
// frames parsed, assembled and published (every frame is a tick on TICKS;
// every twelfth or so also closes a candle into MARKET). b.N is the number
// of frames. At full speed krakensim sends as fast as the ingester reads,
// which measures throughput, but then the frame-to-stored lag is mostly
// frames queueing; paced, at 3000x (about 600 frames a second), the lag is
// the ingester's own.
func BenchmarkIngest(b *testing.B) {
	b.Run("full-speed", func(b *testing.B) { benchIngest(b, 0) })
	b.Run("paced-3000x", func(b *testing.B) { benchIngest(b, 3000) })
}

func benchIngest(b *testing.B, speed float64) {
	js := benchJS(b)
	feed, err := krakensim.DemoFeed()
	if err != nil {
		b.Fatal(err)
	}
	sim, err := krakensim.New(krakensim.Config{Feeds: []krakensim.Feed{feed}, Speed: speed, MaxUpdatesPerCandle: 12, Heartbeat: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	h := &harness{js: js, sim: sim}
	kv, err := js.KeyValue(b.Context(), streams.BucketAssets)
	if err != nil {
		b.Fatal(err)
	}
	h.kv = kv
	hs := newSimServer(b, sim)
	if _, err := kv.Put(b.Context(), streams.AssetKey("BTC/USD"), []byte(`{"v":1,"symbol":"BTC/USD"}`)); err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	sink := &lagSink{Sink: &ingest.JetStreamSink{JS: js}}
	w, err := ingest.New(ingest.Config{WSURL: "ws" + hs[len("http"):] + "/v2", RESTURL: hs, RESTInterval: time.Millisecond},
		ingest.Deps{Sink: sink, Assets: &ingest.KVAssets{KV: kv}, Registry: reg})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { w.Run(ctx) })
	frames := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "cryptostream_ingest_frames_received_total" {
				for _, m := range mf.GetMetric() {
					for _, l := range m.GetLabel() {
						if l.GetValue() == "ohlc" {
							return m.GetCounter().GetValue()
						}
					}
				}
			}
		}
		return 0
	}
	// Connecting, subscribing and the first REST heal are not the
	// throughput: time from the first frame on.
	deadline := time.Now().Add(10 * time.Minute)
	for frames() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.ResetTimer()
	for frames() < float64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %v of %d frames in 10 minutes", frames(), b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
	sink.mu.Lock()
	lags := sink.lags
	sink.mu.Unlock()
	if len(lags) > 0 {
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-lag-µs")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-lag-µs")
		b.ReportMetric(float64(len(lags)), "live-candles")
	}
}
