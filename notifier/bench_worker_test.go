package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"cryptostream/datatest"
	"cryptostream/natstest"
	"cryptostream/notifier"
	"cryptostream/streams"
)

// BenchmarkWorker10kRules: with the worker running and every series warm,
// b.N closed candles for each of 100 symbols published to MARKET and timed
// until the worker's consumer has acked them all; 10,000 stored rules (100
// per symbol) against none (the runner's own cost), in the same run.
//
//	go test -run '^$' -bench Worker10k -benchtime 300x ./notifier
func BenchmarkWorker10kRules(b *testing.B) {
	for _, n := range []int{10_000, 0} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			_, js := natstest.Connect(b, natstest.Server(b))
			if err := streams.Ensure(b.Context(), js, streams.Declare(1)); err != nil {
				b.Fatal(err)
			}
			base := datatest.KrakenCandles(b, datatest.KrakenBTCUSD1m, "BTC/USD", streams.Interval1m, b.N+1)
			rulesKV, _ := js.KeyValue(b.Context(), streams.BucketAlertRules)
			assets, _ := js.KeyValue(b.Context(), streams.BucketAssets)
			var syms []string
			for i := range 100 {
				syms = append(syms, fmt.Sprintf("C%03d/USD", i))
			}
			if n > 0 {
				rs := notifier.BenchRules(syms, func(string) float64 { return base[0].Close })
				for _, r := range rs {
					r.V = streams.SchemaVersion
					raw, _ := json.Marshal(r)
					if _, err := js.PublishAsync("$KV."+streams.BucketAlertRules+"."+r.ID, raw); err != nil {
						b.Fatal(err)
					}
				}
				<-js.PublishAsyncComplete()
			}
			publish := func(cs []streams.Candle) uint64 {
				for _, c := range cs {
					for _, sym := range syms {
						c.Symbol = sym
						msg, err := streams.NewMsg(&c)
						if err != nil {
							b.Fatal(err)
						}
						if _, err := js.PublishMsgAsync(msg); err != nil {
							b.Fatal(err)
						}
					}
					<-js.PublishAsyncComplete()
				}
				st, err := js.Stream(b.Context(), streams.StreamMarket)
				if err != nil {
					b.Fatal(err)
				}
				info, err := st.Info(b.Context())
				if err != nil {
					b.Fatal(err)
				}
				return info.State.LastSeq
			}
			// The first candle of each series warms it (the worker's
			// start-up, not its steady state); then the timed ones.
			first := publish(base[:1])
			w, err := notifier.New(notifier.Config{}, notifier.Deps{JS: js, Rules: rulesKV, Assets: assets})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(b.Context())
			done := make(chan error, 1)
			go func() { done <- w.Run(ctx) }()
			bus := &bus{js: js}
			bus.waitHandled(b, streams.StreamMarket, streams.ConsumerNotifierMarket, first)
			b.ResetTimer()
			last := publish(base[1:])
			bus.waitHandled(b, streams.StreamMarket, streams.ConsumerNotifierMarket, last)
			elapsed := b.Elapsed()
			b.StopTimer()
			cancel()
			<-done
			b.ReportMetric(float64(100*b.N)/elapsed.Seconds(), "candles/s")
			if n > 0 {
				b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "evals/s")
			}
		})
	}
}
