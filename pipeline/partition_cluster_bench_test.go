package pipeline_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/datatest"
	"cryptostream/ingest"
	"cryptostream/natstest"
	"cryptostream/pipeline"
	"cryptostream/streams"
)

// clusterBenchCandles is the backlog of each series in the cluster
// benchmark, five days of minutes: long enough that the workers' start (a
// lease round a second, the predictor's partitions found once FEATURES
// has subjects) is a small part of it.
const clusterBenchCandles = 5 * 24 * 60

// clusterSeries is the first n candles of each of the four recorded
// series, Kraken's BTC/USD minutes and XBT/USD five minutes and Binance's
// BTC/USDT and ETH/USDT minutes: four symbols, so four partitions of each
// stage, and so work for up to four instances of each worker. The
// partition is the symbol, so three pairs would leave a fourth instance
// owning nothing.
func clusterSeries(b *testing.B, n int) [][]streams.Candle {
	b.Helper()
	files := []struct {
		name, symbol string
		iv           streams.Interval
	}{
		{datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m},
		{datatest.KrakenXBTUSD5m, "XBT/USD", streams.Interval5m},
		{"binance_BTCUSDT_1m_2025-05_08.csv", "BTC/USDT", streams.Interval1m},
		{"binance_ETHUSDT_1m_2025-05_08.csv", "ETH/USDT", streams.Interval1m},
	}
	var out [][]streams.Candle
	for _, f := range files {
		r, err := os.Open(datatest.Path(b, f.name))
		if err != nil {
			b.Fatal(err)
		}
		s, err := ingest.ReadFile(f.name, r, f.symbol, f.iv, time.Now(), func(e *ingest.BadRowError) { b.Errorf("%v", e) })
		r.Close()
		if err != nil {
			b.Fatal(err)
		}
		if len(s.Candles) < n {
			b.Fatalf("%s holds %d candles, %d wanted", f.name, len(s.Candles), n)
		}
		out = append(out, s.Candles[:n])
	}
	return out
}

// BenchmarkClusterChain is the backlog throughput of the partitioned chain
// (features then predictor) on three clustered servers with R3 streams:
// clusterBenchCandles of each of four series stored in MARKET, then 1, 2
// or 4 instances of each worker started, timed until PREDICTIONS holds a prediction of every
// vector. The reference, "raw", is the same two hops without the stages
// on a fresh cluster of its own: a durable pull consumer per hop, each
// input republished asynchronously with a msg-id and acked after its
// PubAck. The unfenced cases run the workers without the server-side
// fence, for its cost. Each case runs once per b.N (use -benchtime 1x);
// candles/s is the figure.
func BenchmarkClusterChain(b *testing.B) {
	for _, c := range []struct {
		name      string
		instances int
		unfenced  bool
	}{{"raw", 0, false}, {"instances=1", 1, false}, {"instances=1,unfenced", 1, true}, {"instances=2", 2, false}, {"instances=4", 4, false}} {
		b.Run(c.name, func(b *testing.B) {
			pipeline.SetServerFence(!c.unfenced)
			defer pipeline.SetServerFence(true)
			var elapsed time.Duration
			var candles int
			for range b.N {
				d, n := clusterChainOnce(b, c.instances)
				elapsed += d
				candles += n
			}
			b.ReportMetric(float64(candles)/elapsed.Seconds(), "candles/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// clusterChainOnce runs one case on a fresh cluster and returns how long
// the backlog took and how many candles it held.
func clusterChainOnce(b *testing.B, instances int) (time.Duration, int) {
	b.StopTimer()
	defer b.StartTimer()
	servers, urls := natstest.Cluster(b, 3)
	defer func() {
		for _, s := range servers {
			s.Shutdown()
		}
	}()
	_, js := natstest.ConnectURL(b, urls)
	ctx := b.Context()
	natstest.WaitFor(b, 2*time.Minute, "the topology on the cluster", func() bool {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return streams.Ensure(ectx, js, streams.Declare(3)) == nil
	})
	var total int
	series := clusterSeries(b, clusterBenchCandles)
	for _, d := range series {
		for _, c := range d {
			msg, err := streams.NewMsg(&c)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := js.PublishMsgAsync(msg); err != nil {
				b.Fatal(err)
			}
			if total++; total%500 == 0 {
				<-js.PublishAsyncComplete()
			}
		}
	}
	<-js.PublishAsyncComplete()
	if got := settledCount(b, js, streams.StreamMarket); got != uint64(total) {
		b.Fatalf("MARKET holds %d candles, %d published", got, total)
	}

	b.StartTimer()
	start := time.Now()
	if instances == 0 {
		rawHops(b, js, urls, total)
	} else {
		l := &ledger{}
		defer func() {
			// Each instance's share, to show what the fourth does.
			var parts []string
			for _, d := range series {
				tok := streams.CandleSubject(d[0].Interval, d[0].Symbol)
				tok = tok[strings.LastIndexByte(tok, '.')+1:]
				parts = append(parts, "features/"+tok, "predictor/"+tok)
			}
			var shares []string
			for i := 1; i <= instances; i++ {
				for _, stage := range []string{"features", "predictor"} {
					shares = append(shares, fmt.Sprintf("%s-%d:%d", stage, i, l.everOwned(fmt.Sprintf("%s-%d", stage, i), parts)))
				}
			}
			b.Logf("instances=%d: partitions owned %s", instances, strings.Join(shares, " "))
		}()
		for i := 1; i <= instances; i++ {
			for _, stage := range []string{"features", "predictor"} {
				w := startClusterWorker(b, urls, stage, fmt.Sprintf("%s-%d", stage, i), l)
				defer w.stop()
			}
		}
		// The vectors are the candles less each series' warm-up, and
		// the last comes after the last candle is handled: done once
		// PREDICTIONS holds as many as FEATURES and FEATURES has
		// stopped growing with MARKET all covered.
		natstest.WaitProgress(b, 2*time.Minute, "every prediction", func() (bool, string) {
			done := backlogDone(b, js, len(series))
			f, p := settledCount(b, js, streams.StreamFeatures), settledCount(b, js, streams.StreamPredictions)
			return done && f > 0 && p == f, fmt.Sprint(f, "/", p)
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	return elapsed, total
}

// backlogDone says every features partition consumer has nothing left
// to deliver or ack.
func backlogDone(b *testing.B, js jetstream.JetStream, partitions int) bool {
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, streams.StreamMarket)
	if err != nil {
		return false
	}
	lister := st.ListConsumers(ctx)
	k := 0
	for info := range lister.Info() {
		if len(info.Name) > len("features-") && info.Name[:len("features-")] == "features-" {
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false
			}
			k++
		}
	}
	return lister.Err() == nil && k == partitions
}

// rawHops moves total messages MARKET → RAW1 → RAW2, each hop a durable
// pull consumer (Consume, as the runner) whose inputs are republished
// asynchronously with a msg-id and acked as their PubAcks come in, up to
// streams.StageBatch in flight: the I/O of the chain without its stages.
func rawHops(b *testing.B, js jetstream.JetStream, urls string, total int) {
	ctx := b.Context()
	for _, name := range []string{"RAW1", "RAW2"} {
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Replicas: 3, Duplicates: time.Hour}); err != nil {
			b.Fatal(err)
		}
	}
	type sent struct {
		in  jetstream.Msg
		ack jetstream.PubAckFuture
	}
	hop := func(from, filter, to string) chan error {
		done := make(chan error, 1)
		_, hjs := natstest.ConnectURL(b, urls)
		c, err := hjs.CreateConsumer(ctx, from, jetstream.ConsumerConfig{Durable: "raw", FilterSubject: filter,
			AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: streams.StageBatch})
		if err != nil {
			b.Fatal(err)
		}
		inflight := make(chan sent, streams.StageBatch)
		cc, err := c.Consume(func(m jetstream.Msg) {
			out := nats.NewMsg(to + "." + m.Subject())
			out.Data = m.Data()
			md, _ := m.Metadata()
			out.Header.Set(jetstream.MsgIDHeader, fmt.Sprint(to, md.Sequence.Stream))
			f, err := hjs.PublishMsgAsync(out)
			if err != nil {
				_ = m.Nak()
				return
			}
			inflight <- sent{m, f}
		}, jetstream.PullMaxMessages(streams.StageBatch))
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			defer cc.Stop()
			for moved := 0; moved < total; {
				s := <-inflight
				select {
				case <-s.ack.Ok():
					_ = s.in.Ack()
					moved++
				case err := <-s.ack.Err():
					done <- err
					return
				}
			}
			done <- nil
		}()
		return done
	}
	one := hop(streams.StreamMarket, "market.candle.>", "RAW1")
	two := hop("RAW1", "RAW1.>", "RAW2")
	for _, d := range []chan error{one, two} {
		if err := <-d; err != nil {
			b.Fatal(err)
		}
	}
}
